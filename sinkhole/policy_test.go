package sinkhole

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// src describes one list for newTestPolicy: its rules are written as in a
// list file, one per string, with an optional " # note".
type src struct {
	name   string
	action Action
	allow  bool
	rules  []string
}

// buildRules compiles s with the exported Builder, turning each line into
// AddDomain or AddPrefix the way zones does.
func buildRules(t testing.TB, s src) *Rules {
	t.Helper()
	source := &Source{Name: s.name, Action: s.action, Allow: s.allow}
	b := NewBuilder(source)
	for _, line := range s.rules {
		rule, note, _ := strings.Cut(line, " # ")
		switch {
		case strings.HasPrefix(rule, "||") && strings.HasSuffix(rule, "^$important"):
			b.AddDomain(strings.TrimSuffix(rule[2:], "^$important"), SyntaxAdblockImportant, note)
		case strings.HasPrefix(rule, "||") && strings.HasSuffix(rule, "^"):
			b.AddDomain(strings.TrimSuffix(rule[2:], "^"), SyntaxAdblock, note)
		case strings.HasPrefix(rule, "*."):
			b.AddDomain(rule[2:], SyntaxWildcard, note)
		case strings.Contains(rule, "/"):
			b.AddPrefix(netip.MustParsePrefix(rule), note)
		default:
			if a, err := netip.ParseAddr(rule); err == nil {
				b.AddPrefix(netip.PrefixFrom(a, a.BitLen()), note)
				continue
			}
			b.AddDomain(rule, SyntaxPlain, note)
		}
	}
	return b.Build()
}

func newTestPolicy(t testing.TB, srcs ...src) *Policy {
	t.Helper()
	var rules []*Rules
	for _, s := range srcs {
		rules = append(rules, buildRules(t, s))
	}
	return NewPolicy(Settings{
		IPv4:   netip.MustParseAddr("0.0.0.0"),
		IPv6:   netip.MustParseAddr("::"),
		TTL:    60,
		Action: ActionSinkhole,
	}, rules)
}

// want is a verdict in comparable form.
type want struct {
	trigger Trigger
	action  Action
	allowed bool
	list    string
	rule    string
	note    string
	match   string // Name or Addr
}

func got(v Verdict) want {
	w := want{trigger: v.Trigger, action: v.Action, allowed: v.Allowed, rule: v.Rule(), note: v.Note()}
	if v.Source != nil {
		w.list = v.Source.Name
	}
	switch {
	case v.Name != nil:
		w.match = string(v.Name)
	case v.Addr.IsValid():
		w.match = v.Addr.String()
	}
	return w
}

func TestCheckQuery(t *testing.T) {
	t.Parallel()
	malware := src{name: "malware.txt", rules: []string{
		"evil.example # C2 of family X",
		"*.wild.example",
		"||ads.example^",
		"||track.example^$important",
		"shop.test",
		"a.b.c.deep.example",
	}}
	tests := []struct {
		name  string
		srcs  []src
		qname string
		want  want
	}{
		{"exact name", []src{malware}, "evil.example",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "evil.example", "C2 of family X", "evil.example"}},
		{"subdomain", []src{malware}, "www.evil.example",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "evil.example", "C2 of family X", "www.evil.example"}},
		{"deep subdomain", []src{malware}, "a.b.c.d.e.evil.example",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "evil.example", "C2 of family X", "a.b.c.d.e.evil.example"}},
		{"final dot ignored", []src{malware}, "www.evil.example.",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "evil.example", "C2 of family X", "www.evil.example."}},
		{"label suffix is not a subdomain", []src{malware}, "notevil.example", want{}},
		{"label suffix below", []src{malware}, "www.notevil.example", want{}},
		{"parent is not listed", []src{malware}, "example", want{}},
		{"listed name as a prefix", []src{malware}, "evil.example.com", want{}},
		{"sibling", []src{malware}, "good.example", want{}},
		{"wildcard matches its base name", []src{malware}, "wild.example",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "*.wild.example", "", "wild.example"}},
		{"wildcard matches below", []src{malware}, "x.y.wild.example",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "*.wild.example", "", "x.y.wild.example"}},
		{"adblock", []src{malware}, "pixel.ads.example",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "||ads.example^", "", "pixel.ads.example"}},
		{"adblock important", []src{malware}, "track.example",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "||track.example^$important", "", "track.example"}},
		{"deep rule, shallower query", []src{malware}, "b.c.deep.example", want{}},
		{"deep rule", []src{malware}, "x.a.b.c.deep.example",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "a.b.c.deep.example", "", "x.a.b.c.deep.example"}},
		{"empty name", []src{malware}, "", want{}},
		{"root", []src{malware}, ".", want{}},
		{"empty label", []src{malware}, "x..evil.example",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "evil.example", "C2 of family X", "x..evil.example"}},
		{"file action", []src{{name: "phish.txt", action: ActionNXDomain, rules: []string{"evil.example"}}}, "evil.example",
			want{TriggerQName, ActionNXDomain, false, "phish.txt", "evil.example", "", "evil.example"}},
		{
			"allowlisted subdomain of a blocked domain",
			[]src{malware, {name: "allow/ok.txt", allow: true, rules: []string{"good.evil.example"}}},
			"www.good.evil.example",
			want{TriggerQName, ActionNone, true, "allow/ok.txt", "good.evil.example", "", "www.good.evil.example"},
		},
		{
			"allowlisted subdomain leaves the blocked parent blocked",
			[]src{malware, {name: "allow/ok.txt", allow: true, rules: []string{"good.evil.example"}}},
			"bad.evil.example",
			want{TriggerQName, ActionSinkhole, false, "malware.txt", "evil.example", "C2 of family X", "bad.evil.example"},
		},
		{
			"allow beats a more specific block",
			[]src{{name: "allow/ok.txt", allow: true, rules: []string{"evil.example"}}, {name: "b.txt", rules: []string{"www.evil.example"}}},
			"www.evil.example",
			want{TriggerQName, ActionNone, true, "allow/ok.txt", "evil.example", "", "www.evil.example"},
		},
		{
			"most specific block wins",
			[]src{
				{name: "a.txt", action: ActionNXDomain, rules: []string{"evil.example"}},
				{name: "b.txt", action: ActionRefuse, rules: []string{"www.evil.example"}},
			},
			"x.www.evil.example",
			want{TriggerQName, ActionRefuse, false, "b.txt", "www.evil.example", "", "x.www.evil.example"},
		},
		{
			"less specific block elsewhere",
			[]src{
				{name: "a.txt", action: ActionNXDomain, rules: []string{"evil.example"}},
				{name: "b.txt", action: ActionRefuse, rules: []string{"www.evil.example"}},
			},
			"mail.evil.example",
			want{TriggerQName, ActionNXDomain, false, "a.txt", "evil.example", "", "mail.evil.example"},
		},
		{
			"equal length: source name order",
			[]src{
				{name: "zz.txt", action: ActionRefuse, rules: []string{"evil.example"}},
				{name: "aa.txt", action: ActionNXDomain, rules: []string{"*.evil.example"}},
			},
			"www.evil.example",
			want{TriggerQName, ActionNXDomain, false, "aa.txt", "*.evil.example", "", "www.evil.example"},
		},
		{
			"log never decides: a less specific block does",
			[]src{
				{name: "audit.txt", action: ActionLog, rules: []string{"www.evil.example"}},
				{name: "block.txt", action: ActionNoData, rules: []string{"evil.example"}},
			},
			"www.evil.example",
			want{TriggerQName, ActionNoData, false, "block.txt", "evil.example", "", "www.evil.example"},
		},
		{
			"log alone is recorded",
			[]src{
				{name: "audit.txt", action: ActionLog, rules: []string{"evil.example"}},
				{name: "z-audit.txt", action: ActionLog, rules: []string{"www.evil.example"}},
			},
			"a.www.evil.example",
			want{TriggerQName, ActionLog, false, "z-audit.txt", "www.evil.example", "", "a.www.evil.example"},
		},
		{
			"allow beats log",
			[]src{
				{name: "audit.txt", action: ActionLog, rules: []string{"evil.example"}},
				{name: "ok.allow.txt", allow: true, rules: []string{"evil.example"}},
			},
			"evil.example",
			want{TriggerQName, ActionNone, true, "ok.allow.txt", "evil.example", "", "evil.example"},
		},
		{
			"address rules never match names",
			[]src{{name: "ips.txt", rules: []string{"203.0.113.0/24"}}},
			"203.0.113.7",
			want{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newTestPolicy(t, tt.srcs...)
			v := p.CheckQuery(netip.MustParseAddr("192.0.2.1"), []byte(tt.qname))
			if g := got(v); g != tt.want {
				t.Errorf("CheckQuery(%q) = %+v, want %+v", tt.qname, g, tt.want)
			}
			if v.Hit() != (tt.want.list != "") {
				t.Errorf("Hit() = %v", v.Hit())
			}
			wantBlocks := tt.want.list != "" && !tt.want.allowed && tt.want.action != ActionLog
			if v.Blocks() != wantBlocks {
				t.Errorf("Blocks() = %v, want %v", v.Blocks(), wantBlocks)
			}
		})
	}
}

func TestCheckQueryDefaultAction(t *testing.T) {
	t.Parallel()
	r := buildRules(t, src{name: "a.txt", rules: []string{"evil.example"}})
	tests := []struct {
		name string
		def  Action
		want Action
	}{
		{"settings action", ActionNXDomain, ActionNXDomain},
		{"no action anywhere", ActionNone, ActionSinkhole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := NewPolicy(Settings{Action: tt.def}, []*Rules{r})
			if v := p.CheckQuery(netip.Addr{}, []byte("evil.example")); v.Action != tt.want {
				t.Errorf("Action = %v, want %v", v.Action, tt.want)
			}
		})
	}
}

func TestCheckAnswer(t *testing.T) {
	t.Parallel()
	block := src{name: "block.txt", rules: []string{
		"evil.example",
		"tracker.example # tracker",
		"203.0.113.0/24 # SBL1",
		"198.51.100.7",
		"2001:db8:bad::/48",
		"2001:db8::66",
	}}
	allow := src{name: "allow/ok.txt", allow: true, rules: []string{
		"cdn.evil.example",
		"203.0.113.9",
	}}
	a := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, x := range s {
			out = append(out, netip.MustParseAddr(x))
		}
		return out
	}
	n := func(s ...string) [][]byte {
		var out [][]byte
		for _, x := range s {
			out = append(out, []byte(x))
		}
		return out
	}
	tests := []struct {
		name string
		srcs []src
		ans  Answer
		want want
	}{
		{"clean answer", []src{block}, Answer{Targets: n("cdn.good.example"), Addrs: a("192.0.2.1", "2001:db8:1::1")}, want{}},
		{"empty answer", []src{block}, Answer{}, want{}},
		{"cidr covers the top address", []src{block}, Answer{Addrs: a("203.0.113.255")},
			want{TriggerIP, ActionSinkhole, false, "block.txt", "203.0.113.0/24", "SBL1", "203.0.113.255"}},
		{"cidr stops at its end", []src{block}, Answer{Addrs: a("203.0.114.0", "203.0.112.255")}, want{}},
		{"single address", []src{block}, Answer{Addrs: a("192.0.2.1", "198.51.100.7")},
			want{TriggerIP, ActionSinkhole, false, "block.txt", "198.51.100.7", "", "198.51.100.7"}},
		{"neighbour of a single address", []src{block}, Answer{Addrs: a("198.51.100.8")}, want{}},
		{"ipv6 cidr", []src{block}, Answer{Addrs: a("2001:db8:bad:1::5")},
			want{TriggerIP, ActionSinkhole, false, "block.txt", "2001:db8:bad::/48", "", "2001:db8:bad:1::5"}},
		{"outside the ipv6 cidr", []src{block}, Answer{Addrs: a("2001:db8:bae::1")}, want{}},
		{"ipv6 address", []src{block}, Answer{Addrs: a("2001:db8::66")},
			want{TriggerIP, ActionSinkhole, false, "block.txt", "2001:db8::66", "", "2001:db8::66"}},
		{"ipv4-mapped answer address", []src{block}, Answer{Addrs: a("::ffff:203.0.113.7")},
			want{TriggerIP, ActionSinkhole, false, "block.txt", "203.0.113.0/24", "SBL1", "203.0.113.7"}},
		{"https ipv4hint", []src{block}, Answer{Targets: n("svc.good.example"), Addrs: a("192.0.2.1", "203.0.113.80", "2001:db8:1::1")},
			want{TriggerIP, ActionSinkhole, false, "block.txt", "203.0.113.0/24", "SBL1", "203.0.113.80"}},
		{"cname chain, last target listed", []src{block}, Answer{Targets: n("a.good.example", "b.cdn.example", "x.tracker.example"), Addrs: a("192.0.2.1")},
			want{TriggerCNAME, ActionSinkhole, false, "block.txt", "tracker.example", "tracker", "x.tracker.example"}},
		{"cname target label suffix", []src{block}, Answer{Targets: n("notevil.example")}, want{}},
		{"allowlisted target is exempt", []src{block, allow}, Answer{Targets: n("www.cdn.evil.example"), Addrs: a("192.0.2.1")}, want{}},
		{"allowlisted target exempts only itself", []src{block, allow}, Answer{Targets: n("cdn.evil.example", "edge.evil.example")},
			want{TriggerCNAME, ActionSinkhole, false, "block.txt", "evil.example", "", "edge.evil.example"}},
		{"allowlisted target leaves addresses checked", []src{block, allow}, Answer{Targets: n("cdn.evil.example"), Addrs: a("203.0.113.10")},
			want{TriggerIP, ActionSinkhole, false, "block.txt", "203.0.113.0/24", "SBL1", "203.0.113.10"}},
		{"allowlisted address inside a blocked cidr", []src{block, allow}, Answer{Addrs: a("203.0.113.9")}, want{}},
		{"allowlisted address exempts only itself", []src{block, allow}, Answer{Addrs: a("203.0.113.9", "203.0.113.10")},
			want{TriggerIP, ActionSinkhole, false, "block.txt", "203.0.113.0/24", "SBL1", "203.0.113.10"}},
		{
			"longest prefix wins across lists",
			[]src{
				{name: "a.txt", action: ActionNXDomain, rules: []string{"203.0.0.0/16"}},
				{name: "b.txt", action: ActionRefuse, rules: []string{"203.0.113.0/24"}},
			},
			Answer{Addrs: a("203.0.1.1", "203.0.113.1")},
			want{TriggerIP, ActionRefuse, false, "b.txt", "203.0.113.0/24", "", "203.0.113.1"},
		},
		{
			"equal prefixes: source name order",
			[]src{
				{name: "b.txt", action: ActionRefuse, rules: []string{"203.0.113.0/24"}},
				{name: "a.txt", action: ActionNXDomain, rules: []string{"203.0.113.0/24"}},
			},
			Answer{Addrs: a("203.0.113.1")},
			want{TriggerIP, ActionNXDomain, false, "a.txt", "203.0.113.0/24", "", "203.0.113.1"},
		},
		{
			"most specific target wins over answer order",
			[]src{
				{name: "a.txt", action: ActionNXDomain, rules: []string{"evil.example"}},
				{name: "b.txt", action: ActionRefuse, rules: []string{"x.bad.example"}},
			},
			Answer{Targets: n("www.evil.example", "y.x.bad.example")},
			want{TriggerCNAME, ActionRefuse, false, "b.txt", "x.bad.example", "", "y.x.bad.example"},
		},
		{
			"equal targets: first in the answer",
			[]src{{name: "a.txt", rules: []string{"evil.example", "bad.example"}}},
			Answer{Targets: n("x.bad.example", "x.evil.example")},
			want{TriggerCNAME, ActionSinkhole, false, "a.txt", "bad.example", "", "x.bad.example"},
		},
		{"a name beats an address", []src{block}, Answer{Targets: n("evil.example"), Addrs: a("198.51.100.7")},
			want{TriggerCNAME, ActionSinkhole, false, "block.txt", "evil.example", "", "evil.example"}},
		{
			"log target never decides over a blocked address",
			[]src{
				{name: "audit.txt", action: ActionLog, rules: []string{"evil.example"}},
				{name: "ips.txt", rules: []string{"203.0.113.0/24"}},
			},
			Answer{Targets: n("evil.example"), Addrs: a("203.0.113.1")},
			want{TriggerIP, ActionSinkhole, false, "ips.txt", "203.0.113.0/24", "", "203.0.113.1"},
		},
		{
			"log address alone is recorded",
			[]src{{name: "audit.txt", action: ActionLog, rules: []string{"203.0.113.0/24"}}},
			Answer{Addrs: a("203.0.113.1")},
			want{TriggerIP, ActionLog, false, "audit.txt", "203.0.113.0/24", "", "203.0.113.1"},
		},
		{
			"log target before a log address",
			[]src{{name: "audit.txt", action: ActionLog, rules: []string{"203.0.113.0/24", "evil.example"}}},
			Answer{Targets: n("evil.example"), Addrs: a("203.0.113.1")},
			want{TriggerCNAME, ActionLog, false, "audit.txt", "evil.example", "", "evil.example"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newTestPolicy(t, tt.srcs...)
			ans := tt.ans
			v := p.CheckAnswer(netip.MustParseAddr("192.0.2.1"), &ans)
			if g := got(v); g != tt.want {
				t.Errorf("CheckAnswer = %+v, want %+v", g, tt.want)
			}
		})
	}
}

// TestVerdictNameAliases checks that a verdict's Name is the caller's own
// slice, not a copy.
func TestVerdictNameAliases(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, src{name: "a.txt", rules: []string{"evil.example"}})
	q := []byte("www.evil.example")
	v := p.CheckQuery(netip.Addr{}, q)
	if len(v.Name) == 0 || &v.Name[0] != &q[0] {
		t.Errorf("Name does not alias the qname")
	}
	ans := &Answer{Targets: [][]byte{[]byte("x.evil.example")}}
	v = p.CheckAnswer(netip.Addr{}, ans)
	if len(v.Name) == 0 || &v.Name[0] != &ans.Targets[0][0] {
		t.Errorf("Name does not alias the target")
	}
}

func TestBuildCounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		src   src
		want  RuleCounts
		total int // distinct rules matched by the compiled set
	}{
		{"empty", src{name: "a.txt"}, RuleCounts{}, 0},
		{"kinds", src{name: "a.txt", rules: []string{
			"evil.example", "*.wild.example", "||ads.example^", "||imp.example^$important",
			"203.0.113.7", "2001:db8::1", "203.0.113.0/24", "2001:db8::/32",
		}}, RuleCounts{Domain: 3, Wildcard: 1, IP: 2, CIDR: 2}, 8},
		{"exact duplicates removed", src{name: "a.txt", rules: []string{
			"evil.example", "evil.example", "*.evil.example", "*.evil.example",
			"203.0.113.7", "203.0.113.7", "203.0.113.7/32", "::ffff:203.0.113.7",
			"203.0.113.0/24", "203.0.113.99/24",
		}}, RuleCounts{Domain: 1, Wildcard: 1, IP: 1, CIDR: 1}, 3},
		{"same name in other syntaxes still counts", src{name: "a.txt", rules: []string{
			"evil.example", "||evil.example^", "||evil.example^$important", "*.evil.example", "||evil.example^",
		}}, RuleCounts{Domain: 3, Wildcard: 1}, 1},
		{"parent listed too", src{name: "a.txt", rules: []string{
			"evil.example", "www.evil.example", "a.www.evil.example",
		}}, RuleCounts{Domain: 3}, 3},
		{"allowlist counts allow only", src{name: "allow/a.txt", allow: true, rules: []string{
			"good.example", "*.good.example", "||fine.example^", "192.0.2.1", "192.0.2.0/24", "good.example",
		}}, RuleCounts{Allow: 5}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := buildRules(t, tt.src)
			if got := r.Source().Rules; got != tt.want {
				t.Errorf("Rules = %+v, want %+v", got, tt.want)
			}
			if got := r.dom.n + r.ip.n; got != tt.total {
				t.Errorf("compiled %d rules, want %d", got, tt.total)
			}
		})
	}
}

// TestDuplicateKeepsFirst checks that the first of several rules for one
// name decides the rendering and the note.
func TestDuplicateKeepsFirst(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, src{name: "a.txt", rules: []string{"*.evil.example # first", "evil.example # second"}})
	v := p.CheckQuery(netip.Addr{}, []byte("evil.example"))
	if v.Rule() != "*.evil.example" || v.Note() != "first" {
		t.Errorf("rule %q note %q, want *.evil.example and first", v.Rule(), v.Note())
	}
}

func TestExplain(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t,
		src{name: "block.txt", action: ActionNXDomain, rules: []string{"evil.example", "203.0.113.0/24 # SBL1"}},
		src{name: "allow/ok.txt", allow: true, rules: []string{"good.evil.example", "203.0.113.9"}},
	)
	tests := []struct {
		name string
		x    string
		want want
	}{
		{"name", "WWW.Evil.Example.", want{TriggerQName, ActionNXDomain, false, "block.txt", "evil.example", "", "www.evil.example"}},
		{"allowed name", "good.evil.example", want{TriggerQName, ActionNone, true, "allow/ok.txt", "good.evil.example", "", "good.evil.example"}},
		{"address", "203.0.113.1", want{TriggerIP, ActionNXDomain, false, "block.txt", "203.0.113.0/24", "SBL1", "203.0.113.1"}},
		{"mapped address", "::ffff:203.0.113.1", want{TriggerIP, ActionNXDomain, false, "block.txt", "203.0.113.0/24", "SBL1", "203.0.113.1"}},
		{"allowed address", "203.0.113.9", want{TriggerIP, ActionNone, true, "allow/ok.txt", "203.0.113.9", "", "203.0.113.9"}},
		{"not listed name", "notevil.example", want{}},
		{"not listed address", "192.0.2.1", want{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if g := got(p.Explain(tt.x)); g != tt.want {
				t.Errorf("Explain(%q) = %+v, want %+v", tt.x, g, tt.want)
			}
		})
	}
}

// TestMatchModes covers the room left for RPZ: exact-only and
// subdomains-only rules, and per-rule actions, next to list rules.
func TestMatchModes(t *testing.T) {
	t.Parallel()
	b := NewBuilder(&Source{Name: "z.rpz"})
	b.addDomain("exact.example", SyntaxPlain, modeExact, ActionNXDomain, "")
	b.addDomain("below.example", SyntaxWildcard, modeBelow, ActionNoData, "")
	b.addDomain("both.example", SyntaxPlain, modeExact, ActionNXDomain, "")
	b.addDomain("both.example", SyntaxWildcard, modeBelow, ActionNoData, "")
	b.addPrefix(netip.MustParsePrefix("192.0.2.0/24"), ActionRefuse, "")
	p := NewPolicy(Settings{Action: ActionSinkhole}, []*Rules{b.Build()})
	tests := []struct {
		name string
		x    string
		want Action // ActionNone: not listed
	}{
		{"exact rule, exact name", "exact.example", ActionNXDomain},
		{"exact rule, subdomain", "www.exact.example", ActionNone},
		{"below rule, base name", "below.example", ActionNone},
		{"below rule, subdomain", "a.b.below.example", ActionNoData},
		{"both, base name", "both.example", ActionNXDomain},
		{"both, subdomain", "www.both.example", ActionNoData},
		{"per-rule action on a prefix", "192.0.2.1", ActionRefuse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if v := p.Explain(tt.x); v.Action != tt.want {
				t.Errorf("Explain(%q).Action = %v, want %v", tt.x, v.Action, tt.want)
			}
		})
	}
}

func TestPolicyRulesOrder(t *testing.T) {
	t.Parallel()
	p := newTestPolicy(t, src{name: "c.txt"}, src{name: "a.txt"}, src{name: "feeds/b.txt"})
	var names []string
	for _, r := range p.Rules() {
		names = append(names, r.Source().Name)
	}
	if got, want := strings.Join(names, " "), "a.txt c.txt feeds/b.txt"; got != want {
		t.Errorf("Rules() order = %q, want %q", got, want)
	}
}

func TestEmptyPolicy(t *testing.T) {
	t.Parallel()
	p := NewPolicy(Settings{}, nil)
	if v := p.CheckQuery(netip.Addr{}, []byte("evil.example")); v.Hit() {
		t.Errorf("empty policy hit: %+v", v)
	}
	if v := p.CheckAnswer(netip.Addr{}, &Answer{Targets: [][]byte{[]byte("a.example")}, Addrs: []netip.Addr{netip.IPv4Unspecified()}}); v.Hit() {
		t.Errorf("empty policy hit: %+v", v)
	}
	var v Verdict
	if v.Rule() != "" || v.Note() != "" || v.Hit() || v.Blocks() {
		t.Errorf("zero Verdict is not empty")
	}
}

// TestManySources checks lists beyond the 64 whose walk can stop early.
func TestManySources(t *testing.T) {
	t.Parallel()
	var srcs []src
	for i := range 70 {
		s := src{name: fmt.Sprintf("list%02d.txt", i), rules: []string{"x.example", fmt.Sprintf("only%d.example", i)}}
		if i == 0 || i == 66 {
			s.rules = append(s.rules, fmt.Sprintf("a.b.evil%d.example", i))
		}
		srcs = append(srcs, s)
	}
	p := newTestPolicy(t, srcs...)
	for _, tt := range []struct{ qname, list string }{
		{"w.a.b.evil0.example", "list00.txt"},
		{"w.a.b.evil66.example", "list66.txt"},
		{"only3.example", "list03.txt"},
		{"z.only69.example", "list69.txt"},
	} {
		if v := p.CheckQuery(netip.Addr{}, []byte(tt.qname)); v.Source == nil || v.Source.Name != tt.list {
			t.Errorf("CheckQuery(%q) = %+v, want a hit in %s", tt.qname, got(v), tt.list)
		}
	}
}
