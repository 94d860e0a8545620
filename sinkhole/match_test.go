package sinkhole

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sinkd/sinkd/internal/synth"
)

// refSource is one list of the reference matcher: a Go map of names.
type refSource struct {
	name   string
	action Action
	allow  bool
	rules  map[string]string // name -> rule as written
}

// refVerdict is what the reference matcher decides for a name.
type refVerdict struct {
	list    string
	rule    string
	allowed bool
	action  Action
}

// refCheck is the reference for CheckQuery: every suffix starting at the
// name's start or after a dot, looked up in each source's map; allow beats
// block beats log, each the one with the most labels, ties to the source
// that sorts first.
func refCheck(srcs []refSource, name []byte) refVerdict {
	name = bytes.TrimSuffix(name, []byte("."))
	if len(name) == 0 {
		return refVerdict{}
	}
	srcs = slices.Clone(srcs)
	slices.SortStableFunc(srcs, func(a, b refSource) int { return strings.Compare(a.name, b.name) })
	type best struct {
		labels int
		v      refVerdict
	}
	var allow, block, log best
	for s := 0; s <= len(name); s++ {
		if s > 0 && name[s-1] != '.' {
			continue
		}
		suffix := string(name[s:])
		labels := strings.Count(suffix, ".") + 1
		for _, src := range srcs {
			rule, ok := src.rules[suffix]
			if !ok {
				continue
			}
			b := &block
			switch {
			case src.allow:
				b = &allow
			case src.action == ActionLog:
				b = &log
			}
			if labels > b.labels {
				*b = best{labels, refVerdict{src.name, rule, src.allow, src.action}}
			}
		}
	}
	switch {
	case allow.labels > 0:
		allow.v.action = ActionNone
		return allow.v
	case block.labels > 0:
		return block.v
	}
	return log.v
}

func gotRef(v Verdict) refVerdict {
	if v.Source == nil {
		return refVerdict{}
	}
	return refVerdict{v.Source.Name, v.Rule(), v.Allowed, v.Action}
}

func refPolicy(t testing.TB, refs []refSource) *Policy {
	t.Helper()
	var rules []*Rules
	for _, r := range refs {
		b := NewBuilder(&Source{Name: r.name, Action: r.action, Allow: r.allow})
		for name, rule := range r.rules {
			syn := SyntaxPlain
			if strings.HasPrefix(rule, "*.") {
				syn = SyntaxWildcard
			}
			b.AddDomain(name, syn, "")
		}
		rules = append(rules, b.Build())
	}
	return NewPolicy(Settings{Action: ActionSinkhole}, rules)
}

// TestMatchDifferential compares the hash table with the reference over
// synthetic lists of realistic size and shape: listed names, names below
// them, names that end like them without being below them, and misses.
func TestMatchDifferential(t *testing.T) {
	t.Parallel()
	n := 60000
	if testing.Short() {
		n = 6000
	}
	all := synth.DomainList(7, n+n/10+n/20)
	mk := func(name string, action Action, allow bool, names []string) refSource {
		r := refSource{name: name, action: action, allow: allow, rules: map[string]string{}}
		for i, x := range names {
			if i%7 == 0 {
				r.rules[x] = "*." + x
			} else {
				r.rules[x] = x
			}
		}
		return r
	}
	refs := []refSource{
		mk("big.txt", ActionSinkhole, false, all[:n]),
		mk("audit.txt", ActionLog, false, all[n:n+n/10]),
		mk("allow/ok.txt", ActionNone, true, all[n+n/10:]),
	}
	// Overlaps across lists: parents and children of listed names.
	for i := 0; i < n/10; i++ {
		refs[1].rules["www."+all[i]] = "www." + all[i]
		refs[2].rules["ok."+all[2*i]] = "ok." + all[2*i]
	}
	p := refPolicy(t, refs)
	misses := synth.DomainList(8, n/2)
	check := func(q string) {
		t.Helper()
		got := gotRef(p.CheckQuery(netip.Addr{}, []byte(q)))
		if want := refCheck(refs, []byte(q)); got != want {
			t.Fatalf("CheckQuery(%q) = %+v, want %+v", q, got, want)
		}
	}
	for i, name := range all {
		check(name)
		check("a.b.c." + name)
		check(fmt.Sprintf("x%d", i) + name)
		check(name[1:])
		check("www." + name)
		check("ok." + name)
	}
	for _, name := range misses {
		check(name)
		check("m.a." + name)
	}
}

// FuzzCheckQuery feeds arbitrary bytes as the query name and checks the
// verdict against the reference matcher over a small rule set with long
// labels, digits, hyphens, odd bytes and overlapping lists.
func FuzzCheckQuery(f *testing.F) {
	refs := []refSource{
		{name: "b.txt", action: ActionNXDomain, rules: map[string]string{
			"evil.example":                         "evil.example",
			"a.b":                                  "a.b",
			"b":                                    "b",
			"verylonglabelname-0123456789.example": "verylonglabelname-0123456789.example",
			"x-1.y-2.z-3.example":                  "*.x-1.y-2.z-3.example",
			"12345678.abcdefgh":                    "12345678.abcdefgh",
			"exactly8.example":                     "exactly8.example",
			"\xff\x00.example":                     "\xff\x00.example",
		}},
		{name: "a.txt", action: ActionRefuse, rules: map[string]string{
			"evil.example": "evil.example", "www.evil.example": "www.evil.example",
			"abcdefgh.example": "abcdefgh.example",
		}},
		{name: "log.txt", action: ActionLog, rules: map[string]string{
			"deep.www.evil.example": "deep.www.evil.example", "log.example": "log.example", "a.b": "a.b",
		}},
		{name: "allow/ok.txt", allow: true, rules: map[string]string{
			"ok.evil.example": "ok.evil.example", "fine.a.b": "fine.a.b",
		}},
	}
	p := refPolicy(f, refs)
	for _, s := range []string{"evil.example", "www.evil.example", "notevil.example", "x.deep.www.evil.example",
		"ok.evil.example", "q.fine.a.b", "a.b", "c.b", "exactly8.example", "1.12345678.abcdefgh", ".", "", "a..b", "b."} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, qname []byte) {
		got := gotRef(p.CheckQuery(netip.Addr{}, qname))
		if want := refCheck(refs, qname); got != want {
			t.Fatalf("CheckQuery(%q) = %+v, want %+v", qname, got, want)
		}
		ans := &Answer{Targets: [][]byte{qname}}
		v := p.CheckAnswer(netip.Addr{}, ans)
		want := refCheck(refs, qname)
		if want.allowed {
			want = refVerdict{}
		}
		if got := gotRef(v); got != want {
			t.Fatalf("CheckAnswer(%q) = %+v, want %+v", qname, got, want)
		}
	})
}
