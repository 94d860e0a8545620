package main

import (
	"hash/fnv"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
)

// upstreamAnswer is the fake upstream's A record for name (lower-case,
// with the final dot): an address in 198.18.0.0/15 and a TTL of 30 s to
// 10 min, both from a hash of the name, so the load can check every
// answer and cached entries expire at different times.
func upstreamAnswer(name string) (netip.Addr, uint32) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	s := h.Sum32()
	return netip.AddrFrom4([4]byte{198, 18 + byte(s>>16&1), byte(s >> 8), byte(s)}), 30 + s%571
}

// upstream is the fake upstream on 127.0.0.1: an A record for every A
// question (upstreamAnswer), NODATA for anything else.
type upstream struct {
	addr  string
	srv   *dns.Server
	asked atomic.Int64 // A questions answered
}

func startUpstream() (*upstream, error) {
	u := &upstream{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
			q := r.Question[0]
			a, ttl := upstreamAnswer(strings.ToLower(q.Name))
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
				A:   a.AsSlice(),
			})
			u.asked.Add(1)
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	// As deep a queue as the load's sockets: a burst the scheduler delays
	// this process through is answered late, not dropped here.
	_ = pc.(*net.UDPConn).SetReadBuffer(4 << 20)
	ready := make(chan struct{})
	u.srv = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(ready) }}
	go func() { _ = u.srv.ActivateAndServe() }()
	<-ready
	u.addr = pc.LocalAddr().String()
	return u, nil
}

func (u *upstream) stop() { _ = u.srv.Shutdown() }
