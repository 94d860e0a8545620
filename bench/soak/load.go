package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/sinkd/sinkd/internal/sinkdproc"
)

// Hit states, by hit number.
const (
	hitPending  byte = iota
	hitAnswered      // answered with the sinkhole address
	hitFailed        // timed out or wrongly answered
)

// loadGen sends queries at a fixed rate over a few UDP sockets and checks
// every reply.
type loadGen struct {
	o          options
	hitDomains []string
	conns      []*genConn
	rng        *rand.Rand // the sender's only
	start      int64      // UnixNano the load started at

	mu   sync.Mutex
	hits []byte // state by hit number

	sent, answered, timedOut, badRcode, wrong, sendErr, late, stale atomic.Int64
	normalSent                                                      atomic.Int64
	examples                                                        exampleList

	sockDrops atomic.Int64 // the kernel's drops at the load's sockets, read before they close

	slowest [2]atomic.Int64 // the longest reply time (ns) since the monitor last took it: [0] upstream names, [1] hits

	lateMu    sync.Mutex
	lateRcode map[string]int64 // replies after the timeout, by rcode
	lateMax   time.Duration    // the latest of them
}

// pend is a query awaiting its reply.
type pend struct {
	sent int64 // UnixNano; 0: none
	name string
	hit  int64 // hit number, or -1 for a non-hit name
}

type genConn struct {
	c       *net.UDPConn
	mu      sync.Mutex
	pending [1 << 16]pend
	expired [1 << 16]int64 // send time (UnixNano) of a query failed by the sweep, by ID; 0: none
	order   []idAt         // pending IDs in send order, for the timeout sweep
	nextID  uint16
	lat     [2][]uint32 // reply times in µs of the queries answered: [0] upstream names, [1] hits
}

type idAt struct {
	id   uint16
	sent int64
}

// exampleList keeps the first few failures, to print.
type exampleList struct {
	mu sync.Mutex
	s  []string
}

func (e *exampleList) add(format string, a ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.s) < 10 {
		e.s = append(e.s, fmt.Sprintf(format, a...))
	}
}

func newLoadGen(server string, o options, hitDomains []string) (*loadGen, error) {
	g := &loadGen{o: o, hitDomains: hitDomains, rng: rand.New(rand.NewPCG(1, 2)), lateRcode: map[string]int64{}}
	raddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, err
	}
	for range o.conns {
		c, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			return nil, err
		}
		_ = c.SetReadBuffer(4 << 20)
		g.conns = append(g.conns, &genConn{c: c})
	}
	return g, nil
}

// next picks the next query's name: a new name under a hit domain, a hot
// name or a cold one.
func (g *loadGen) next() (name string, hit int64) {
	if g.rng.Float64() < g.o.hitRatio {
		g.mu.Lock()
		hit = int64(len(g.hits))
		g.hits = append(g.hits, hitPending)
		g.mu.Unlock()
		return fmt.Sprintf("q%d.%s.", hit, g.hitDomains[hit%int64(len(g.hitDomains))]), hit
	}
	g.normalSent.Add(1)
	if g.rng.Float64() < g.o.hotShare {
		i := g.rng.IntN(g.o.hotNames)
		return fmt.Sprintf("h%d.hot%d.example.", i, i%50), -1
	}
	i := g.rng.IntN(g.o.coldNames)
	return fmt.Sprintf("c%d.cold%d.example.", i, i%997), -1
}

// run sends until the deadline or ctx is done, then waits out the timeout
// for the last replies and fails what is still pending.
func (g *loadGen) run(ctx context.Context, until time.Time) {
	start := time.Now()
	g.start = start.UnixNano() // before the goroutines that read it
	var wg sync.WaitGroup
	for _, gc := range g.conns {
		wg.Go(func() { g.receive(gc) })
	}
	sweepDone := make(chan struct{})
	sweepStop := make(chan struct{})
	go func() {
		defer close(sweepDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sweepStop:
				return
			case <-tick.C:
				g.sweep(time.Now().Add(-g.o.timeout).UnixNano())
			}
		}
	}()

	sent := 0
	tick := time.NewTicker(time.Millisecond)
	m := new(dns.Msg)
	buf := make([]byte, 0, 512)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case now := <-tick.C:
			if !now.Before(until) {
				break loop
			}
		}
		due := int(time.Since(start).Seconds() * float64(g.o.qps))
		for ; sent < due; sent++ {
			gc := g.conns[sent%len(g.conns)]
			name, hit := g.next()
			m.SetQuestion(name, dns.TypeA)
			m.Extra = m.Extra[:0]
			m.SetEdns0(1232, false)
			gc.mu.Lock()
			id := gc.nextID
			gc.nextID++
			old := gc.pending[id]
			now := time.Now().UnixNano()
			gc.pending[id] = pend{sent: now, name: name, hit: hit}
			gc.expired[id] = 0
			gc.order = append(gc.order, idAt{id, now})
			gc.mu.Unlock()
			if old.sent != 0 { // 65536 queries in flight on one socket: the oldest never came back
				g.fail(&g.timedOut, old, "no reply before its ID was reused")
			}
			m.Id = id
			b, err := m.PackBuffer(buf)
			if err == nil {
				_, err = gc.c.Write(b)
			}
			g.sent.Add(1)
			if err != nil {
				if p, ok := gc.take(id, now); ok {
					g.fail(&g.sendErr, p, "send: %v", err)
				}
			}
		}
	}
	tick.Stop()
	time.Sleep(g.o.timeout + 200*time.Millisecond) // the last replies may still come
	close(sweepStop)
	<-sweepDone
	g.sockDrops.Store(g.drops()) // while the sockets are open
	for _, gc := range g.conns {
		_ = gc.c.Close()
	}
	wg.Wait()
	g.sweep(time.Now().UnixNano())
}

// take removes the pending query id if it is the one sent at sent.
func (gc *genConn) take(id uint16, sent int64) (pend, bool) {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	p := gc.pending[id]
	if p.sent == 0 || p.sent != sent {
		return pend{}, false
	}
	gc.pending[id] = pend{}
	return p, true
}

// sweep fails every query sent before cut that is still pending.
func (g *loadGen) sweep(cut int64) {
	for _, gc := range g.conns {
		var expired []pend
		gc.mu.Lock()
		i := 0
		for ; i < len(gc.order) && gc.order[i].sent < cut; i++ {
			o := gc.order[i]
			if p := gc.pending[o.id]; p.sent == o.sent {
				expired = append(expired, p)
				gc.pending[o.id] = pend{}
				gc.expired[o.id] = p.sent
			}
		}
		gc.order = append(gc.order[:0], gc.order[i:]...)
		gc.mu.Unlock()
		for _, p := range expired {
			g.fail(&g.timedOut, p, "no reply within %v", g.o.timeout)
		}
	}
}

// fail counts a failed query in c.
func (g *loadGen) fail(c *atomic.Int64, p pend, format string, a ...any) {
	c.Add(1)
	at := time.Duration(p.sent - g.start).Round(time.Millisecond)
	g.examples.add("sent at %v: %s (%s): %s", at, p.name, kind(p.hit), fmt.Sprintf(format, a...))
	if p.hit >= 0 {
		g.setHit(p.hit, hitFailed)
	}
}

// kindIndex is 1 for a hit, 0 for an upstream name.
func kindIndex(hit int64) int {
	if hit >= 0 {
		return 1
	}
	return 0
}

// raise sets a to v if v is larger.
func raise(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// takeSlowest returns the longest reply time for upstream names and for
// hits since the last call.
func (g *loadGen) takeSlowest() (upstream, hit time.Duration) {
	return time.Duration(g.slowest[0].Swap(0)), time.Duration(g.slowest[1].Swap(0))
}

func kind(hit int64) string {
	if hit >= 0 {
		return "hit"
	}
	return "upstream"
}

func (g *loadGen) setHit(n int64, s byte) {
	g.mu.Lock()
	g.hits[n] = s
	g.mu.Unlock()
}

func (g *loadGen) receive(gc *genConn) {
	b := make([]byte, 65535)
	r := new(dns.Msg)
	for {
		n, err := gc.c.Read(b)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNREFUSED from an ICMP error: the query shows as a timeout
		}
		if n < 12 {
			continue
		}
		now := time.Now().UnixNano()
		id := uint16(b[0])<<8 | uint16(b[1])
		gc.mu.Lock()
		p := gc.pending[id]
		gc.pending[id] = pend{}
		exp := gc.expired[id]
		gc.expired[id] = 0
		if p.sent != 0 {
			k := kindIndex(p.hit)
			gc.lat[k] = append(gc.lat[k], uint32(min((now-p.sent)/1e3, 1<<32-1)))
			raise(&g.slowest[k], now-p.sent)
		}
		gc.mu.Unlock()
		if p.sent == 0 {
			if exp != 0 { // after its timeout: already failed
				g.late.Add(1)
				g.lateMu.Lock()
				g.lateRcode[dns.RcodeToString[int(b[3]&0x0f)]]++
				g.lateMax = max(g.lateMax, time.Duration(now-exp))
				g.lateMu.Unlock()
			}
			continue // or a duplicate
		}
		if err := r.Unpack(b[:n]); err != nil {
			g.fail(&g.wrong, p, "unpack: %v", err)
			continue
		}
		g.check(p, r)
	}
}

// check judges one reply to p.
func (g *loadGen) check(p pend, r *dns.Msg) {
	if len(r.Question) != 1 || r.Question[0].Name != p.name || r.Question[0].Qtype != dns.TypeA {
		g.fail(&g.wrong, p, "reply for another question: %v", r.Question)
		return
	}
	if r.Rcode != dns.RcodeSuccess {
		g.fail(&g.badRcode, p, "rcode %s", dns.RcodeToString[r.Rcode])
		return
	}
	want, _ := upstreamAnswer(p.name)
	if p.hit >= 0 {
		want = netip.MustParseAddr(sinkholeAddr)
	}
	var got []string
	okA := false
	for _, rr := range r.Answer {
		got = append(got, rr.String())
		if a, ok := rr.(*dns.A); ok && a.Hdr.Name == p.name {
			ip, _ := netip.AddrFromSlice(a.A)
			okA = len(r.Answer) == 1 && ip.Unmap() == want
		}
	}
	if !okA {
		g.fail(&g.wrong, p, "want one A %v, got %q", want, got)
		return
	}
	ede := edeCodes(r)
	switch {
	case p.hit >= 0 && !slices.Contains(ede, 15):
		g.fail(&g.wrong, p, "sinkhole answer without EDE 15 (Blocked): EDE %v", ede)
		return
	case p.hit < 0 && slices.Contains(ede, 15):
		g.fail(&g.wrong, p, "upstream answer with EDE 15 (Blocked)")
		return
	case p.hit < 0 && slices.Contains(ede, 3):
		g.stale.Add(1) // served stale although the upstream is healthy: reported, not failed
	}
	g.answered.Add(1)
	if p.hit >= 0 {
		g.setHit(p.hit, hitAnswered)
	}
}

func edeCodes(r *dns.Msg) []uint16 {
	var codes []uint16
	if opt := r.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				codes = append(codes, e.InfoCode)
			}
		}
	}
	return codes
}

// genResult is what the load saw.
type genResult struct {
	sent, answered, timedOut, badRcode, wrong, sendErr, late, stale int64
	normalSent                                                      int64
	hitsSent, hitsAnswered                                          int64
	examples                                                        []string
	lateRcode                                                       map[string]int64
	lateMax                                                         time.Duration
	lat                                                             [2]latency // of the replies in time: [0] upstream names, [1] hits
}

// latency sums up reply times.
type latency struct {
	n                   int
	p50, p99, p999, max time.Duration
}

func (l latency) String() string {
	if l.n == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %v, p99 %v, p99.9 %v, max %v", l.p50, l.p99, l.p999, l.max)
}

func (r genResult) failed() int64 { return r.timedOut + r.badRcode + r.wrong + r.sendErr }

func (g *loadGen) result() genResult {
	r := genResult{sent: g.sent.Load(), answered: g.answered.Load(), timedOut: g.timedOut.Load(),
		badRcode: g.badRcode.Load(), wrong: g.wrong.Load(), sendErr: g.sendErr.Load(), late: g.late.Load(),
		stale: g.stale.Load(), normalSent: g.normalSent.Load()}
	g.mu.Lock()
	r.hitsSent = int64(len(g.hits))
	for _, s := range g.hits {
		if s == hitAnswered {
			r.hitsAnswered++
		}
	}
	g.mu.Unlock()
	g.examples.mu.Lock()
	r.examples = slices.Clone(g.examples.s)
	g.examples.mu.Unlock()
	g.lateMu.Lock()
	r.lateRcode, r.lateMax = maps.Clone(g.lateRcode), g.lateMax
	g.lateMu.Unlock()
	return r
}

// latencies sets the reply time percentiles of r (a sort of every reply
// time: for the report at the end, not for progress lines).
func (g *loadGen) latencies(r *genResult) {
	for k := range r.lat {
		var lat []uint32
		for _, gc := range g.conns {
			gc.mu.Lock()
			lat = append(lat, gc.lat[k]...)
			gc.mu.Unlock()
		}
		if len(lat) == 0 {
			continue
		}
		slices.Sort(lat)
		q := func(p float64) time.Duration {
			return time.Duration(lat[min(len(lat)-1, int(p*float64(len(lat))))]) * time.Microsecond
		}
		r.lat[k] = latency{n: len(lat), p50: q(0.5), p99: q(0.99), p999: q(0.999), max: time.Duration(lat[len(lat)-1]) * time.Microsecond}
	}
}

// drops is the kernel's drop counter summed over the load's sockets.
func (g *loadGen) drops() int64 {
	var n int64
	for _, gc := range g.conns {
		d, _ := sinkdproc.UDPDrops(gc.c.LocalAddr().String())
		n += d
	}
	return n
}

// hitState is hit n's state; ok is false for a number never sent.
func (g *loadGen) hitState(n int64) (byte, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n < 0 || n >= int64(len(g.hits)) {
		return 0, false
	}
	return g.hits[n], true
}
