package sinkhole

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// question packs a question section as a client would send it.
func question(t testing.TB, name string, qtype uint16) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	wire, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return wire[12:]
}

func TestAppendReply(t *testing.T) {
	t.Parallel()
	settings := Settings{
		IPv4:   netip.MustParseAddr("192.0.2.53"),
		IPv6:   netip.MustParseAddr("2001:db8::53"),
		TTL:    300,
		Action: ActionSinkhole,
	}
	const soa = "WWW.Evil.Example.\t300\tIN\tSOA\tsinkd.invalid. hostmaster.sinkd.invalid. 1 3600 600 86400 300"
	tests := []struct {
		name      string
		action    Action
		qtype     uint16
		wantRcode int
		wantAns   string // the answer section, one record a line, "" none
		wantNs    string
	}{
		{"sinkhole A", ActionSinkhole, dns.TypeA, dns.RcodeSuccess, "WWW.Evil.Example.\t300\tIN\tA\t192.0.2.53", ""},
		{"sinkhole AAAA", ActionSinkhole, dns.TypeAAAA, dns.RcodeSuccess, "WWW.Evil.Example.\t300\tIN\tAAAA\t2001:db8::53", ""},
		{"sinkhole MX is NODATA", ActionSinkhole, dns.TypeMX, dns.RcodeSuccess, "", soa},
		{"sinkhole HTTPS is NODATA", ActionSinkhole, dns.TypeHTTPS, dns.RcodeSuccess, "", soa},
		{"nxdomain A", ActionNXDomain, dns.TypeA, dns.RcodeNameError, "", soa},
		{"nxdomain AAAA", ActionNXDomain, dns.TypeAAAA, dns.RcodeNameError, "", soa},
		{"nxdomain MX", ActionNXDomain, dns.TypeMX, dns.RcodeNameError, "", soa},
		{"nxdomain HTTPS", ActionNXDomain, dns.TypeHTTPS, dns.RcodeNameError, "", soa},
		{"nodata A", ActionNoData, dns.TypeA, dns.RcodeSuccess, "", soa},
		{"nodata AAAA", ActionNoData, dns.TypeAAAA, dns.RcodeSuccess, "", soa},
		{"nodata MX", ActionNoData, dns.TypeMX, dns.RcodeSuccess, "", soa},
		{"nodata HTTPS", ActionNoData, dns.TypeHTTPS, dns.RcodeSuccess, "", soa},
		{"refuse A", ActionRefuse, dns.TypeA, dns.RcodeRefused, "", ""},
		{"refuse AAAA", ActionRefuse, dns.TypeAAAA, dns.RcodeRefused, "", ""},
		{"refuse MX", ActionRefuse, dns.TypeMX, dns.RcodeRefused, "", ""},
		{"refuse HTTPS", ActionRefuse, dns.TypeHTTPS, dns.RcodeRefused, "", ""},
	}
	for _, tt := range tests {
		for _, edns := range []struct {
			name    string
			on, do  bool
			rd, cd  bool
			queryID uint16
		}{
			{"no edns", false, false, true, false, 0x1234},
			{"edns", true, false, false, true, 0xbeef},
			{"edns do", true, true, true, true, 0},
		} {
			t.Run(tt.name+"/"+edns.name, func(t *testing.T) {
				t.Parallel()
				p := newTestPolicy(t, src{name: "feeds/urlhaus.txt", action: tt.action, rules: []string{"evil.example"}})
				p.settings = settings
				v := p.CheckQuery(netip.Addr{}, []byte("www.evil.example"))
				q := &Query{
					ID: edns.queryID, RD: edns.rd, CD: edns.cd,
					Question: question(t, "WWW.Evil.Example.", tt.qtype), QType: tt.qtype,
					EDNS: edns.on, DO: edns.do,
				}
				prefix := []byte("keep")
				wire := p.AppendReply(prefix, q, &v)
				if string(wire[:4]) != "keep" {
					t.Fatalf("AppendReply overwrote dst")
				}
				m := new(dns.Msg)
				if err := m.Unpack(wire[4:]); err != nil {
					t.Fatalf("Unpack: %v\n% x", err, wire[4:])
				}
				if m.Id != q.ID || !m.Response || m.Opcode != dns.OpcodeQuery || m.Authoritative ||
					m.Truncated || !m.RecursionAvailable || m.RecursionDesired != q.RD ||
					m.CheckingDisabled != q.CD || m.AuthenticatedData || m.Zero {
					t.Errorf("header = %+v", m.MsgHdr)
				}
				if m.Rcode != tt.wantRcode {
					t.Errorf("rcode = %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tt.wantRcode])
				}
				if len(m.Question) != 1 || m.Question[0].Name != "WWW.Evil.Example." ||
					m.Question[0].Qtype != tt.qtype || m.Question[0].Qclass != dns.ClassINET {
					t.Errorf("question = %v", m.Question)
				}
				if got := rrs(m.Answer); got != tt.wantAns {
					t.Errorf("answer = %q, want %q", got, tt.wantAns)
				}
				if got := rrs(m.Ns); got != tt.wantNs {
					t.Errorf("authority = %q, want %q", got, tt.wantNs)
				}
				opt := m.IsEdns0()
				if !edns.on {
					if len(m.Extra) != 0 {
						t.Errorf("additional without EDNS: %v", m.Extra)
					}
					return
				}
				if len(m.Extra) != 1 || opt == nil {
					t.Fatalf("additional = %v, want one OPT", m.Extra)
				}
				if opt.UDPSize() != 1232 || opt.Do() != edns.do || opt.Version() != 0 || opt.ExtendedRcode() != 0 {
					t.Errorf("OPT = %v", opt)
				}
				if len(opt.Option) != 1 {
					t.Fatalf("OPT options = %v", opt.Option)
				}
				ede, ok := opt.Option[0].(*dns.EDNS0_EDE)
				if !ok || ede.InfoCode != dns.ExtendedErrorCodeBlocked || ede.ExtraText != "blocked by feeds/urlhaus.txt" {
					t.Errorf("EDE = %#v", opt.Option[0])
				}
			})
		}
	}
}

func rrs(rr []dns.RR) string {
	var s []string
	for _, r := range rr {
		s = append(s, r.String())
	}
	return strings.Join(s, "\n")
}

func TestAppendReplyNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		action Action
		allow  bool
	}{
		{"drop", ActionDrop, false},
		{"log", ActionLog, false},
		{"allowed", ActionSinkhole, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newTestPolicy(t, src{name: "a.txt", action: tt.action, allow: tt.allow, rules: []string{"evil.example"}})
			v := p.CheckQuery(netip.Addr{}, []byte("evil.example"))
			if !v.Hit() {
				t.Fatal("no hit")
			}
			q := &Query{ID: 1, Question: question(t, "evil.example.", dns.TypeA), QType: dns.TypeA, EDNS: true}
			if got := p.AppendReply([]byte("x"), q, &v); string(got) != "x" {
				t.Errorf("AppendReply = %q, want dst unchanged", got)
			}
		})
	}
	var zero Verdict
	p := NewPolicy(Settings{}, nil)
	if got := p.AppendReply(nil, &Query{}, &zero); got != nil {
		t.Errorf("AppendReply(zero Verdict) = %q", got)
	}
}

// TestAppendReplyLongListName checks that an overlong list name is cut so
// the EDE text stays within 255 bytes and the reply still parses.
func TestAppendReplyLongListName(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("d/", 200) + "list.txt"
	p := newTestPolicy(t, src{name: name, rules: []string{"evil.example"}})
	v := p.CheckQuery(netip.Addr{}, []byte("evil.example"))
	q := &Query{ID: 7, Question: question(t, "evil.example.", dns.TypeA), QType: dns.TypeA, EDNS: true}
	m := new(dns.Msg)
	if err := m.Unpack(p.AppendReply(nil, q, &v)); err != nil {
		t.Fatal(err)
	}
	ede := m.IsEdns0().Option[0].(*dns.EDNS0_EDE)
	if want := ("blocked by " + name)[:255]; ede.ExtraText != want {
		t.Errorf("EDE text = %q (%d bytes), want %d bytes", ede.ExtraText, len(ede.ExtraText), len(want))
	}
}

func TestActionNames(t *testing.T) {
	t.Parallel()
	for _, a := range []Action{ActionSinkhole, ActionNXDomain, ActionNoData, ActionRefuse, ActionDrop, ActionLog} {
		got, err := ParseAction(a.String())
		if err != nil || got != a {
			t.Errorf("ParseAction(%q) = %v, %v; want %v", a.String(), got, err, a)
		}
	}
	tests := []struct {
		name  string
		in    string
		want  Action
		isErr bool
	}{
		{"sinkhole", "sinkhole", ActionSinkhole, false},
		{"nxdomain", "nxdomain", ActionNXDomain, false},
		{"nodata", "nodata", ActionNoData, false},
		{"refuse", "refuse", ActionRefuse, false},
		{"drop", "drop", ActionDrop, false},
		{"log", "log", ActionLog, false},
		{"empty", "", ActionNone, true},
		{"unknown", "block", ActionNone, true},
		{"upper case", "NXDOMAIN", ActionNone, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseAction(tt.in)
			if got != tt.want || (err != nil) != tt.isErr {
				t.Errorf("ParseAction(%q) = %v, %v", tt.in, got, err)
			}
			if tt.isErr && !errors.Is(err, ErrUnknownAction) {
				t.Errorf("error %v is not ErrUnknownAction", err)
			}
		})
	}
	if got := Action(99).String(); got != "action(99)" {
		t.Errorf("Action(99) = %q", got)
	}
	triggers := map[Trigger]string{TriggerNone: "", TriggerQName: "qname", TriggerCNAME: "cname", TriggerIP: "ip", TriggerClient: "client", 9: "trigger(9)"}
	for tr, want := range triggers {
		if got := tr.String(); got != want {
			t.Errorf("Trigger(%d).String() = %q, want %q", tr, got, want)
		}
	}
}
