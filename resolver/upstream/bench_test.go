package upstream

import (
	"testing"
)

// BenchmarkExchange measures one forwarded query against a loopback fake
// upstream per transport: the slow path of a cache miss, the fake's own
// cost (a miekg dns.Server) included.
func BenchmarkExchange(b *testing.B) {
	for _, bc := range []struct {
		name   string
		server func(b *testing.B) string
	}{
		{"udp", func(b *testing.B) string { return startUDP(b, answer("192.0.2.1")) }},
		{"tcp", func(b *testing.B) string { return "tcp://" + startTCP(b, answer("192.0.2.1")) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p, err := New(Config{Servers: []string{bc.server(b)}}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = p.Close() })
			q := question("bench.example.", 1)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := p.Exchange(b.Context(), q); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkCheckReply measures the anti-spoofing check of one reply.
func BenchmarkCheckReply(b *testing.B) {
	q := question("www.example.org.", 7)
	query, _ := q.Pack()
	r, _ := reply(q, "192.0.2.1").Pack()
	b.ReportAllocs()
	for b.Loop() {
		if err := checkReply(query, r); err != nil {
			b.Fatal(err)
		}
	}
}
