package sinkhole

import (
	"net/netip"
)

// STUB: the signatures below are the contract; the bodies are placeholders
// to be replaced by the real matcher (issue 3).

// Verdict is the outcome of a policy check. The zero Verdict means "not
// listed". It is returned by value and never allocates.
type Verdict struct {
	Trigger Trigger
	Action  Action
	Allowed bool    // an allowlist rule matched: the query (or this name/address) is exempt
	Source  *Source // the list whose rule decided
	Name    []byte  // qname/cname triggers: the name that matched (aliases the caller's input)
	Addr    netip.Addr
	rules   *Rules
	idx     int32
}

// Hit reports whether a rule (block, log or allow) matched.
func (v *Verdict) Hit() bool { return v.Source != nil }

// Blocks reports whether the verdict changes the answer.
func (v *Verdict) Blocks() bool { return v.Source != nil && !v.Allowed && v.Action != ActionLog }

// Rule renders the rule that matched in its list's syntax, lower-case.
func (v *Verdict) Rule() string { return "" }

// Note is the matched rule's inline comment, if any.
func (v *Verdict) Note() string { return "" }

// Rules is one source's compiled, immutable rule set. Snapshots share it.
type Rules struct {
	src *Source
}

// Source is the list these rules came from.
func (r *Rules) Source() *Source { return r.src }

// Builder collects one source's rules; Build compiles them.
type Builder struct {
	src *Source
}

// NewBuilder starts a rule set for src. src.Allow makes it an allowlist.
func NewBuilder(src *Source) *Builder { return &Builder{src: src} }

// AddDomain adds a domain rule: name is lower-case presentation format
// without the final dot, already validated. It matches the name and all its
// subdomains. note is the inline comment (may be empty).
func (b *Builder) AddDomain(name string, syn Syntax, note string) {}

// AddPrefix adds an address (a full-length prefix) or CIDR rule.
func (b *Builder) AddPrefix(p netip.Prefix, note string) {}

// Build compiles the rules and fills src.Rules.
func (b *Builder) Build() *Rules { return &Rules{src: b.src} }

// Policy is an immutable snapshot of every source's rules.
type Policy struct {
	settings Settings
	rules    []*Rules
}

// NewPolicy builds a snapshot from compiled rule sets.
func NewPolicy(s Settings, rules []*Rules) *Policy { return &Policy{settings: s, rules: rules} }

// Settings are the parameters of synthesized answers.
func (p *Policy) Settings() Settings { return p.settings }

// Rules are the rule sets of this snapshot, in source-name order.
func (p *Policy) Rules() []*Rules { return p.rules }

// CheckQuery decides on a query before upstream is asked. qname is
// lower-case presentation format without the final dot.
func (p *Policy) CheckQuery(client netip.Addr, qname []byte) Verdict { return Verdict{} }

// CheckAnswer decides on an upstream answer.
func (p *Policy) CheckAnswer(client netip.Addr, a *Answer) Verdict { return Verdict{} }

// AppendReply appends the wire-format reply for a blocking verdict to dst
// and returns it. For ActionDrop it returns dst unchanged.
func (p *Policy) AppendReply(dst []byte, q *Query, v *Verdict) []byte { return dst }
