package sinkhole

// This file is the contract between sinkhole, zones (which compiles rules)
// and resolver (which asks for verdicts and writes replies). The types and
// signatures here are used across packages: change them together.

import (
	"net/netip"
	"time"
)

// Action is what a blocking rule does to a query.
type Action uint8

// Actions, in DESIGN.md's words.
const (
	ActionNone     Action = iota // no decision (the zero Verdict)
	ActionSinkhole               // A -> sinkhole IPv4, AAAA -> sinkhole IPv6, other types NODATA
	ActionNXDomain               // NXDOMAIN with SOA
	ActionNoData                 // NOERROR, no answer, SOA
	ActionRefuse                 // REFUSED
	ActionDrop                   // no reply at all
	ActionLog                    // real answer, hit still recorded
)

// Trigger says what part of the query or answer matched.
type Trigger uint8

// Triggers, in DESIGN.md's words.
const (
	TriggerNone   Trigger = iota
	TriggerQName          // the query name (or a parent of it)
	TriggerCNAME          // a CNAME/DNAME target in the answer
	TriggerIP             // an address in the answer (A, AAAA, SVCB/HTTPS hints)
	TriggerClient         // the client address (RPZ client-ip)
)

// Kind is the kind of a rule as counted by `sinkd check` and /api/v1/lists.
type Kind uint8

// Rule kinds as written in a list file.
const (
	KindDomain   Kind = iota // plain, hosts, ||name^
	KindWildcard             // *.name
	KindIP                   // a single address
	KindCIDR                 // a prefix
)

// Syntax is how a domain rule was written; rules are re-rendered in it.
type Syntax uint8

// Domain rule syntaxes.
const (
	SyntaxPlain            Syntax = iota // evil.example (also hosts-file lines)
	SyntaxWildcard                       // *.evil.example
	SyntaxAdblock                        // ||evil.example^
	SyntaxAdblockImportant               // ||evil.example^$important
)

// RuleCounts counts rules by kind, as written (exact duplicates removed).
// In an allowlist every rule counts as Allow only.
type RuleCounts struct {
	Domain   int `json:"domain"`
	Wildcard int `json:"wildcard"`
	IP       int `json:"ip"`
	CIDR     int `json:"cidr"`
	Allow    int `json:"allow"`
}

// Total is the number of rules of every kind.
func (c RuleCounts) Total() int { return c.Domain + c.Wildcard + c.IP + c.CIDR + c.Allow }

// Source describes one list (one file in zones.dir). Its Name (the path
// relative to zones.dir) is what hit records, EDE texts, metrics and
// /api/v1/lists call the list.
type Source struct {
	Name     string     // "malware.txt", "feeds/urlhaus.txt"
	Path     string     // path as opened
	SHA256   string     // hex SHA-256 of the file's bytes
	Format   string     // formats seen, joined by "+", e.g. "domain+hosts"
	Action   Action     // the file's action (directive or sinkhole.action)
	Category string     // from the directive, may be empty
	Allow    bool       // an allowlist: its rules exempt, never block
	Rules    RuleCounts // rules by kind
	Skipped  int        // lines skipped as invalid or unsupported
	Errors   []string   // first few "FILE:LINE: reason"
	LoadedAt time.Time
}

// Answer is what CheckAnswer looks at in an upstream answer: every CNAME and
// DNAME target, and every address (A, AAAA, SVCB/HTTPS ipv4hint/ipv6hint).
// Names are lower-case presentation format without the final dot;
// addresses are unmapped.
type Answer struct {
	Targets [][]byte
	Addrs   []netip.Addr
}

// Settings are the policy-wide parameters of synthesized answers.
type Settings struct {
	IPv4   netip.Addr // sinkhole.ipv4, default 0.0.0.0
	IPv6   netip.Addr // sinkhole.ipv6, default ::
	TTL    uint32     // sinkhole.ttl, default 60
	Action Action     // sinkhole.action: the default for files without a directive
}

// Query is what a synthesized reply needs to know of the query it answers.
type Query struct {
	ID       uint16
	RD, CD   bool
	Question []byte // the question section as received: name (client's letter case), type, class
	QType    uint16
	EDNS     bool // the query carried an OPT record: the reply carries one too, with EDE
	DO       bool
}

// Hit is one policy hit, handed to a Recorder off the hot path's critical
// section. The evidence log (a later issue) implements Recorder.
type Hit struct {
	Time     time.Time
	Client   netip.AddrPort
	Proto    string // "udp" or "tcp"
	QName    string // lower-case, no final dot
	QType    uint16
	Trigger  Trigger
	Match    string // the qname, the CNAME target, or the address that matched
	Rule     string // re-rendered in its list's syntax, lower-case
	Note     string // the rule's inline comment, if any
	List     *Source
	Action   Action
	Answer   []byte // wire-format reply given (nil for drop)
	Upstream []byte // wire-format upstream reply withheld (cname/ip triggers), else nil
	Rcode    int
}

// Recorder receives hits. RecordHit must not block: it is called on the
// query path.
type Recorder interface {
	RecordHit(h *Hit)
}
