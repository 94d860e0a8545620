package resolver

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sinkd/sinkd/sinkhole"
)

// FuzzHandle feeds arbitrary messages to the query pipeline's fast path
// (policy, cache, synthesized answers; no upstream): it must never panic,
// never answer a response or garbage without a header, and every reply
// must be a well-formed DNS response to the query's ID.
func FuzzHandle(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	cfg := DefaultConfig()
	s, err := New(cfg, clientUpstream{}, &countRecorder{}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	src := &sinkhole.Source{Name: "malware.txt", Action: sinkhole.ActionSinkhole}
	b := sinkhole.NewBuilder(src)
	b.AddDomain("evil.example", sinkhole.SyntaxPlain, "")
	b.AddPrefix(netip.MustParsePrefix("203.0.113.0/24"), "")
	s.SetPolicy(sinkhole.NewPolicy(sinkhole.Settings{IPv4: netip.IPv4Unspecified(), IPv6: netip.IPv6Unspecified(), TTL: 60}, []*sinkhole.Rules{b.Build()}))
	// Cache an answer for www.example.com A so the cache path runs too.
	up := new(dns.Msg)
	up.SetQuestion("www.example.com.", dns.TypeA)
	up.Response = true
	rr, _ := dns.NewRR("www.example.com. 300 IN A 192.0.2.1")
	up.Answer = []dns.RR{rr}
	var r request
	qm := new(dns.Msg)
	qm.SetQuestion("www.example.com.", dns.TypeA)
	wire, _ := qm.Pack()
	if err := r.q.parseHeader(wire); err != nil {
		f.Fatal(err)
	}
	if err := r.q.parseQuestion(wire); err != nil {
		f.Fatal(err)
	}
	s.cache.add(s.cache.newEntry(appendKey(nil, &r.q), up, s.now()))

	client := netip.MustParseAddrPort("127.0.0.1:5300")
	f.Fuzz(func(t *testing.T, msg []byte) {
		for _, p := range []proto{protoUDP, protoTCP} {
			var r request
			reply, st := s.handle(context.Background(), nil, msg, client, p, false, false, &r)
			if st != statusReply {
				continue
			}
			if len(msg) < headerLen || msg[2]&0x80 != 0 {
				t.Fatalf("replied to a message that is not a query: % x", msg)
			}
			var m dns.Msg
			if err := m.Unpack(reply); err != nil {
				t.Fatalf("malformed reply %v to % x:\n% x", err, msg, reply)
			}
			if !m.Response || m.Id != binary.BigEndian.Uint16(msg) {
				t.Fatalf("reply is not a response to the query's ID: %v", m.MsgHdr)
			}
			if p == protoUDP && len(reply) > ednsSize {
				t.Fatalf("UDP reply of %d bytes", len(reply))
			}
		}
	})
}

func fuzzSeeds(f *testing.F) [][]byte {
	var out [][]byte
	add := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	for _, name := range []string{"www.example.com.", "www.evil.example.", "a.b.c.d.e.f.example.", "."} {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeANY, dns.TypeHTTPS, dns.TypeMX} {
			m := new(dns.Msg)
			m.SetQuestion(name, qt)
			add(m)
			m.SetEdns0(4096, true)
			add(m)
		}
	}
	m := new(dns.Msg)
	m.SetQuestion("www.example.com.", dns.TypeSOA)
	m.Opcode = dns.OpcodeNotify
	add(m)
	m = new(dns.Msg)
	m.SetQuestion("version.bind.", dns.TypeTXT)
	m.Question[0].Qclass = dns.ClassCHAOS
	add(m)
	return append(out, []byte{}, []byte{0, 1, 0, 0, 0, 1}, make([]byte, 12))
}
