package sinkhole

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
	"github.com/sinkd/sinkd/internal/synth"
)

// The benchmark policy of issue 3: 1,000,000 domains and 100,000 IPv4/IPv6
// addresses and CIDRs in one list, from internal/synth.
const (
	benchDomains  = 1000000
	benchPrefixes = 100000
	benchNames    = 4096 // distinct query names cycled through per benchmark
)

type benchFixture struct {
	domains  []string
	prefixes []netip.Prefix
	policy   *Policy
	split    *Policy // the same rules in 10 lists, plus an allowlist
}

var fixture = sync.OnceValue(func() *benchFixture {
	f := &benchFixture{
		domains:  synth.DomainList(1, benchDomains),
		prefixes: synth.PrefixList(1, benchPrefixes),
	}
	b := NewBuilder(&Source{Name: "big.txt"})
	for _, d := range f.domains {
		b.AddDomain(d, SyntaxPlain, "")
	}
	for _, p := range f.prefixes {
		b.AddPrefix(p, "")
	}
	f.policy = NewPolicy(Settings{TTL: 60, Action: ActionSinkhole}, []*Rules{b.Build()})

	var rules []*Rules
	for k := range 10 {
		b := NewBuilder(&Source{Name: fmt.Sprintf("list%02d.txt", k)})
		for i := k; i < len(f.domains); i += 10 {
			b.AddDomain(f.domains[i], SyntaxPlain, "")
		}
		for i := k; i < len(f.prefixes); i += 10 {
			b.AddPrefix(f.prefixes[i], "")
		}
		rules = append(rules, b.Build())
	}
	a := NewBuilder(&Source{Name: "allow/ok.txt", Allow: true})
	for _, d := range synth.DomainList(99, 1000) {
		a.AddDomain(d, SyntaxPlain, "")
	}
	rules = append(rules, a.Build())
	f.split = NewPolicy(Settings{TTL: 60, Action: ActionSinkhole}, rules)
	return f
})

// sixLabels pads name with labels in front to six labels.
func sixLabels(name string, i int) string {
	pre := []string{"cdn", fmt.Sprintf("n%d", i), "edge-01", "static", "a"}
	k := 6 - (strings.Count(name, ".") + 1)
	if k <= 0 {
		return name
	}
	return strings.Join(pre[:k], ".") + "." + name
}

// queryNames returns benchNames six-label names below listed names (hit)
// or below unlisted ones (miss).
func queryNames(f *benchFixture, hit bool) [][]byte {
	out := make([][]byte, 0, benchNames)
	if hit {
		// Listed names, less the few the allowlist of f.split exempts.
		for i := 0; len(out) < benchNames; i++ {
			q := []byte(sixLabels(f.domains[(i*7919)%len(f.domains)], i))
			if v := f.split.CheckQuery(netip.Addr{}, q); v.Blocks() {
				out = append(out, q)
			}
		}
		return out
	}
	// Names from another seed, less the few that happen to be listed
	// (common word pairs recur across seeds).
	for i, name := range synth.DomainList(2, 2*benchNames) {
		q := []byte(sixLabels(name, i))
		if v := f.policy.CheckQuery(netip.Addr{}, q); !v.Hit() && len(out) < benchNames {
			out = append(out, q)
		}
	}
	return out
}

func BenchmarkCheckQuery(b *testing.B) {
	f := fixture()
	for _, pc := range []struct {
		name string
		p    *Policy
	}{{"1list", f.policy}, {"11lists", f.split}} {
		for _, hit := range []bool{true, false} {
			names := queryNames(f, hit)
			for i, n := range names {
				if v := pc.p.CheckQuery(netip.Addr{}, n); v.Blocks() != hit {
					b.Fatalf("%s: %q blocks=%v", pc.name, names[i], v.Blocks())
				}
			}
			kind := map[bool]string{true: "hit", false: "miss"}[hit]
			b.Run(pc.name+"/"+kind, func(b *testing.B) {
				b.ReportAllocs()
				client := netip.MustParseAddr("192.0.2.1")
				i := 0
				for b.Loop() {
					_ = pc.p.CheckQuery(client, names[i&(benchNames-1)])
					i++
				}
			})
			// The same name again and again: every line it touches is cached.
			b.Run(pc.name+"/"+kind+"-same", func(b *testing.B) {
				b.ReportAllocs()
				client := netip.MustParseAddr("192.0.2.1")
				for b.Loop() {
					_ = pc.p.CheckQuery(client, names[5])
				}
			})
		}
	}
}

// BenchmarkCheckAnswer checks answers of 4 addresses (2 IPv4, 2 IPv6) and
// reports the time per address.
func BenchmarkCheckAnswer(b *testing.B) {
	f := fixture()
	const perAnswer = 4
	var misses []netip.Prefix
	for _, p := range synth.PrefixList(77, 8*benchNames) {
		if v := f.policy.Explain(p.Addr().String()); !v.Hit() {
			misses = append(misses, p)
		}
	}
	answers := func(hit bool) []Answer {
		out := make([]Answer, benchNames)
		var v4, v6 []netip.Addr
		for _, p := range misses {
			if p.Addr().Is4() {
				v4 = append(v4, p.Addr())
			} else {
				v6 = append(v6, p.Addr())
			}
		}
		for i := range out {
			a := []netip.Addr{v4[2*i%len(v4)], v4[(2*i+1)%len(v4)], v6[2*i%len(v6)], v6[(2*i+1)%len(v6)]}
			if hit {
				p := f.prefixes[(i*7919)%len(f.prefixes)]
				a[3] = p.Addr() // the last address is listed
			}
			out[i] = Answer{Addrs: a}
		}
		return out
	}
	for _, pc := range []struct {
		name string
		p    *Policy
	}{{"1list", f.policy}, {"11lists", f.split}} {
		for _, hit := range []bool{true, false} {
			as := answers(hit)
			blocked := 0
			for i := range as {
				if v := pc.p.CheckAnswer(netip.Addr{}, &as[i]); v.Blocks() {
					blocked++
				}
			}
			if hit && blocked != len(as) || !hit && blocked > 0 {
				b.Fatalf("%s: %d of %d answers blocked", pc.name, blocked, len(as))
			}
			kind := map[bool]string{true: "hit", false: "miss"}[hit]
			b.Run(pc.name+"/"+kind, func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					_ = pc.p.CheckAnswer(netip.Addr{}, &as[i&(benchNames-1)])
					i++
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/perAnswer, "ns/addr")
			})
			// The same answer again and again: every line it touches is cached.
			b.Run(pc.name+"/"+kind+"-same", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_ = pc.p.CheckAnswer(netip.Addr{}, &as[5])
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/perAnswer, "ns/addr")
			})
		}
	}
}

// BenchmarkCheckAnswerCNAME checks answers of one CNAME target and two
// addresses, none listed.
func BenchmarkCheckAnswerCNAME(b *testing.B) {
	f := fixture()
	names := queryNames(f, false)
	b.ReportAllocs()
	a := Answer{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}
	i := 0
	for b.Loop() {
		a.Targets = names[i&(benchNames-1):][:1]
		_ = f.policy.CheckAnswer(netip.Addr{}, &a)
		i++
	}
}

// BenchmarkBuild1M compiles 1M domains (AddDomain and Build: the part of a
// list load that is not parsing) and reports the heap the compiled rules
// hold per domain.
func BenchmarkBuild1M(b *testing.B) {
	domains := synth.DomainList(1, benchDomains)
	build := func() *Rules {
		bl := NewBuilder(&Source{Name: "big.txt"})
		for _, d := range domains {
			bl.AddDomain(d, SyntaxPlain, "")
		}
		return bl.Build()
	}
	held := heldBytes(func() any { return build() }) // before b.Loop, which keeps results alive
	for b.Loop() {
		if r := build(); r.Source().Rules.Domain != benchDomains {
			b.Fatalf("counted %d domains", r.Source().Rules.Domain)
		}
	}
	b.ReportMetric(held/benchDomains, "B/domain")
}

// BenchmarkBuildPrefixes compiles 100k addresses and CIDRs and reports the
// heap held per prefix.
func BenchmarkBuildPrefixes(b *testing.B) {
	prefixes := synth.PrefixList(1, benchPrefixes)
	build := func() *Rules {
		bl := NewBuilder(&Source{Name: "ips.txt"})
		for _, p := range prefixes {
			bl.AddPrefix(p, "")
		}
		return bl.Build()
	}
	held := heldBytes(func() any { return build() }) // before b.Loop, which keeps results alive
	for b.Loop() {
		build()
	}
	b.ReportMetric(held/benchPrefixes, "B/prefix")
}

// heldBytes returns the heap that build's result holds once built.
func heldBytes(build func() any) float64 {
	before := heapInUse()
	x := build()
	after := heapInUse()
	runtime.KeepAlive(x)
	return float64(after) - float64(before)
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkNewPolicy composes a snapshot from 11 compiled lists holding
// 1M domains and 100k prefixes: the cost of a reload beyond the changed
// list's own Build.
func BenchmarkNewPolicy(b *testing.B) {
	f := fixture()
	rules := f.split.Rules()
	b.ReportAllocs()
	for b.Loop() {
		_ = NewPolicy(f.split.Settings(), rules)
	}
}

func BenchmarkAppendReply(b *testing.B) {
	f := fixture()
	m := new(dns.Msg)
	m.SetQuestion("www.evil.example.", dns.TypeA)
	wire, _ := m.Pack()
	name := []byte("www." + f.domains[0])
	v := f.policy.CheckQuery(netip.Addr{}, name)
	for _, tc := range []struct {
		name  string
		qtype uint16
		edns  bool
	}{{"A", dns.TypeA, false}, {"A-edns", dns.TypeA, true}, {"HTTPS-edns", dns.TypeHTTPS, true}} {
		q := &Query{ID: 1, RD: true, Question: wire[12:], QType: tc.qtype, EDNS: tc.edns}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 512)
			for b.Loop() {
				buf = f.policy.AppendReply(buf[:0], q, &v)
			}
		})
	}
}
