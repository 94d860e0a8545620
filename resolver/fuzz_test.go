package resolver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sinkd/sinkd/sinkhole"
)

// fuzzUpstream answers every question with the message in reply (the
// fuzzer's second input), made into a reply to that question the way the
// upstream pool's checks guarantee: same ID, opcode and question. A reply
// that does not unpack is an upstream failure.
type fuzzUpstream struct{ reply *[]byte }

func (u fuzzUpstream) Exchange(_ context.Context, q *dns.Msg) (*dns.Msg, error) {
	m := new(dns.Msg)
	if err := m.Unpack(*u.reply); err != nil {
		return nil, errors.New("fuzz upstream: garbage")
	}
	m.Id, m.Response, m.Opcode = q.Id, true, q.Opcode
	m.Question = append([]dns.Question(nil), q.Question...)
	return m, nil
}

func (fuzzUpstream) Ready() bool { return true }

// FuzzHandle feeds arbitrary messages to the whole query pipeline (ACL,
// policy, cache, synthesized answers, and the slow path against an
// in-memory upstream whose answer is the second input). The handler must
// never panic, never answer a response or garbage without a header, and
// every reply must unpack with miekg/dns, be a response to the query's ID
// and opcode, echo its question (unless FORMERR), carry an OPT only if the
// query had one, fit the client's UDP limit, and leave the bytes before it
// in the output buffer alone.
func FuzzHandle(f *testing.F) {
	ups := fuzzUpstreamSeeds(f)
	for i, seed := range fuzzSeeds(f) {
		f.Add(seed, ups[i%len(ups)])
	}
	var upReply []byte
	cfg := DefaultConfig()
	cfg.Cache.Size = 64
	cfg.Access.RateLimit = 0 // the clock stands still: a limit would end every client's turn
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	s, err := New(cfg, fuzzUpstream{&upReply}, &countRecorder{}, prometheus.NewRegistry(),
		slog.New(slog.NewTextHandler(io.Discard, nil)), WithClock(func() time.Time { return now }))
	if err != nil {
		f.Fatal(err)
	}
	src := &sinkhole.Source{Name: "malware.txt", Action: sinkhole.ActionSinkhole}
	b := sinkhole.NewBuilder(src)
	b.AddDomain("evil.example", sinkhole.SyntaxPlain, "")
	b.AddPrefix(netip.MustParsePrefix("203.0.113.0/24"), "")
	nx := sinkhole.NewBuilder(&sinkhole.Source{Name: "nx.txt", Action: sinkhole.ActionNXDomain})
	nx.AddDomain("nx.example", sinkhole.SyntaxPlain, "")
	logged := sinkhole.NewBuilder(&sinkhole.Source{Name: "watch.txt", Action: sinkhole.ActionLog})
	logged.AddDomain("watch.example", sinkhole.SyntaxPlain, "")
	s.SetPolicy(sinkhole.NewPolicy(sinkhole.Settings{IPv4: netip.IPv4Unspecified(), IPv6: netip.IPv6Unspecified(), TTL: 60},
		[]*sinkhole.Rules{b.Build(), nx.Build(), logged.Build()}))

	// Every input starts from the same cache: one answer for
	// www.example.com A, so the cache-hit path runs without upstream.
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
	seedKey := appendKey(nil, &r.q)

	clients := []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:5300"),         // allowed, rate-limit exempt
		netip.MustParseAddrPort("[::ffff:10.0.0.7]:5300"), // allowed, v4-mapped
		netip.MustParseAddrPort("192.0.2.99:5300"),        // outside access.allow: REFUSED
	}
	prefix := []byte("prefix")
	f.Fuzz(func(t *testing.T, msg, upstream []byte) {
		upReply = upstream
		defer watchdog(10 * time.Second)()
		s.cache.lru.Purge()
		s.cache.add(s.cache.newEntry(seedKey, up, now))
		for _, client := range clients {
			for _, p := range []proto{protoUDP, protoTCP} {
				for _, slow := range []bool{false, true} {
					var r request
					out, st := s.handle(context.Background(), bytes.Clone(prefix), msg, client, p, slow, false, &r)
					s.inflight.Wait() // prefetches
					if !bytes.Equal(out[:len(prefix)], prefix) {
						t.Fatalf("the reply overwrote the output buffer before it: %q", out[:len(prefix)])
					}
					reply := out[len(prefix):]
					switch st {
					case statusSlow:
						if slow || len(reply) != 0 {
							t.Fatalf("status slow with slow=%v and a %d-byte reply", slow, len(reply))
						}
						continue
					case statusNone:
						if len(reply) != 0 {
							t.Fatalf("no-reply status with a %d-byte reply", len(reply))
						}
						continue
					}
					checkReply(t, msg, reply, p)
				}
			}
		}
	})
}

// watchdog turns a hang into a crash the fuzzer records: go test -fuzz
// has no time limit per input. Call the returned func when done.
func watchdog(d time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(d):
			buf := make([]byte, 1<<20)
			panic("input still running after " + d.String() + ":\n" + string(buf[:runtime.Stack(buf, true)]))
		}
	}()
	return func() { close(done) }
}

// checkReply asserts what every reply to msg must be.
func checkReply(t *testing.T, msg, reply []byte, p proto) {
	t.Helper()
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
	if opcode := int(msg[2]>>3) & 0xF; m.Opcode != opcode {
		t.Fatalf("reply opcode %d to a query of opcode %d", m.Opcode, opcode)
	} else if opcode != dns.OpcodeQuery && m.Rcode != dns.RcodeNotImplemented {
		t.Fatalf("opcode %d answered %s, want NOTIMP", opcode, dns.RcodeToString[m.Rcode])
	}
	opts := 0
	for _, rr := range m.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			opts++
		}
	}
	if opts > 1 {
		t.Fatalf("reply has %d OPT records:\n%v", opts, &m)
	}

	// The rest needs the query as miekg reads it; the handler may refuse
	// what miekg accepts (FORMERR), never the other way round.
	var q dns.Msg
	if q.Unpack(msg) != nil {
		return
	}
	if opts > 0 && q.IsEdns0() == nil {
		t.Fatalf("reply has an OPT record, the query had none:\n%v", &m)
	}
	if m.Rcode == dns.RcodeFormatError || q.Opcode != dns.OpcodeQuery {
		// Not read as a query: the question may be left out, never changed.
		if len(m.Question) > 0 && (len(q.Question) == 0 || m.Question[0] != q.Question[0]) {
			t.Fatalf("%s with question %v to a query asking %v", dns.RcodeToString[m.Rcode], m.Question, q.Question)
		}
		return
	}
	if len(q.Question) != 1 {
		t.Fatalf("%s to a query of %d questions", dns.RcodeToString[m.Rcode], len(q.Question))
	}
	if len(m.Question) != 1 || m.Question[0] != q.Question[0] {
		t.Fatalf("reply question %v, query asked %v", m.Question, q.Question[0])
	}
	if p == protoUDP {
		limit := plainUDPSize
		if o := q.IsEdns0(); o != nil {
			limit = min(max(int(o.UDPSize()), plainUDPSize), ednsSize)
		}
		if len(reply) > limit {
			t.Fatalf("UDP reply of %d bytes, client limit %d", len(reply), limit)
		}
	}
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
	for _, name := range []string{"www.example.com.", "www.evil.example.", "a.b.c.d.e.f.example.", ".", "nx.example.", "Watch.Example."} {
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
	m = new(dns.Msg)
	m.SetQuestion("big.example.", dns.TypeTXT)
	m.SetEdns0(600, false)
	add(m)
	return append(out, []byte{}, []byte{0, 1, 0, 0, 0, 1}, make([]byte, 12))
}

// fuzzUpstreamSeeds are upstream answers: plain, a CNAME to a listed name,
// an address in a listed range, NXDOMAIN with SOA, one too large for UDP,
// HTTPS hints, and garbage.
func fuzzUpstreamSeeds(f *testing.F) [][]byte {
	var out [][]byte
	add := func(rcode int, rrs ...string) {
		m := new(dns.Msg)
		m.SetQuestion("q.example.", dns.TypeA)
		m.Response, m.Rcode = true, rcode
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				f.Fatal(err)
			}
			if rr.Header().Rrtype == dns.TypeSOA {
				m.Ns = append(m.Ns, rr)
			} else {
				m.Answer = append(m.Answer, rr)
			}
		}
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	add(dns.RcodeSuccess, "q.example. 300 IN A 192.0.2.1")
	add(dns.RcodeSuccess, "q.example. 300 IN CNAME cdn.evil.example.", "cdn.evil.example. 60 IN A 192.0.2.2")
	add(dns.RcodeSuccess, "q.example. 300 IN AAAA 2001:db8::1", "q.example. 5 IN A 203.0.113.9")
	add(dns.RcodeNameError, "example. 900 IN SOA ns.example. h.example. 1 3600 600 86400 300")
	big := []string{}
	for range 12 {
		big = append(big, `q.example. 60 IN TXT "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"`)
	}
	add(dns.RcodeSuccess, big...)
	add(dns.RcodeSuccess, `q.example. 60 IN HTTPS 1 . alpn=h2 ipv4hint=203.0.113.7 ipv6hint=2001:db8::7`)
	add(dns.RcodeServerFailure)
	return append(out, []byte("garbage"))
}
