package resolver

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sinkd/sinkd/sinkhole"
)

// benchServer is a Server with no sockets whose cache holds www.example.com A.
func benchServer(b *testing.B) (*Server, []byte) {
	b.Helper()
	cfg := DefaultConfig()
	s, err := New(cfg, clientUpstream{}, nil, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	up := new(dns.Msg)
	up.SetQuestion("www.example.com.", dns.TypeA)
	up.Response, up.RecursionAvailable = true, true
	rr, _ := dns.NewRR("www.example.com. 3600 IN A 192.0.2.1")
	up.Answer = []dns.RR{rr}

	q := new(dns.Msg)
	q.SetQuestion("www.example.com.", dns.TypeA)
	q.SetEdns0(1232, false)
	msg, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	var r request
	if err := r.q.parseHeader(msg); err != nil {
		b.Fatal(err)
	}
	if err := r.q.parseQuestion(msg); err != nil {
		b.Fatal(err)
	}
	key := appendKey(nil, &r.q)
	s.cache.add(s.cache.newEntry(key, up, s.now()))
	return s, msg
}

// BenchmarkServeCached is one query through the wire-level pipeline, answered
// from the cache: what the UDP loop does per packet.
func BenchmarkServeCached(b *testing.B) {
	s, msg := benchServer(b)
	benchHandle(b, s, msg)
}

// benchHandle runs msg through the pipeline once per iteration, as the
// UDP loop does per packet, and fails on a missing reply.
func benchHandle(b *testing.B, s *Server, msg []byte) {
	b.Helper()
	client := netip.MustParseAddrPort("127.0.0.1:40000")
	out := make([]byte, 0, 65535)
	var r request
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		reply, st := s.handle(ctx, out[:0], msg, client, protoUDP, false, false, &r)
		if st != statusReply || len(reply) < headerLen {
			b.Fatal("no reply")
		}
	}
}

// countRecorder stands in for the evidence log: it takes each hit and keeps
// only a count, so the benchmark includes building the hit record.
type countRecorder struct{ n int }

func (c *countRecorder) RecordHit(*sinkhole.Hit) { c.n++ }

// BenchmarkServeBlocked is one query through the wire-level pipeline whose
// name is listed: policy check, synthesized answer, hit handed to the
// recorder. Compare with BenchmarkServeCached.
func BenchmarkServeBlocked(b *testing.B) {
	s, _ := benchServer(b)
	rec := &countRecorder{}
	s.rec = rec
	src := &sinkhole.Source{Name: "malware.txt", SHA256: "00", Action: sinkhole.ActionSinkhole}
	bl := sinkhole.NewBuilder(src)
	bl.AddDomain("evil.example", sinkhole.SyntaxPlain, "")
	s.SetPolicy(sinkhole.NewPolicy(sinkhole.Settings{IPv4: netip.IPv4Unspecified(), IPv6: netip.IPv6Unspecified(), TTL: 60}, []*sinkhole.Rules{bl.Build()}))

	q := new(dns.Msg)
	q.SetQuestion("www.evil.example.", dns.TypeA)
	q.SetEdns0(1232, false)
	msg, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	benchHandle(b, s, msg)
	if rec.n == 0 {
		b.Fatal("no hit recorded")
	}
}
