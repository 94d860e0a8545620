package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sinkd/sinkd/sinkhole"
)

// Abuse: what a hostile upstream or a hostile client can do to sinkd, and
// what it must not achieve (issue 8). Refusing outsiders, the per-client
// budget, RFC 8482 for ANY, UDP truncation and the idle timeout have tests
// of their own in server_test.go; these add the attacks on top of them.

// wireName returns name in lower-case wire format, or nil if it is not a
// valid name.
func wireName(name string) []byte {
	var nb names
	return nb.wire(name)
}

// mustRRs parses records in zone-file syntax.
func mustRRs(t testing.TB, records ...string) []dns.RR {
	t.Helper()
	out := make([]dns.RR, 0, len(records))
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("%q: %v", r, err)
		}
		out = append(out, rr)
	}
	return out
}

// rrKeys renders records as "owner TYPE rdata", without TTL and class, in
// lower case and sorted, for comparing sections.
func rrKeys(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		f := strings.Fields(rr.String())
		out = append(out, strings.ToLower(f[0]+" "+strings.Join(f[3:], " ")))
	}
	slices.Sort(out)
	return out
}

// poisonedReply is an upstream reply with records for names nobody asked
// about next to (or instead of) the real answer.
type poisonedReply struct {
	rcode               int
	answer, ns, extra   []string
	wantAnswer, wantNs  []string // what a client may see: the scrubbed reply
	wantExtra           []string
	wantScrubbed        int
	wantBlockedByPolicy bool // the policy lists 6.6.6.6: only a served record may trigger it
}

func TestUpstreamRepliesAreScrubbedOfOutOfBailiwickRecords(t *testing.T) {
	t.Parallel()
	const (
		evilA    = "evil.example. 300 IN A 192.0.2.66"
		forgedA  = "bank.example. 300 IN A 6.6.6.6"
		forgedNS = "bank.example. 300 IN NS ns.attacker.example."
		evilNS   = "evil.example. 300 IN NS ns1.evil.example."
		evilGlue = "ns1.evil.example. 300 IN A 192.0.2.53"
		evilSOA  = "evil.example. 300 IN SOA ns1.evil.example. hostmaster.evil.example. 1 3600 600 86400 300"
	)
	replies := map[string]poisonedReply{
		"evil.example.": { // an answer RR, an NS and glue for an unrelated name
			answer: []string{evilA, forgedA}, ns: []string{evilNS, forgedNS}, extra: []string{evilGlue, forgedA},
			wantAnswer: []string{evilA}, wantNs: []string{evilNS}, wantExtra: []string{evilGlue},
			wantScrubbed: 3,
		},
		"www.shop.example.": { // a CNAME chain; a CNAME off the chain; data for a name past it
			answer: []string{
				"www.shop.example. 300 IN CNAME cdn.shop.example.",
				"cdn.shop.example. 300 IN CNAME edge.cdn.example.",
				"edge.cdn.example. 300 IN A 192.0.2.10",
				"login.bank.example. 300 IN CNAME evil.example.",
				forgedA,
			},
			extra: []string{"edge.cdn.example. 300 IN AAAA 2001:db8::10", forgedA},
			wantAnswer: []string{
				"www.shop.example. 300 IN CNAME cdn.shop.example.",
				"cdn.shop.example. 300 IN CNAME edge.cdn.example.",
				"edge.cdn.example. 300 IN A 192.0.2.10",
			},
			wantExtra:    []string{"edge.cdn.example. 300 IN AAAA 2001:db8::10"},
			wantScrubbed: 3,
		},
		"x.old.example.": { // DNAME: the owner is an ancestor, the chain goes on at the synthesized name
			answer: []string{
				"old.example. 300 IN DNAME new.example.",
				"x.old.example. 300 IN CNAME x.new.example.",
				"x.new.example. 300 IN A 192.0.2.20",
				"y.old.example. 300 IN A 6.6.6.6",
			},
			wantAnswer: []string{
				"old.example. 300 IN DNAME new.example.",
				"x.old.example. 300 IN CNAME x.new.example.",
				"x.new.example. 300 IN A 192.0.2.20",
			},
			wantScrubbed: 1,
		},
		"nx.evil.example.": { // NXDOMAIN: the zone's SOA and glue stay, a foreign address goes
			rcode: dns.RcodeNameError,
			ns:    []string{evilSOA, forgedNS},
			extra: []string{evilGlue, forgedA},
			// The SOA's TTL becomes min(TTL, MINIMUM) (RFC 2308).
			wantNs: []string{evilSOA}, wantExtra: []string{evilGlue},
			wantScrubbed: 2,
		},
		"up.evil.example.": { // an upward referral to the root with root glue
			ns:     []string{". 300 IN NS a.root-servers.net."},
			extra:  []string{"a.root-servers.net. 300 IN A 198.41.0.4"},
			wantNs: []string{". 300 IN NS a.root-servers.net."},
			// no glue: the root is no zone of up.evil.example's answer
			wantScrubbed: 1,
		},
		"decoy.example.": { // only a forged answer: what is served must decide the policy
			answer:       []string{forgedA},
			wantScrubbed: 1,
		},
		"bad.example.": { // a listed address in the real answer still blocks
			answer:              []string{"bad.example. 300 IN A 6.6.6.6"},
			wantAnswer:          []string{"bad.example. 300 IN A 6.6.6.6"},
			wantBlockedByPolicy: true,
		},
		"bank.example.": {
			answer:     []string{"bank.example. 300 IN A 192.0.2.80"},
			wantAnswer: []string{"bank.example. 300 IN A 192.0.2.80"},
		},
	}
	var mu sync.Mutex
	asked := map[string]int{}
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		name := strings.ToLower(r.Question[0].Name)
		mu.Lock()
		asked[name]++
		mu.Unlock()
		p := replies[name]
		m := new(dns.Msg)
		m.SetRcode(r, p.rcode)
		m.Answer, m.Ns, m.Extra = mustRRs(t, p.answer...), mustRRs(t, p.ns...), mustRRs(t, p.extra...)
		_ = w.WriteMsg(m)
	})
	rec := &hitLog{}
	ts := startServerWith(t, clientUpstream{up}, rec, nil)
	ts.SetPolicy(testPolicy(t, testList{name: "ips.txt", action: sinkhole.ActionSinkhole, rules: []string{"6.6.6.6/32"}}))

	wantTotal := 0
	for _, name := range []string{"evil.example.", "www.shop.example.", "x.old.example.", "nx.evil.example.", "up.evil.example.", "decoy.example.", "bad.example."} {
		p := replies[name]
		wantTotal += p.wantScrubbed
		t.Run(name, func(t *testing.T) {
			// The first answer (from upstream) and the second (from the
			// cache) must both be the scrubbed reply.
			for _, from := range []string{"upstream", "cache"} {
				r := ts.ask(t, "udp", newQuery(name, dns.TypeA))
				hits := len(rec.all())
				if p.wantBlockedByPolicy {
					if hits == 0 || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.254" {
						t.Errorf("from %s: %v, hits %d: want the sinkhole answer", from, r.Answer, hits)
					}
					continue
				}
				if got, want := rrKeys(r.Answer), rrKeys(mustRRs(t, p.wantAnswer...)); !slices.Equal(got, want) {
					t.Errorf("from %s: answer\n%q\nwant\n%q", from, got, want)
				}
				if got, want := rrKeys(r.Ns), rrKeys(mustRRs(t, p.wantNs...)); !slices.Equal(got, want) {
					t.Errorf("from %s: authority\n%q\nwant\n%q", from, got, want)
				}
				if got, want := rrKeys(r.Extra), rrKeys(mustRRs(t, p.wantExtra...)); !slices.Equal(got, want) {
					t.Errorf("from %s: additional\n%q\nwant\n%q", from, got, want)
				}
				if r.Rcode != p.rcode {
					t.Errorf("from %s: rcode %s, want %s", from, dns.RcodeToString[r.Rcode], dns.RcodeToString[p.rcode])
				}
			}
		})
	}
	// A forged record does not even trigger the policy: nothing but the
	// real answer of bad.example. was checked.
	for _, h := range rec.all() {
		if h.QName != "bad.example" {
			t.Errorf("hit for %s (%s): a record that was not served was checked", h.QName, h.Match)
		}
	}
	if got := testutil.ToFloat64(ts.m.scrubbed); got != float64(wantTotal) {
		t.Errorf("sinkd_upstream_scrubbed_records_total = %v, want %d", got, wantTotal)
	}
	// bank.example. was never asked before: its answer comes from upstream,
	// not from the forged records that came with other names.
	r := ts.ask(t, "udp", newQuery("bank.example.", dns.TypeA))
	if got := rrKeys(r.Answer); !slices.Equal(got, []string{"bank.example. a 192.0.2.80"}) {
		t.Errorf("bank.example. = %q, want the upstream's own answer", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked["bank.example."] != 1 {
		t.Errorf("upstream asked %d times for bank.example., want 1", asked["bank.example."])
	}
}

// Unit cases of the scrubber that need no server: names that only look
// related, escaped dots, loops, DNSSEC records.
func TestScrub(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		qname     string
		answer    []string
		ns        []string
		extra     []string
		wantKept  []string // every record kept, any section
		wantDrops int
	}{
		{
			name:      "a sibling whose name ends like the query name",
			qname:     "evil.example.",
			answer:    []string{"evil.example. 60 IN A 192.0.2.1", "notevil.example. 60 IN A 192.0.2.2"},
			wantKept:  []string{"evil.example. 60 IN A 192.0.2.1"},
			wantDrops: 1,
		},
		{
			name:      "an escaped dot is no label boundary",
			qname:     "evil.example.",
			extra:     []string{`a\.evil.example. 60 IN A 192.0.2.3`, "a.evil.example. 60 IN A 192.0.2.4"},
			wantKept:  []string{"a.evil.example. 60 IN A 192.0.2.4"},
			wantDrops: 1,
		},
		{
			name:  "letter case does not matter",
			qname: "evil.example.",
			answer: []string{
				"EVIL.Example. 60 IN CNAME Target.Example.",
				"target.EXAMPLE. 60 IN A 192.0.2.5",
			},
			wantKept: []string{"evil.example. 60 IN CNAME target.example.", "target.example. 60 IN A 192.0.2.5"},
		},
		{
			name:  "a CNAME loop ends",
			qname: "a.example.",
			answer: []string{
				"a.example. 60 IN CNAME b.example.",
				"b.example. 60 IN CNAME a.example.",
			},
			wantKept: []string{"a.example. 60 IN CNAME b.example.", "b.example. 60 IN CNAME a.example."},
		},
		{
			name:  "a second CNAME at a chain name is dropped",
			qname: "a.example.",
			answer: []string{
				"a.example. 60 IN CNAME b.example.",
				"a.example. 60 IN CNAME bank.example.",
				"b.example. 60 IN A 192.0.2.6",
				"bank.example. 60 IN A 6.6.6.6",
			},
			wantKept:  []string{"a.example. 60 IN CNAME b.example.", "b.example. 60 IN A 192.0.2.6"},
			wantDrops: 2,
		},
		{
			name:  "signatures and proofs of the zone stay, of another zone go",
			qname: "nope.signed.example.",
			ns: []string{
				"signed.example. 60 IN SOA ns.signed.example. h.signed.example. 1 3600 600 86400 60",
				"signed.example. 60 IN RRSIG SOA 13 2 60 20270101000000 20260101000000 1 signed.example. AAAA",
				"a.signed.example. 60 IN NSEC z.signed.example. A RRSIG NSEC",
				"a.signed.example. 60 IN RRSIG NSEC 13 3 60 20270101000000 20260101000000 1 signed.example. AAAA",
				"a.bank.example. 60 IN NSEC z.bank.example. A RRSIG NSEC",
				"bank.example. 60 IN DS 1 13 2 AAAA",
			},
			wantKept: []string{
				"signed.example. 60 IN SOA ns.signed.example. h.signed.example. 1 3600 600 86400 60",
				"signed.example. 60 IN RRSIG SOA 13 2 60 20270101000000 20260101000000 1 signed.example. AAAA",
				"a.signed.example. 60 IN NSEC z.signed.example. A RRSIG NSEC",
				"a.signed.example. 60 IN RRSIG NSEC 13 3 60 20270101000000 20260101000000 1 signed.example. AAAA",
			},
			wantDrops: 2,
		},
		{
			name:  "a wildcard answer's NSEC stays by its signer",
			qname: "x.wild.example.",
			answer: []string{
				"x.wild.example. 60 IN A 192.0.2.7",
				"x.wild.example. 60 IN RRSIG A 13 2 60 20270101000000 20260101000000 1 wild.example. AAAA",
			},
			ns: []string{"a.wild.example. 60 IN NSEC z.wild.example. A RRSIG NSEC"},
			wantKept: []string{
				"x.wild.example. 60 IN A 192.0.2.7",
				"x.wild.example. 60 IN RRSIG A 13 2 60 20270101000000 20260101000000 1 wild.example. AAAA",
				"a.wild.example. 60 IN NSEC z.wild.example. A RRSIG NSEC",
			},
		},
		{
			name:      "authority data other than SOA, NS, DS and proofs goes",
			qname:     "evil.example.",
			ns:        []string{"evil.example. 60 IN A 192.0.2.8", "example. 60 IN NS ns.example."},
			extra:     []string{"ns.example. 60 IN A 192.0.2.9", "www.example. 60 IN A 192.0.2.10", "bank.example2. 60 IN A 6.6.6.6"},
			wantKept:  []string{"example. 60 IN NS ns.example.", "ns.example. 60 IN A 192.0.2.9", "www.example. 60 IN A 192.0.2.10"},
			wantDrops: 2,
		},
		{
			name:      "other classes go",
			qname:     "evil.example.",
			answer:    []string{"evil.example. 60 IN A 192.0.2.11", "evil.example. 60 CH A 192.0.2.12"},
			wantKept:  []string{"evil.example. 60 IN A 192.0.2.11"},
			wantDrops: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := new(dns.Msg)
			m.Answer, m.Ns, m.Extra = mustRRs(t, tt.answer...), mustRRs(t, tt.ns...), mustRRs(t, tt.extra...)
			drops := scrub(m, wireName(tt.qname))
			kept := append(append(append([]dns.RR(nil), m.Answer...), m.Ns...), m.Extra...)
			if got, want := rrKeys(kept), rrKeys(mustRRs(t, tt.wantKept...)); !slices.Equal(got, want) {
				t.Errorf("kept\n%q\nwant\n%q", got, want)
			}
			if drops != tt.wantDrops {
				t.Errorf("dropped %d, want %d", drops, tt.wantDrops)
			}
		})
	}
}

// txtReply answers every TXT query with n TXT records of one string of
// size bytes each, and the last of last bytes if last > 0.
func txtReply(n, size, last int) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeTXT {
			for i := range n {
				s := size
				if i == n-1 && last > 0 {
					s = last
				}
				m.Answer = append(m.Answer, &dns.TXT{
					Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
					Txt: []string{strings.Repeat(string(rune('a'+i%26)), s)},
				})
			}
		}
		_ = w.WriteMsg(m)
	}
}

// amplificationCases are the queries whose reply size an attacker would
// pick: RFC 8482's ANY answer, a TXT answer of 30 x 255 bytes (larger than
// any UDP reply: truncated), a TXT answer just under the cap (the worst
// case: the largest reply a query can get over UDP), a blocked name.
var amplificationCases = []struct {
	name   string
	qname  string
	qtype  uint16
	edns   uint16 // 0: no EDNS
	wantTC bool
}{
	{name: "ANY", qname: "example.com.", qtype: dns.TypeANY},
	{name: "ANY EDNS 1232", qname: "example.com.", qtype: dns.TypeANY, edns: 1232},
	{name: "TXT 30x255 no EDNS", qname: "big.example.", qtype: dns.TypeTXT, wantTC: true},
	{name: "TXT 30x255 EDNS 1232", qname: "big.example.", qtype: dns.TypeTXT, edns: 1232, wantTC: true},
	{name: "TXT 30x255 EDNS 4096", qname: "big.example.", qtype: dns.TypeTXT, edns: 4096, wantTC: true},
	{name: "TXT 1232 bytes no EDNS", qname: "fit.example.", qtype: dns.TypeTXT, wantTC: true},
	{name: "TXT 1232 bytes EDNS 1232", qname: "fit.example.", qtype: dns.TypeTXT, edns: 1232},
	{name: "TXT 1232 bytes EDNS 4096", qname: "fit.example.", qtype: dns.TypeTXT, edns: 4096},
	{name: "TXT 1232 bytes EDNS 800", qname: "fit.example.", qtype: dns.TypeTXT, edns: 800, wantTC: true},
	{name: "TXT 512 bytes no EDNS", qname: "fit512.example.", qtype: dns.TypeTXT},
	{name: "blocked A", qname: "blocked.example.", qtype: dns.TypeA},
	{name: "blocked A EDNS 1232 (EDE)", qname: "blocked.example.", qtype: dns.TypeA, edns: 1232},
}

// amplificationUpstream answers big.example. with 30 x 255-byte TXT
// strings, fit.example. with a TXT answer whose reply is exactly 1232
// bytes with an OPT, fit512.example. with one of 512 bytes without.
func amplificationUpstream() dns.HandlerFunc {
	big, fit, fit512 := txtReply(30, 255, 0), txtReply(5, 255, 107), txtReply(2, 227, 0)
	return func(w dns.ResponseWriter, r *dns.Msg) {
		switch strings.ToLower(r.Question[0].Name) {
		case "big.example.":
			big(w, r)
		case "fit.example.":
			fit(w, r)
		default:
			fit512(w, r)
		}
	}
}

func blockedPolicy(t testing.TB) *sinkhole.Policy {
	b := sinkhole.NewBuilder(&sinkhole.Source{Name: "malware.txt", SHA256: "ab", Action: sinkhole.ActionSinkhole})
	b.AddDomain("blocked.example", sinkhole.SyntaxPlain, "")
	return sinkhole.NewPolicy(sinkhole.Settings{IPv4: netip.IPv4Unspecified(), IPv6: netip.IPv6Unspecified(), TTL: 60}, []*sinkhole.Rules{b.Build()})
}

func packQuery(t testing.TB, name string, qtype, edns uint16) []byte {
	t.Helper()
	m := newQuery(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exchangeUDP sends the query q over UDP and returns the reply's bytes.
func exchangeUDP(t *testing.T, addr string, q []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("reply: %v", err)
	}
	return buf[:n]
}

// TestUDPAmplificationIsCapped measures bytes out / bytes in over real
// sockets: no reply exceeds min(client buffer, 1232) (512 without EDNS),
// ANY's stays within twice its query, REFUSED within its query.
// `go test -run TestUDPAmplification -v ./resolver/` logs the factors.
func TestUDPAmplificationIsCapped(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, amplificationUpstream())
	ts := startServer(t, clientUpstream{up}, nil)
	ts.SetPolicy(blockedPolicy(t))
	for _, tt := range amplificationCases {
		t.Run(tt.name, func(t *testing.T) {
			q := packQuery(t, tt.qname, tt.qtype, tt.edns)
			b := exchangeUDP(t, ts.addr, q)
			r := new(dns.Msg)
			if err := r.Unpack(b); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			limit := 512
			if tt.edns > 0 {
				limit = min(max(int(tt.edns), 512), 1232)
			}
			if len(b) > limit {
				t.Errorf("%d-byte reply, over the %d-byte limit", len(b), limit)
			}
			if r.Truncated != tt.wantTC {
				t.Errorf("TC = %v, want %v (%d bytes, %d answers)", r.Truncated, tt.wantTC, len(b), len(r.Answer))
			}
			if tt.qtype == dns.TypeANY && len(b) > 2*len(q) {
				t.Errorf("ANY: %d bytes out for %d in, want at most 2x", len(b), len(q))
			}
			if !r.Truncated && len(r.Answer) == 0 {
				t.Error("no answer")
			}
			t.Logf("%-28s %4d bytes in, %4d out: x%.1f", tt.name, len(q), len(b), float64(len(b))/float64(len(q)))
		})
	}
	t.Run("REFUSED", func(t *testing.T) {
		ts := startServer(t, clientUpstream{up}, func(c *Config) { c.Access.Allow = MustPrefixes("10.0.0.0/8") })
		for _, edns := range []uint16{0, 1232} {
			q := packQuery(t, "fit.example.", dns.TypeTXT, edns)
			b := exchangeUDP(t, ts.addr, q)
			if len(b) > len(q) {
				t.Errorf("EDNS %d: REFUSED is %d bytes for a %d-byte query", edns, len(b), len(q))
			}
			t.Logf("REFUSED EDNS %-4d %4d bytes in, %4d out: x%.1f", edns, len(q), len(b), float64(len(b))/float64(len(q)))
		}
	})
}

// BenchmarkAmplification reports each reply's bytes out / bytes in
// (out/in) through the wire-level pipeline, cache warm:
//
//	go test -run '^$' -bench Amplification -benchtime 2000x ./resolver/
func BenchmarkAmplification(b *testing.B) {
	up := amplificationUpstream()
	s, err := New(DefaultConfig(), clientUpstream{}, &countRecorder{}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	s.SetPolicy(blockedPolicy(b))
	for _, name := range []string{"big.example.", "fit.example.", "fit512.example."} {
		q := newQuery(name, dns.TypeTXT)
		w := &captureWriter{}
		up(w, q)
		var r request
		wire := packQuery(b, name, dns.TypeTXT, 0)
		if r.q.parseHeader(wire) != nil || r.q.parseQuestion(wire) != nil {
			b.Fatal("query does not parse")
		}
		s.cache.add(s.cache.newEntry(appendKey(nil, &r.q), w.msg, s.now()))
	}
	client := netip.MustParseAddrPort("127.0.0.1:40000")
	for _, tt := range amplificationCases {
		b.Run(strings.ReplaceAll(tt.name, " ", "_"), func(b *testing.B) {
			q := packQuery(b, tt.qname, tt.qtype, tt.edns)
			out := make([]byte, 0, 65535)
			var r request
			var n int
			b.ReportAllocs()
			for b.Loop() {
				reply, st := s.handle(context.Background(), out[:0], q, client, protoUDP, false, false, &r)
				if st != statusReply {
					b.Fatal("no reply from the cache")
				}
				n = len(reply)
			}
			b.ReportMetric(float64(n)/float64(len(q)), "out/in")
			b.ReportMetric(float64(n), "bytes/reply")
		})
	}
}

// captureWriter is a dns.ResponseWriter that keeps the message written.
type captureWriter struct {
	dns.ResponseWriter
	msg *dns.Msg
}

func (w *captureWriter) WriteMsg(m *dns.Msg) error { w.msg = m; return nil }

// dialFlood opens n TCP connections that send nothing, closed at cleanup.
func dialFlood(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		conns = append(conns, c)
	}
	return conns
}

// closedByServer reports whether the server closed c (EOF or reset) within
// 5 s; data is a failure too.
func closedByServer(c net.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	switch {
	case n > 0:
		return errors.New("got data, want the connection closed")
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return nil
	default:
		return fmt.Errorf("read: %v, want EOF", err)
	}
}

// askTCP asks over a new TCP connection, without failing the test.
func (ts *testServer) askTCP(name string) error {
	c := &dns.Client{Net: "tcp", Timeout: time.Second}
	r, _, err := c.Exchange(newQuery(name, dns.TypeA), ts.addr)
	if err == nil && len(r.Answer) != 1 {
		err = fmt.Errorf("answer %v", r.Answer)
	}
	return err
}

func TestTCPConnectionFloodIsCapped(t *testing.T) {
	t.Parallel()
	const maxConns, extra = 20, 5
	var n atomic.Int32
	up := clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}
	tests := []struct {
		name    string
		idle    time.Duration
		release func(t *testing.T, flood []net.Conn) // how the flood's slots come free
	}{
		{name: "flood closes its connections", idle: 10 * time.Second, release: func(t *testing.T, flood []net.Conn) {
			for _, c := range flood {
				_ = c.Close()
			}
		}},
		{name: "flood connections hit tcp_idle_timeout", idle: 3 * time.Second, release: func(t *testing.T, flood []net.Conn) {
			for i, c := range flood {
				if err := closedByServer(c); err != nil {
					t.Errorf("flood connection %d: %v", i, err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, up, func(c *Config) {
				c.TCPMaxConns = maxConns
				c.TCPIdleTimeout = tt.idle
			})
			flood := dialFlood(t, ts.addr, maxConns)
			waitFor(t, "the flood accepted", func() bool { return testutil.ToFloat64(ts.m.tcpConns) == maxConns })

			if tt.idle > 5*time.Second { // long enough to tell a refusal from an idle close
				began := time.Now()
				for i, c := range dialFlood(t, ts.addr, extra) {
					if err := closedByServer(c); err != nil {
						t.Errorf("connection %d over the cap: %v", maxConns+i, err)
					}
				}
				t.Logf("%d connections over the cap of %d dialled and closed by the server in %v", extra, maxConns, time.Since(began))
				if got := testutil.ToFloat64(ts.m.tcpReject); got != extra {
					t.Errorf("sinkd_tcp_rejected_connections_total = %v, want %d", got, extra)
				}
				if got := testutil.ToFloat64(ts.m.tcpConns); got != maxConns {
					t.Errorf("sinkd_tcp_connections = %v after the refusals, want %d (the flood still open)", got, maxConns)
				}
				if err := ts.askTCP("during.example."); err == nil {
					t.Error("a TCP query was answered over the connection cap")
				}
			}
			// UDP does not share the cap.
			if r := ts.ask(t, "udp", newQuery("udp.example.", dns.TypeA)); len(r.Answer) != 1 {
				t.Errorf("UDP during the flood: %v", r.Answer)
			}

			began := time.Now()
			tt.release(t, flood)
			waitFor(t, "a TCP client served after the flood", func() bool { return ts.askTCP("after.example.") == nil })
			t.Logf("a new TCP client served %v after the flood's release began", time.Since(began))
		})
	}
}

func TestTCPSlowClientIsCut(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, func(c *Config) {
		c.TCPIdleTimeout = 200 * time.Millisecond
	})
	q := packQuery(t, "slow.example.", dns.TypeA, 0)
	msg := append([]byte{byte(len(q) >> 8), byte(len(q))}, q...)
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// One byte every 50 ms, each well within the idle timeout: the whole
	// query takes 1.6 s, eight idle timeouts. The read deadline of a query
	// is set once, so the server cuts the client after 200 ms.
	var sent atomic.Int32
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for _, b := range msg {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			sent.Add(1)
		}
	}()
	began := time.Now()
	err = closedByServer(c)
	t.Logf("cut after %v, %d of %d bytes sent", time.Since(began), sent.Load(), len(msg))
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if got := int(sent.Load()); got >= len(msg) {
		t.Errorf("the server waited for all %d bytes of a trickled query", got)
	}
}

// Not parallel: it moves some 10 MB through loopback, which would eat
// into the timing margins of the fault tests running beside it.
func TestTCPClientThatNeverReadsIsClosed(t *testing.T) {
	// Each answer is one TXT record of ~51 KB: a hundred fill the socket
	// buffers of a client that never reads.
	big := make([]string, 200)
	for i := range big {
		big[i] = strings.Repeat("x", 255)
	}
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: big}}
		_ = w.WriteMsg(m)
	})
	ts := startServer(t, clientUpstream{up}, func(c *Config) {
		c.TCPIdleTimeout = 300 * time.Millisecond
		c.QueryTimeout = 2 * time.Second
	})
	// Cached before: the other clients' queries below take no slow-path slot.
	ts.ask(t, "udp", newQuery("other.example.", dns.TypeTXT))
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var stream []byte // 400 pipelined queries, all misses: the slow path
	for i := range 400 {
		q := packQuery(t, fmt.Sprintf("q%d.big.example.", i), dns.TypeTXT, 0)
		stream = append(append(stream, byte(len(q)>>8), byte(len(q))), q...)
	}
	writeDone := make(chan struct{})
	go func() {
		defer close(writeDone)
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write(stream)
	}()
	waitFor(t, "the pipelined queries to reach the server", func() bool {
		return testutil.ToFloat64(ts.m.misses) > 0
	})

	// Others are served meanwhile, over UDP and over TCP.
	var maxSlow int64
	for range 3 {
		if r := ts.ask(t, "tcp", newQuery("other.example.", dns.TypeTXT)); len(r.Answer) == 0 {
			t.Error("another TCP client: no answer")
		}
		if r := ts.ask(t, "udp", newQuery("other.example.", dns.TypeTXT)); !r.Truncated {
			t.Error("a UDP client: no truncated answer")
		}
		maxSlow = max(maxSlow, ts.slow.Load())
	}
	// The server gives up on the client after one write waited out the
	// idle timeout, and drops the replies queued behind it at once.
	began := time.Now()
	waitFor(t, "the non-reading connection closed", func() bool {
		maxSlow = max(maxSlow, ts.slow.Load())
		return testutil.ToFloat64(ts.m.tcpConns) == 0
	})
	t.Logf("non-reading client closed %v after others were served; at most %d of its queries waiting at once, %v upstream misses",
		time.Since(began), maxSlow, testutil.ToFloat64(ts.m.misses))
	if maxSlow > tcpPipeline {
		t.Errorf("%d queries of one connection waiting at once, want at most %d", maxSlow, tcpPipeline)
	}
	<-writeDone
}

func TestRateLimitHoldsUnderFlood(t *testing.T) {
	t.Parallel()
	const limit, flood = 20, 200
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, func(c *Config) {
		c.Access.RateLimit = limit
		c.Access.RateLimitExempt = nil
	})
	ts.ask(t, "udp", newQuery("flood.example.", dns.TypeA)) // cached: the flood costs no upstream query

	// The flood comes from 127.0.0.2, the other client from 127.0.0.1; the
	// fake clock stands still, so the whole flood falls in one second.
	srv := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ts.addr))
	fc, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}, srv)
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	defer fc.Close()
	q := packQuery(t, "flood.example.", dns.TypeA, 0)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for range flood {
			if _, err := fc.Write(q); err != nil {
				return
			}
		}
	}()
	// Another client is answered while the flood's is over its budget.
	waitFor(t, "the rate limit to drop the flood", func() bool { return testutil.ToFloat64(ts.m.limited) > 0 })
	for range 3 {
		if r := ts.ask(t, "udp", newQuery("flood.example.", dns.TypeA)); len(r.Answer) != 1 {
			t.Errorf("the other client during the flood: %v", r.Answer)
		}
	}
	<-sent
	waitFor(t, "the whole flood counted", func() bool { return testutil.ToFloat64(ts.m.limited) == flood-limit })
	answered := 0
	buf := make([]byte, 512)
	for {
		_ = fc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := fc.Read(buf); err != nil {
			break
		}
		answered++
	}
	if answered != limit {
		t.Errorf("flood: %d of %d queries answered, want %d", answered, flood, limit)
	}
}

// FuzzScrub feeds arbitrary upstream replies to newEntry, which scrubs
// them: it must never panic, and what it stores must unpack and be scrubbed
// already (a second scrub removes nothing).
func FuzzScrub(f *testing.F) {
	c, err := newCache(DefaultConfig().Cache)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, reply []byte) {
		m := new(dns.Msg)
		if m.Unpack(reply) != nil {
			return
		}
		name, qtype := "evil.example.", dns.TypeA
		if len(m.Question) > 0 {
			name, qtype = m.Question[0].Name, m.Question[0].Qtype
		}
		qname := wireName(name)
		if qname == nil {
			return
		}
		key := append(append(qname, byte(qtype>>8), byte(qtype), 0, dns.ClassINET), 0)
		e := c.newEntry(key, m, now)
		if e == nil {
			return
		}
		stored := new(dns.Msg)
		if err := stored.Unpack(e.msg); err != nil {
			t.Fatalf("stored entry does not unpack: %v", err)
		}
		before := stored.String()
		if n := scrub(stored, qname); n != 0 {
			t.Errorf("a second scrub removed %d records: the first was incomplete\n%s", n, before)
		}
	})
}

// BenchmarkNewEntry is the cost of turning an upstream reply into a cache
// entry (scrub, pack, check): once per cache miss.
//
//	go test -run '^$' -bench NewEntry -count 5 ./resolver/
func BenchmarkNewEntry(b *testing.B) {
	c, err := newCache(DefaultConfig().Cache)
	if err != nil {
		b.Fatal(err)
	}
	up := new(dns.Msg)
	up.SetQuestion("www.example.com.", dns.TypeA)
	up.Response = true
	up.Answer = mustRRs(b,
		"www.example.com. 300 IN CNAME www.example.com.cdn.example.net.",
		"www.example.com.cdn.example.net. 60 IN A 192.0.2.1",
		"www.example.com.cdn.example.net. 60 IN A 192.0.2.2")
	wire, err := up.Pack()
	if err != nil {
		b.Fatal(err)
	}
	key := append(wireName("www.example.com."), 0, typeA, 0, classIN, 0)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		m := new(dns.Msg)
		if err := m.Unpack(wire); err != nil { // as the upstream pool does
			b.Fatal(err)
		}
		if c.newEntry(key, m, now) == nil {
			b.Fatal("no entry")
		}
	}
}

// TestOverloadServFailSaysBusy: with every slot for queries waiting on
// upstream taken, a cache miss gets SERVFAIL at once, with EDE 0 "server
// busy" when it has EDNS, over UDP and TCP; cached names are still answered.
func TestOverloadServFailSaysBusy(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	rec := &hitLog{}
	ts := startServerWith(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 300))}, rec, nil)
	ts.SetPolicy(testPolicy(t, testList{name: "watch.txt", action: sinkhole.ActionLog, rules: []string{"watched.example"}}))
	ts.ask(t, "udp", newQuery("cached.example.", dns.TypeA))
	// The miss's slot is released after its reply is sent.
	waitFor(t, "the first miss's slot released", func() bool { return ts.slow.Load() == 0 })
	ts.slow.Store(maxSlow)
	defer ts.slow.Store(0)
	for _, proto := range []string{"udp", "tcp"} {
		q := newQuery("miss-"+proto+".example.", dns.TypeA)
		if r := ts.ask(t, proto, q); r.Rcode != dns.RcodeServerFailure || r.IsEdns0() != nil {
			t.Errorf("%s: overloaded miss without EDNS got rcode %s, OPT %v; want SERVFAIL without OPT", proto, dns.RcodeToString[r.Rcode], r.IsEdns0())
		}
		q.SetEdns0(1232, false)
		r := ts.ask(t, proto, q)
		ede := edeOf(r)
		if r.Rcode != dns.RcodeServerFailure || ede == nil || ede.InfoCode != edeOther || ede.ExtraText != "server busy" {
			t.Errorf("%s: overloaded miss got rcode %s, EDE %v; want SERVFAIL with EDE 0 \"server busy\"", proto, dns.RcodeToString[r.Rcode], ede)
		}
		if r := ts.ask(t, proto, newQuery("cached.example.", dns.TypeA)); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("%s: a cached name while overloaded: %v", proto, r)
		}
	}
	// A log rule's hit is recorded on this SERVFAIL too, as on every other.
	if r := ts.ask(t, "udp", newQuery("www.watched.example.", dns.TypeA)); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("overloaded miss of a logged name: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	waitFor(t, "the log rule's hit recorded", func() bool { return len(rec.all()) == 1 })
	if h := rec.all()[0]; h.List == nil || h.List.Name != "watch.txt" || h.Action != sinkhole.ActionLog {
		t.Errorf("hit %+v, want watch.txt's log rule", h)
	}
	if n.Load() != 1 {
		t.Errorf("upstream asked %d times, want 1 (the misses must not reach it)", n.Load())
	}
	if got := testutil.ToFloat64(ts.m.overload); got != 5 {
		t.Errorf("sinkd_overload_servfail_total = %v, want 5", got)
	}
}

// TestTCPConnectionsPerClientCapped: one client address cannot hold more
// than listen.tcp_max_conns_per_client connections; another address is
// still served over TCP meanwhile, and the flooder gets a slot back once
// one of its connections closes.
func TestTCPConnectionsPerClientCapped(t *testing.T) {
	t.Parallel()
	const perClient, extra = 4, 3
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, func(c *Config) {
		c.TCPMaxConns = 20
		c.TCPMaxConnsPerClient = perClient
	})
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	flood := make([]net.Conn, 0, perClient+extra)
	for range perClient + extra {
		c, err := d.Dial("tcp", ts.addr)
		if err != nil {
			t.Skipf("no 127.0.0.2 here: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
		flood = append(flood, c)
	}
	for i, c := range flood[perClient:] {
		if err := closedByServer(c); err != nil {
			t.Errorf("connection %d of 127.0.0.2: %v", perClient+i+1, err)
		}
	}
	waitFor(t, "the flooder's first connections held", func() bool { return testutil.ToFloat64(ts.m.tcpConns) == perClient })
	if got := testutil.ToFloat64(ts.m.tcpRejectClient); got != extra {
		t.Errorf(`sinkd_tcp_rejected_connections_total{reason="max_conns_per_client"} = %v, want %d`, got, extra)
	}
	if err := ts.askTCP("other.example."); err != nil { // from 127.0.0.1
		t.Errorf("another client over TCP while 127.0.0.2 is at its cap: %v", err)
	}
	askFrom := func(c net.Conn) error {
		dc := &dns.Conn{Conn: c}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := dc.WriteMsg(newQuery("held.example.", dns.TypeA)); err != nil {
			return err
		}
		r, err := dc.ReadMsg()
		if err == nil && len(r.Answer) != 1 {
			err = fmt.Errorf("answer %v", r.Answer)
		}
		return err
	}
	if err := askFrom(flood[0]); err != nil {
		t.Errorf("a query on a held connection: %v", err)
	}
	_ = flood[0].Close()
	waitFor(t, "a slot of 127.0.0.2 back after it closed one", func() bool {
		c, err := d.Dial("tcp", ts.addr)
		if err != nil {
			return false
		}
		defer c.Close()
		return askFrom(c) == nil
	})
}

// TestTCPOutsiderRefusedThenClosed: a client outside access.allow gets
// REFUSED over TCP and then the connection closes, so outsiders cannot
// hold the slots of tcp_max_conns by asking again and again.
func TestTCPOutsiderRefusedThenClosed(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, func(c *Config) {
		c.Access.Allow = MustPrefixes("10.0.0.0/8") // loopback is not allowed
	})
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dc := &dns.Conn{Conn: c}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := dc.WriteMsg(newQuery("example.com.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if r, err := dc.ReadMsg(); err != nil || r.Rcode != dns.RcodeRefused {
		t.Fatalf("outsider over TCP: %v, %v; want REFUSED", r, err)
	}
	if err := closedByServer(c); err != nil {
		t.Errorf("after the REFUSED: %v", err)
	}
	waitFor(t, "the outsider's connection released", func() bool { return testutil.ToFloat64(ts.m.tcpConns) == 0 })
}

func TestTCPClientKey(t *testing.T) {
	t.Parallel()
	tests := []struct{ addr, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::"},
		{"2001:db8:1:2:bbbb::9", "2001:db8:1:2::"},
		{"::1", "::"},
	}
	for _, tt := range tests {
		if got := tcpClientKey(netip.MustParseAddr(tt.addr)); got.String() != tt.want {
			t.Errorf("tcpClientKey(%s) = %s, want %s", tt.addr, got, tt.want)
		}
	}
}
