package resolver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sinkd/sinkd/resolver/upstream"
)

// Fault injection: the real server and the real upstream pool against fake
// upstreams on 127.0.0.1 that break DNS in every way we could think of. A
// real dns.Client asks, with a deadline of the upstream timeout plus a
// margin, and checks what a user sees. What the pool does with each broken
// reply in isolation is proven in package upstream; here the question is
// whether sinkd keeps answering.

const (
	// faultTimeout is upstream_timeout in this suite.
	faultTimeout = 250 * time.Millisecond
	// faultMargin is the scheduling slack a reply may take past the
	// timeout (race detector, two shared cores).
	faultMargin = 500 * time.Millisecond

	faultIP = "192.0.2.1"  // the fake's genuine answer
	goodIP  = "192.0.2.2"  // the healthy second upstream's answer
	bogusIP = "192.0.2.66" // spoofed and broken replies
)

// EDE texts of upstream failures (handler.go), the closed set a client sees.
const (
	faultTextTimeout  = "upstream timed out"
	faultTextFailed   = "upstream failed"
	faultTextUnusable = "upstream answer unusable"
)

// faultBehaviour is how a broken fake upstream replies. reply gets the
// query, its bytes, whether it came over TCP, and k, the number of queries
// received while broken (from 1). Over UDP each element of out is one
// datagram; over TCP the elements are written as they are (the behaviour
// frames them, or not), and hangUp closes the connection afterwards.
type faultBehaviour struct {
	reply func(q *dns.Msg, raw []byte, tcp bool, k int) (out [][]byte, hangUp bool)
	delay time.Duration              // before the first element
	late  func(tcp bool, k int) bool // if set, delay only the replies to these queries
	gap   time.Duration              // before each further element
	dead  bool                       // broken: nothing listens any more
}

// faultPlan is what the fake sends for one query.
type faultPlan struct {
	out        [][]byte
	hangUp     bool
	delay, gap time.Duration
}

// faultUpstream is a raw DNS server on 127.0.0.1, UDP and TCP on one port.
// Until broken it answers A faultIP with TTL 10; broken, its behaviour
// decides.
type faultUpstream struct {
	addr    string
	b       faultBehaviour
	broken  atomic.Bool
	seen    atomic.Int32 // queries received while broken
	total   atomic.Int32 // queries received
	sending atomic.Int32 // delayed replies not sent yet
	done    chan struct{}
	wg      sync.WaitGroup

	mu    sync.Mutex
	pc    net.PacketConn
	ln    net.Listener
	conns map[net.Conn]struct{}
}

// startFaultUpstream starts a fake upstream with behaviour b, broken from
// the start or not, and stops it (every goroutine) when the test ends.
func startFaultUpstream(t *testing.T, b faultBehaviour, broken bool) *faultUpstream {
	t.Helper()
	f := &faultUpstream{b: b, done: make(chan struct{}), conns: make(map[net.Conn]struct{})}
	for try := 0; f.pc == nil; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil { // the UDP port is taken: pick again
			_ = ln.Close()
			if try == 20 {
				t.Fatal("no port free for both UDP and TCP")
			}
			continue
		}
		f.addr, f.pc, f.ln = ln.Addr().String(), pc, ln
	}
	f.broken.Store(broken)
	f.wg.Add(2)
	go f.serveUDP(f.pc)
	go f.serveTCP(f.ln)
	t.Cleanup(func() {
		close(f.done)
		f.kill()
		f.wg.Wait()
	})
	if broken && b.dead {
		f.kill()
	}
	return f
}

// breakNow switches the fake to its broken behaviour.
func (f *faultUpstream) breakNow() {
	f.broken.Store(true)
	if f.b.dead {
		f.kill()
	}
}

// heal switches it back to answering (not for dead fakes).
func (f *faultUpstream) heal() { f.broken.Store(false) }

// kill closes the sockets and connections.
func (f *faultUpstream) kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	_ = f.pc.Close()
	_ = f.ln.Close()
	for c := range f.conns {
		_ = c.Close()
	}
}

func (f *faultUpstream) serveUDP(pc net.PacketConn) {
	defer f.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		p := f.replies(bytes.Clone(buf[:n]), false)
		write := func(b []byte) error { _, err := pc.WriteTo(b, from); return err }
		if p.delay == 0 && p.gap == 0 {
			f.send(p, write)
			continue
		}
		f.sending.Add(1)
		f.wg.Go(func() { defer f.sending.Add(-1); f.send(p, write) })
	}
}

func (f *faultUpstream) serveTCP(ln net.Listener) {
	defer f.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns[c] = struct{}{}
		f.mu.Unlock()
		f.wg.Go(func() {
			defer func() {
				f.mu.Lock()
				delete(f.conns, c)
				f.mu.Unlock()
				_ = c.Close()
			}()
			var wmu sync.Mutex // late replies are written by goroutines of their own
			write := func(b []byte) error {
				wmu.Lock()
				defer wmu.Unlock()
				_, err := c.Write(b)
				return err
			}
			for {
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				raw := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, raw); err != nil {
					return
				}
				p := f.replies(raw, true)
				if p.hangUp || p.delay == 0 && p.gap == 0 {
					f.send(p, write)
					if p.hangUp {
						return
					}
					continue
				}
				f.sending.Add(1)
				f.wg.Go(func() { defer f.sending.Add(-1); f.send(p, write) })
			}
		})
	}
}

// replies decides what to send for one query.
func (f *faultUpstream) replies(raw []byte, tcp bool) faultPlan {
	f.total.Add(1)
	q := new(dns.Msg)
	if q.Unpack(raw) != nil || len(q.Question) != 1 {
		return faultPlan{}
	}
	if !f.broken.Load() {
		return faultPlan{out: [][]byte{faultFrame(tcp, faultPack(faultAnswer(q, faultIP)))}}
	}
	k := int(f.seen.Add(1))
	p := faultPlan{delay: f.b.delay, gap: f.b.gap}
	if f.b.late != nil && !f.b.late(tcp, k) {
		p.delay = 0
	}
	p.out, p.hangUp = f.b.reply(q, raw, tcp, k)
	return p
}

// send writes p's messages with its delay and gaps; it gives up when the
// fake stops.
func (f *faultUpstream) send(p faultPlan, write func([]byte) error) {
	wait := p.delay
	for _, b := range p.out {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-f.done:
				t.Stop()
				return
			}
		}
		if write(b) != nil {
			return
		}
		wait = p.gap
	}
}

// faultAnswer is the reply to q with A ip, TTL 10.
func faultAnswer(q *dns.Msg, ip string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Answer = []dns.RR{&dns.A{
		Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 10},
		A:   net.ParseIP(ip),
	}}
	return m
}

func faultPack(m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		panic(err) // test messages always pack
	}
	return b
}

// faultFrame adds the TCP length prefix when tcp.
func faultFrame(tcp bool, b []byte) []byte {
	if !tcp {
		return b
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

// faultTC is a truncated (TC) reply to q: header and question.
func faultTC(q *dns.Msg) []byte {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Truncated = true
	return faultPack(m)
}

// The broken replies, each a list of messages (unframed).

func faultWrongID(q *dns.Msg) [][]byte {
	var out [][]byte
	for _, delta := range []uint16{1, 0x100, 0x8000} {
		m := faultAnswer(q, bogusIP)
		m.Id = q.Id + delta
		out = append(out, faultPack(m))
	}
	return out
}

func faultWrongQuestion(q *dns.Msg) [][]byte {
	name := faultAnswer(q, bogusIP)
	name.Question[0].Name = "x" + q.Question[0].Name
	qtype := faultAnswer(q, bogusIP)
	qtype.Question[0].Qtype = dns.TypeAAAA
	class := faultAnswer(q, bogusIP)
	class.Question[0].Qclass = dns.ClassCHAOS
	none := faultAnswer(q, bogusIP)
	none.Question = nil
	return [][]byte{faultPack(name), faultPack(qtype), faultPack(class), faultPack(none)}
}

// faultQEnd is the offset just past the question of a message to q.
func faultQEnd(q *dns.Msg) int { return headerLen + len(q.Question[0].Name) + 1 + 4 }

// faultGarbage is random bytes, and messages that start right (ID, QR,
// the question) and then go wrong.
func faultGarbage(q *dns.Msg, raw []byte, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 8))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	withID := func(b []byte) []byte { b[0], b[1] = raw[0], raw[1]; return b }
	good := faultPack(faultAnswer(q, bogusIP))
	qEnd := faultQEnd(q)
	// 0x80 starts a label of a reserved type: never a valid name.
	junkAfterQuestion := append(append(bytes.Clone(good[:qEnd]), 0x80), random(40)...)
	// The answer's name is a compression pointer to itself.
	pointerLoop := append(bytes.Clone(good[:qEnd]), 0xC0, byte(qEnd), 0, 1, 0, 1, 0, 0, 0, 10, 0, 4, 192, 0, 2, 66)
	return [][]byte{
		random(1),
		random(11),
		withID(random(12)),
		withID(random(700)),
		junkAfterQuestion,
		pointerLoop,
		good[:len(good)-3], // cut inside the answer's address
	}
}

// faultBig is a reply to q of exactly size bytes (at least 100 more than
// header and question): NULL records of up to 1 KB after the question (a
// type whose data miekg/dns copies as is: cheap to unpack under the race
// detector); n is their number.
func faultBig(q *dns.Msg, size int) (msg []byte, n int) {
	m := new(dns.Msg)
	m.SetReply(q)
	msg = faultPack(m)
	for rest := size - len(msg); rest > 0; n++ {
		rd := min(rest-12, 1024)
		if left := rest - 12 - rd; left > 0 && left < 13 {
			rd = rest - 12 // no room for another record
		}
		msg = append(msg, 0xC0, headerLen, 0, byte(dns.TypeNULL), 0, 1, 0, 0, 0, 60, byte(rd>>8), byte(rd))
		msg = append(msg, bytes.Repeat([]byte{byte('a' + n%26)}, rd)...)
		rest = size - len(msg)
	}
	binary.BigEndian.PutUint16(msg[6:], uint16(n))
	return msg, n
}

// Behaviours used on their own as well as in faultFaults.
var (
	faultServFail = faultBehaviour{reply: func(q *dns.Msg, _ []byte, tcp bool, _ int) ([][]byte, bool) {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeServerFailure)
		return [][]byte{faultFrame(tcp, faultPack(m))}, false
	}}
	// faultFlapping is silent for every odd query while broken and
	// answers every even one.
	faultFlapping = faultBehaviour{reply: func(q *dns.Msg, _ []byte, tcp bool, k int) ([][]byte, bool) {
		if k%2 == 1 {
			return nil, false
		}
		return [][]byte{faultFrame(tcp, faultPack(faultAnswer(q, faultIP)))}, false
	}}
)

// faultFaults are the broken upstreams every scenario runs against.
// wantTimeout: the failure shows only when upstream_timeout passes;
// otherwise sinkd sees it at once.
var faultFaults = []struct {
	name        string
	b           faultBehaviour
	wantTimeout bool
	noHeal      bool
}{
	{name: "closed port", b: faultBehaviour{dead: true}, noHeal: true},
	{name: "blackhole", b: faultBehaviour{reply: func(*dns.Msg, []byte, bool, int) ([][]byte, bool) { return nil, false }}, wantTimeout: true},
	{name: "slow past the timeout", b: faultBehaviour{delay: 4 * faultTimeout, reply: func(q *dns.Msg, _ []byte, tcp bool, _ int) ([][]byte, bool) {
		return [][]byte{faultFrame(tcp, faultPack(faultAnswer(q, bogusIP)))}, false
	}}, wantTimeout: true},
	{name: "garbage", b: faultBehaviour{reply: func(q *dns.Msg, raw []byte, tcp bool, k int) ([][]byte, bool) {
		return faultGarbage(q, raw, uint64(k)), false
	}}, wantTimeout: true},
	{name: "wrong IDs", b: faultBehaviour{reply: func(q *dns.Msg, _ []byte, _ bool, _ int) ([][]byte, bool) {
		return faultWrongID(q), false
	}}, wantTimeout: true},
	{name: "wrong questions", b: faultBehaviour{reply: func(q *dns.Msg, _ []byte, _ bool, _ int) ([][]byte, bool) {
		return faultWrongQuestion(q), false
	}}, wantTimeout: true},
	{name: "TC, then TCP silent", b: faultBehaviour{reply: func(q *dns.Msg, _ []byte, tcp bool, _ int) ([][]byte, bool) {
		if !tcp {
			return [][]byte{faultTC(q)}, false
		}
		return nil, false // reads the query, never answers
	}}, wantTimeout: true},
	{name: "TC, then TCP cut mid-message", b: faultBehaviour{reply: func(q *dns.Msg, _ []byte, tcp bool, _ int) ([][]byte, bool) {
		if !tcp {
			return [][]byte{faultTC(q)}, false
		}
		b := faultFrame(true, faultPack(faultAnswer(q, bogusIP)))
		return [][]byte{b[:len(b)/2]}, true
	}}},
	{name: "TC, then TCP one byte of length prefix", b: faultBehaviour{reply: func(q *dns.Msg, _ []byte, tcp bool, _ int) ([][]byte, bool) {
		if !tcp {
			return [][]byte{faultTC(q)}, false
		}
		return [][]byte{{0}}, true
	}}},
	{name: "TC, then TCP length prefix covering only the question", b: faultBehaviour{reply: func(q *dns.Msg, _ []byte, tcp bool, _ int) ([][]byte, bool) {
		if !tcp {
			return [][]byte{faultTC(q)}, false
		}
		m := faultPack(faultAnswer(q, bogusIP))
		return [][]byte{binary.BigEndian.AppendUint16(nil, uint16(faultQEnd(q))), m}, false
	}}},
	{name: "TC, then TCP length prefix short by a few bytes", b: faultBehaviour{reply: func(q *dns.Msg, _ []byte, tcp bool, _ int) ([][]byte, bool) {
		if !tcp {
			return [][]byte{faultTC(q)}, false
		}
		m := faultPack(faultAnswer(q, bogusIP))
		return [][]byte{binary.BigEndian.AppendUint16(nil, uint16(len(m)-3)), m}, false
	}}},
	{name: "SERVFAIL", b: faultServFail},
}

// startFaultServer runs a server whose upstream pool asks servers, both
// with upstream_timeout faultTimeout; the pool closes after the server.
func startFaultServer(t *testing.T, mod func(*Config), servers ...string) *testServer {
	t.Helper()
	return startFaultServerTimeout(t, faultTimeout, mod, servers...)
}

// startFaultServerTimeout is startFaultServer with another upstream_timeout.
func startFaultServerTimeout(t *testing.T, timeout time.Duration, mod func(*Config), servers ...string) *testServer {
	t.Helper()
	pool, err := upstream.New(upstream.Config{Servers: servers, Timeout: timeout}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	return startServer(t, pool, func(c *Config) {
		c.QueryTimeout = timeout
		if mod != nil {
			mod(c)
		}
	})
}

// faultAsk sends m over network and returns the reply, or an error when
// none arrives within the deadline d.
func faultAsk(ts *testServer, network string, m *dns.Msg, d time.Duration) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: d}
	start := time.Now()
	r, _, err := c.Exchange(m, ts.addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: no reply within %v (after %v): %w",
			network, m.Question[0].Name, c.Timeout, time.Since(start).Round(time.Millisecond), err)
	}
	return r, nil
}

// mustFaultAsk is faultAsk with the deadline of a user (the upstream
// timeout plus the margin) that fails the test.
func mustFaultAsk(t *testing.T, ts *testServer, network string, m *dns.Msg) *dns.Msg {
	t.Helper()
	r, err := faultAsk(ts, network, m, faultTimeout+faultMargin)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// faultQuery is an A query for name, with EDNS when edns.
func faultQuery(name string, edns bool) *dns.Msg {
	m := newQuery(name, dns.TypeA)
	if edns {
		m.SetEdns0(1232, false)
	}
	return m
}

// checkAnswer reports how r differs from NOERROR with A ip and ttl.
func checkAnswer(r *dns.Msg, ip string, ttl uint32) error {
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return fmt.Errorf("rcode %s with %d answers, want NOERROR with A %s", dns.RcodeToString[r.Rcode], len(r.Answer), ip)
	}
	a, ok := r.Answer[0].(*dns.A)
	if !ok || a.A.String() != ip || a.Hdr.Ttl != ttl {
		return fmt.Errorf("answer %v, want A %s TTL %d", r.Answer[0], ip, ttl)
	}
	return nil
}

// checkServFail reports how r differs from SERVFAIL with EDE code and
// text (with edns), or with no OPT at all (without).
func checkServFail(r *dns.Msg, edns bool, code uint16, text string) error {
	if r.Rcode != dns.RcodeServerFailure {
		return fmt.Errorf("rcode %s with answer %v, want SERVFAIL", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if !edns {
		if r.IsEdns0() != nil {
			return errors.New("OPT in the reply to a query without EDNS")
		}
		return nil
	}
	ede := edeOf(r)
	if ede == nil {
		return fmt.Errorf("no EDE in the SERVFAIL (OPT %v)", r.IsEdns0())
	}
	if ede.InfoCode != code || ede.ExtraText != text {
		return fmt.Errorf("EDE %d %q, want %d %q", ede.InfoCode, ede.ExtraText, code, text)
	}
	return nil
}

// TestFaultsFailover: with a healthy second upstream, every broken first
// one is answered around, within the timeout.
func TestFaultsFailover(t *testing.T) {
	t.Parallel()
	for _, tt := range faultFaults {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			broken := startFaultUpstream(t, tt.b, true)
			var n atomic.Int32
			good := startUpstream(t, answerA(&n, goodIP, 10))
			ts := startFaultServer(t, nil, broken.addr, good)
			for i, edns := range []bool{true, false} {
				r := mustFaultAsk(t, ts, "udp", faultQuery(fmt.Sprintf("failover%d.example.", i), edns))
				if err := checkAnswer(r, goodIP, 10); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestFaultsServeStale: a cached answer that expired is served (TTL 30,
// EDE 3 with EDNS) when the only upstream breaks, within the timeout.
func TestFaultsServeStale(t *testing.T) {
	t.Parallel()
	for _, tt := range faultFaults {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startFaultUpstream(t, tt.b, false)
			ts := startFaultServer(t, nil, f.addr)
			for _, edns := range []bool{true, false} {
				name := fmt.Sprintf("stale-edns-%v.example.", edns)
				if err := checkAnswer(mustFaultAsk(t, ts, "udp", faultQuery(name, edns)), faultIP, 10); err != nil {
					t.Fatalf("while healthy: %v", err)
				}
			}
			f.breakNow()
			ts.clk.advance(time.Minute)
			for _, edns := range []bool{true, false} {
				r := mustFaultAsk(t, ts, "udp", faultQuery(fmt.Sprintf("stale-edns-%v.example.", edns), edns))
				if err := checkAnswer(r, faultIP, staleTTL); err != nil {
					t.Errorf("edns=%v: %v", edns, err)
				}
				ede := edeOf(r)
				switch {
				case edns && (ede == nil || ede.InfoCode != dns.ExtendedErrorCodeStaleAnswer):
					t.Errorf("EDE %v, want 3 (Stale Answer)", ede)
				case !edns && r.IsEdns0() != nil:
					t.Error("OPT in the reply to a query without EDNS")
				}
			}
		})
	}
}

// TestFaultsServFail: with nothing to fall back on, the client gets
// SERVFAIL within the timeout, with an EDE saying why when it sent EDNS.
// The SERVFAIL is cached for 5 s (EDE 13), then upstream is asked again,
// and once it answers again, so does sinkd.
func TestFaultsServFail(t *testing.T) {
	t.Parallel()
	for _, tt := range faultFaults {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startFaultUpstream(t, tt.b, true)
			ts := startFaultServer(t, nil, f.addr)
			text := faultTextFailed
			if tt.wantTimeout {
				text = faultTextTimeout
			}
			r := mustFaultAsk(t, ts, "udp", faultQuery("plain.example.", false))
			if err := checkServFail(r, false, 0, ""); err != nil {
				t.Errorf("without EDNS: %v", err)
			}

			q := faultQuery("fail.example.", true)
			if err := checkServFail(mustFaultAsk(t, ts, "udp", q), true, dns.ExtendedErrorCodeNoReachableAuthority, text); err != nil {
				t.Errorf("first query: %v", err)
			}
			asked := f.total.Load()
			if err := checkServFail(mustFaultAsk(t, ts, "udp", q), true, dns.ExtendedErrorCodeCachedError, ""); err != nil {
				t.Errorf("within 5 s: %v", err)
			}
			if got := f.total.Load(); got != asked {
				t.Errorf("upstream asked again within 5 s of a SERVFAIL (%d queries, want %d)", got, asked)
			}

			ts.clk.advance(6 * time.Second)
			if err := checkServFail(mustFaultAsk(t, ts, "udp", q), true, dns.ExtendedErrorCodeNoReachableAuthority, text); err != nil {
				t.Errorf("after 6 s, upstream still broken: %v", err)
			}
			if f.total.Load() == asked && !tt.b.dead {
				t.Error("upstream not asked again after the SERVFAIL expired")
			}
			if tt.noHeal {
				return
			}
			f.heal()
			ts.clk.advance(6 * time.Second)
			if err := checkAnswer(mustFaultAsk(t, ts, "udp", q), faultIP, 10); err != nil {
				t.Errorf("after 6 s, upstream healed: %v", err)
			}
		})
	}
}

// TestFaultsGenuineReplyAfterBogusOnes: replies with a wrong ID, a wrong
// question or unparsable bytes do not end the wait; the genuine reply that
// comes after them within the deadline is used.
func TestFaultsGenuineReplyAfterBogusOnes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		tcp   bool // the bogus replies come over TCP, after a TC reply over UDP
		bogus func(q *dns.Msg, raw []byte) [][]byte
	}{
		{name: "udp: wrong IDs", bogus: func(q *dns.Msg, _ []byte) [][]byte { return faultWrongID(q) }},
		{name: "udp: wrong questions", bogus: func(q *dns.Msg, _ []byte) [][]byte { return faultWrongQuestion(q) }},
		{name: "udp: garbage", bogus: func(q *dns.Msg, raw []byte) [][]byte { return faultGarbage(q, raw, 1) }},
		{name: "tcp: wrong IDs", tcp: true, bogus: func(q *dns.Msg, _ []byte) [][]byte { return faultWrongID(q) }},
		{name: "tcp: wrong questions", tcp: true, bogus: func(q *dns.Msg, _ []byte) [][]byte { return faultWrongQuestion(q) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := startFaultUpstream(t, faultBehaviour{gap: 10 * time.Millisecond, reply: func(q *dns.Msg, raw []byte, tcp bool, _ int) ([][]byte, bool) {
				if tt.tcp && !tcp {
					return [][]byte{faultTC(q)}, false
				}
				var out [][]byte
				for _, b := range tt.bogus(q, raw) {
					out = append(out, faultFrame(tcp, b))
				}
				return append(out, faultFrame(tcp, faultPack(faultAnswer(q, faultIP)))), false
			}}, true)
			ts := startFaultServer(t, nil, f.addr)
			for i := range 2 { // the second over a reused TCP connection
				r := mustFaultAsk(t, ts, "udp", faultQuery(fmt.Sprintf("genuine%d.example.", i), true))
				if err := checkAnswer(r, faultIP, 10); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestFaultsOversized: a 65,000-byte UDP datagram is longer than sinkd
// reads (a waiting query holds 4 KiB, not 64): it stands for TC, the
// answer comes over TCP and is cached (TC to UDP clients, whole over
// TCP); a 65,535-byte TCP message cannot be
// relayed with our OPT: SERVFAIL, or the stale answer when there is one.
func TestFaultsOversized(t *testing.T) {
	t.Parallel()
	t.Run("udp datagram of 65000 bytes", func(t *testing.T) {
		t.Parallel()
		var records atomic.Int32
		f := startFaultUpstream(t, faultBehaviour{reply: func(q *dns.Msg, _ []byte, tcp bool, _ int) ([][]byte, bool) {
			m, n := faultBig(q, 65000)
			records.Store(int32(n))
			return [][]byte{faultFrame(tcp, m)}, false
		}}, true)
		ts := startFaultServer(t, nil, f.addr)
		for _, edns := range []bool{true, false} {
			m := faultQuery("big.example.", edns)
			m.Question[0].Qtype = dns.TypeNULL
			r := mustFaultAsk(t, ts, "udp", m)
			if r.Rcode != dns.RcodeSuccess || !r.Truncated || len(r.Answer) != 0 {
				t.Errorf("udp edns=%v: rcode %s TC=%v with %d answers, want NOERROR, TC, none",
					edns, dns.RcodeToString[r.Rcode], r.Truncated, len(r.Answer))
			}
		}
		m := newQuery("big.example.", dns.TypeNULL)
		r := mustFaultAsk(t, ts, "tcp", m)
		if r.Rcode != dns.RcodeSuccess || r.Truncated || len(r.Answer) != int(records.Load()) {
			t.Errorf("tcp: rcode %s TC=%v with %d answers, want NOERROR with all %d",
				dns.RcodeToString[r.Rcode], r.Truncated, len(r.Answer), records.Load())
		}
		if f.total.Load() != 2 {
			t.Errorf("upstream asked %d times, want 2 (UDP, then TCP; then cached)", f.total.Load())
		}
	})
	t.Run("tcp message of 65535 bytes", func(t *testing.T) {
		t.Parallel()
		f := startFaultUpstream(t, faultBehaviour{reply: func(q *dns.Msg, _ []byte, tcp bool, _ int) ([][]byte, bool) {
			if !tcp {
				return [][]byte{faultTC(q)}, false
			}
			m, _ := faultBig(q, 65535)
			return [][]byte{faultFrame(true, m)}, false
		}}, false)
		ts := startFaultServer(t, nil, f.addr)
		if err := checkAnswer(mustFaultAsk(t, ts, "udp", faultQuery("stale.example.", true)), faultIP, 10); err != nil {
			t.Fatalf("while healthy: %v", err)
		}
		f.breakNow()
		ts.clk.advance(time.Minute)
		for _, network := range []string{"udp", "tcp"} {
			r := mustFaultAsk(t, ts, network, faultQuery(network+".big.example.", true))
			if err := checkServFail(r, true, dns.ExtendedErrorCodeOther, faultTextUnusable); err != nil {
				t.Errorf("%s: %v", network, err)
			}
		}
		r := mustFaultAsk(t, ts, "udp", faultQuery("stale.example.", true))
		if err := checkAnswer(r, faultIP, staleTTL); err != nil {
			t.Errorf("expired entry: %v", err)
		}
		if ede := edeOf(r); ede == nil || ede.InfoCode != dns.ExtendedErrorCodeStaleAnswer {
			t.Errorf("expired entry: EDE %v, want 3 (Stale Answer)", ede)
		}
	})
}

// faultStorm sends queries (name i%names under prefix) from workers
// clients at once, each with deadline d, and returns the first failures of
// check.
func faultStorm(ts *testServer, queries, names, workers int, d time.Duration, prefix string, check func(*dns.Msg) error) error {
	jobs := make(chan int)
	errs := make(chan error, queries)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				r, err := faultAsk(ts, "udp", faultQuery(fmt.Sprintf("%s-%d.example.", prefix, i%names), true), d)
				if err == nil {
					err = check(r)
				}
				errs <- err
			}
		})
	}
	for i := range queries {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	var first []error
	failed := 0
	for err := range errs {
		if err != nil {
			if failed++; failed <= 3 {
				first = append(first, err)
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d queries failed, the first: %w", failed, queries, errors.Join(first...))
	}
	return nil
}

// TestFaultsServFailStorm: an upstream that answers everything with
// SERVFAIL, under a burst of client queries and their retries.
func TestFaultsServFailStorm(t *testing.T) {
	t.Parallel()
	// A storm's client waits longer than one query's deadline: 30 workers
	// under -race on a shared machine; single queries prove the latency.
	const queries, workers, deadline = 300, 30, 3 * time.Second
	t.Run("alone: SERVFAIL for every query, upstream asked about once per name", func(t *testing.T) {
		t.Parallel()
		const names = 20
		f := startFaultUpstream(t, faultServFail, true)
		ts := startFaultServer(t, nil, f.addr)
		err := faultStorm(ts, queries, names, workers, deadline, "storm", func(r *dns.Msg) error {
			if checkServFail(r, true, dns.ExtendedErrorCodeNoReachableAuthority, faultTextFailed) == nil {
				return nil
			}
			return checkServFail(r, true, dns.ExtendedErrorCodeCachedError, "")
		})
		if err != nil {
			t.Error(err)
		}
		// Coalescing and the 5 s SERVFAIL cache: a name is asked once, or
		// twice when a query slips between a flight's end and its cache entry.
		if got := f.total.Load(); got > 2*names {
			t.Errorf("upstream asked %d times for %d queries of %d names, want at most %d", got, queries, names, 2*names)
		}
	})
	t.Run("before a healthy upstream: every query answered", func(t *testing.T) {
		t.Parallel()
		f := startFaultUpstream(t, faultServFail, true)
		var n atomic.Int32
		// Failover, not latency, is the question here: a SERVFAIL upstream
		// then a healthy one within a whole second, even under -race.
		ts := startFaultServerTimeout(t, time.Second, nil, f.addr, startUpstream(t, answerA(&n, goodIP, 10)))
		if err := faultStorm(ts, queries, queries, workers, deadline, "storm", func(r *dns.Msg) error { return checkAnswer(r, goodIP, 10) }); err != nil {
			t.Error(err)
		}
	})
}

// TestFaultsFlapping: an upstream that answers every other query. Alone,
// each query gets its answer or SERVFAIL within the timeout, and an answer
// as soon as it is back (no sticky failure); with a healthy second
// upstream, every query is answered.
func TestFaultsFlapping(t *testing.T) {
	t.Parallel()
	t.Run("alone", func(t *testing.T) {
		t.Parallel()
		f := startFaultUpstream(t, faultFlapping, true)
		ts := startFaultServer(t, nil, f.addr)
		for i := 1; i <= 6; i++ {
			r := mustFaultAsk(t, ts, "udp", faultQuery(fmt.Sprintf("flap%d.example.", i), true))
			var err error
			if i%2 == 1 {
				err = checkServFail(r, true, dns.ExtendedErrorCodeNoReachableAuthority, faultTextTimeout)
			} else {
				err = checkAnswer(r, faultIP, 10)
			}
			if err != nil {
				t.Errorf("query %d: %v", i, err)
			}
		}
	})
	t.Run("before a healthy upstream", func(t *testing.T) {
		t.Parallel()
		f := startFaultUpstream(t, faultFlapping, true)
		var n atomic.Int32
		ts := startFaultServer(t, nil, f.addr, startUpstream(t, answerA(&n, goodIP, 10)))
		for i := 1; i <= 6; i++ {
			r := mustFaultAsk(t, ts, "udp", faultQuery(fmt.Sprintf("flap%d.example.", i), true))
			if checkAnswer(r, faultIP, 10) != nil {
				if err := checkAnswer(r, goodIP, 10); err != nil {
					t.Errorf("query %d: %v", i, err)
				}
			}
		}
	})
}

// TestFaultsMemoryBounded runs rounds of queries against upstreams that
// send garbage, oversized replies (some of them late) or flap, and checks
// that neither the heap nor the goroutines keep growing after a warm-up
// round: whatever a query left behind (a singleflight call, a pending TCP
// query that a late reply then fills, a reply buffer) would add up over the
// rounds, and the oversized replies make each such leak 64 KB.
func TestFaultsMemoryBounded(t *testing.T) {
	// Not parallel: it measures the heap of the whole process.
	if testing.Short() {
		t.Skip("memory rounds take a few seconds")
	}
	const rounds, perRound, workers = 5, 90, 45
	behaviours := []faultBehaviour{
		{reply: func(q *dns.Msg, raw []byte, _ bool, k int) ([][]byte, bool) { // garbage, then the answer every other time
			out := faultGarbage(q, raw, uint64(k))
			if k%2 == 0 {
				out = append(out, faultPack(faultAnswer(q, faultIP)))
			}
			return out, false
		}},
		{ // 64 KB over UDP, or TC and 65,535 bytes over TCP, a third of them late
			delay: 2 * faultTimeout,
			late:  func(tcp bool, k int) bool { return tcp && k%3 == 0 },
			reply: func(q *dns.Msg, _ []byte, tcp bool, k int) ([][]byte, bool) {
				if tcp {
					m, _ := faultBig(q, 65535)
					return [][]byte{faultFrame(true, m)}, false
				}
				if k%2 == 0 {
					return [][]byte{faultTC(q)}, false
				}
				m, _ := faultBig(q, 65000)
				return [][]byte{m}, false
			},
		},
		faultFlapping,
	}
	var (
		servers []*testServer
		fakes   []*faultUpstream
	)
	for _, b := range behaviours {
		f := startFaultUpstream(t, b, true)
		fakes = append(fakes, f)
		servers = append(servers, startFaultServer(t, func(c *Config) { c.Cache.Size = 32 }, f.addr))
	}
	round := func(r int) {
		t.Helper()
		errs := make(chan error, len(servers))
		for i, ts := range servers {
			go func() {
				// Latency is not the point here (the other tests check it):
				// a generous deadline keeps a loaded machine from failing it.
				errs <- faultStorm(ts, perRound, perRound, workers, 5*time.Second, fmt.Sprintf("r%d-s%d", r, i), func(r *dns.Msg) error {
					if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeServerFailure {
						return fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
					}
					return nil
				})
			}()
		}
		for range servers {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", r, err)
			}
		}
		// Let the round's work end: replies already sent leave queries
		// upstream, and late replies on their way hold 64 KB each.
		waitFor(t, "the round's queries and late replies to end", func() bool {
			for i := range servers {
				if servers[i].slow.Load() != 0 || fakes[i].sending.Load() != 0 {
					return false
				}
			}
			return true
		})
	}
	// heap collects until the live objects stop falling (sync.Pools empty
	// over two cycles; objects with finalizers go a cycle after theirs ran)
	// and returns the live bytes and objects.
	heap := func() (bytes, objects uint64) {
		var ms runtime.MemStats
		for i := 0; i < 10; i++ {
			runtime.GC()
			runtime.Gosched() // let the finalizer goroutine run
			runtime.ReadMemStats(&ms)
			if i > 1 && ms.HeapObjects >= objects {
				break
			}
			objects = ms.HeapObjects
		}
		return ms.HeapAlloc, ms.HeapObjects
	}
	round(0)
	warm, warmObjects := heap()
	warmG := runtime.NumGoroutine()
	for r := 1; r < rounds; r++ {
		round(r)
	}
	last, lastObjects := heap()
	runtime.KeepAlive(servers) // or their registries are garbage by now
	t.Logf("heap after the warm-up round %d KiB in %d objects, after %d more rounds %d KiB in %d objects",
		warm>>10, warmObjects, rounds-1, last>>10, lastObjects)
	if limit := 2*warm + 4<<20; last > limit {
		t.Errorf("heap grew from %d KiB after warm-up to %d KiB (limit %d KiB)", warm>>10, last>>10, limit>>10)
	}
	// Goroutines: the same as after warm-up, give or take the TCP
	// connection to the oversized upstream being replaced (a reader on
	// each side) and the runtime's finalizer goroutine, which counts while
	// it runs; one left behind per query would be hundreds.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > warmG+3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > warmG+3 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after %d rounds, %d after warm-up:\n%s", n, rounds-1, warmG, buf[:runtime.Stack(buf, true)])
	}
	// A leak of small objects (a singleflight call, a cache entry beyond
	// the cache's size) hides in the bytes but not in the count: the live
	// objects hold steady within about 200 over the rounds, and one object
	// left behind per query would add more than a thousand.
	if queries := uint64((rounds - 1) * perRound * len(servers)); lastObjects > warmObjects+queries/2 {
		t.Errorf("live heap objects grew from %d after warm-up to %d over %d queries", warmObjects, lastObjects, queries)
	}
}
