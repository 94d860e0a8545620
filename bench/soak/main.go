// Command soak runs the real sinkd binary under a steady loopback load for
// a long time, replacing its block list every few seconds, and checks that
// nothing is lost:
//
//   - every query is answered in time, with the right answer: the sinkhole
//     address for a listed name, the fake upstream's address for any other
//     (a timeout, a SERVFAIL or a wrong answer is a failed query; nothing
//     is retried);
//   - every hit answered is in the evidence log exactly once (each hit
//     query asks a name of its own, q<N>.<listed domain>), counted with
//     `sinkd hits` and again by reading the segments, gzip'ed ones too;
//   - each list replacement is live (its sha256 in /api/v1/lists, a name
//     it added blocked, a name it removed answered by the upstream);
//   - `sinkd verify` accepts the log after a SIGTERM, which sinkd obeys;
//   - the heap after warm-up stays flat (go_memstats_heap_inuse_bytes and
//     process_resident_memory_bytes from /metrics, every -sample-every).
//
// Run from the repository root (it builds ./cmd/sinkd):
//
//	go run ./bench/soak                                   # 5000 qps for 10 minutes, reload every 30 s
//	go run ./bench/soak -duration 90s -reload-every 15s -warmup 30s -heap-window 30s
//
// It exits 1 if any query failed, hits recorded != hits sent, a reload was
// not seen live, sinkd did not exit cleanly, verify failed or the heap grew
// more than -max-heap-growth; 2 on a usage error. Everything talks to
// 127.0.0.1 only: sinkd, its fake upstream (in this process) and the load.
package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/sinkd/sinkd/internal/sinkdproc"
	"github.com/sinkd/sinkd/internal/synth"
)

// sinkholeAddr is sinkd's sinkhole.ipv4 here: never an upstream answer
// (those are in 198.18.0.0/15).
const sinkholeAddr = "192.0.2.254"

// listName is the replaced list's name in zones.dir.
const listName = "feed.txt"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	qps           int
	duration      time.Duration
	hitRatio      float64
	reloadEvery   time.Duration
	sampleEvery   time.Duration
	warmup        time.Duration
	heapWindow    time.Duration
	maxGrowth     float64
	timeout       time.Duration
	domains       int
	hitDomains    int
	churn         int
	conns         int
	segmentSize   string
	bin           string
	keep          bool
	coldNames     int
	hotNames      int
	hotShare      float64
	settle        time.Duration
	reloadTimeout time.Duration
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.qps, "qps", 5000, "queries per second (UDP)")
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the load runs")
	fs.Float64Var(&o.hitRatio, "hit-ratio", 0.1, "share of queries for listed names (each one a hit record)")
	fs.DurationVar(&o.reloadEvery, "reload-every", 30*time.Second, "replace the list this often (0: never)")
	fs.DurationVar(&o.sampleEvery, "sample-every", 10*time.Second, "sample heap and RSS this often")
	fs.DurationVar(&o.warmup, "warmup", time.Minute, "the heap baseline is taken from this point on")
	fs.DurationVar(&o.heapWindow, "heap-window", time.Minute, "heap after warm-up and at end: the highest sample in a window this long (GC makes single samples swing)")
	fs.Float64Var(&o.maxGrowth, "max-heap-growth", 1.5, "fail if heap at end > this x heap after warm-up")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Second, "a query unanswered this long has failed")
	fs.IntVar(&o.domains, "domains", 100_000, "domains in the list")
	fs.IntVar(&o.hitDomains, "hit-domains", 1000, "listed domains the hit queries ask names under (kept in every version)")
	fs.IntVar(&o.churn, "churn", 1000, "domains each list version removes from, and adds to, the base list")
	fs.IntVar(&o.conns, "conns", 8, "UDP sockets the load is spread over")
	fs.StringVar(&o.segmentSize, "segment-size", "8MiB", "evidence.segment_size (small: segments close and are gzip'ed during the run)")
	fs.StringVar(&o.bin, "sinkd", "", "sinkd binary (default: go build ./cmd/sinkd)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (config, lists, evidence, sinkd's log)")
	fs.IntVar(&o.hotNames, "hot-names", 2000, "names most non-hit queries ask (mostly cache hits)")
	fs.Float64Var(&o.hotShare, "hot-share", 0.5, "share of non-hit queries for the hot names; the rest ask -cold-names (mostly cache misses)")
	fs.IntVar(&o.coldNames, "cold-names", 1_000_000, "names the other non-hit queries pick from at random")
	fs.DurationVar(&o.settle, "settle", 2*time.Second, "after the load, wait this long before SIGTERM")
	fs.DurationVar(&o.reloadTimeout, "reload-timeout", 30*time.Second, "a replaced list not live after this long is a failed reload")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "soak: unexpected argument %q\n", fs.Arg(0))
		return 2
	case o.qps < 1 || o.conns < 1 || o.hitRatio < 0 || o.hitRatio > 1 || o.hotShare < 0 || o.hotShare > 1:
		fmt.Fprintln(stderr, "soak: want -qps >= 1, -conns >= 1, -hit-ratio and -hot-share in [0, 1]")
		return 2
	case o.hitDomains < 1 || o.domains < o.hitDomains+2*o.churn || o.hotNames < 1 || o.coldNames < 1:
		fmt.Fprintln(stderr, "soak: want -hit-domains >= 1, -domains >= -hit-domains + 2 x -churn, -hot-names and -cold-names >= 1")
		return 2
	case o.sampleEvery <= 0 || o.heapWindow < o.sampleEvery || o.warmup+o.heapWindow > o.duration:
		fmt.Fprintln(stderr, "soak: want -sample-every > 0, -heap-window >= -sample-every, -warmup + -heap-window <= -duration")
		return 2
	}
	ok, err := soak(o, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "soak:", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

// soak runs the whole thing; ok is false if a check failed (the report
// says which), err is for a soak that could not run.
func soak(o options, out io.Writer) (ok bool, err error) {
	dir, err := os.MkdirTemp("", "sinkd-soak")
	if err != nil {
		return false, err
	}
	if o.keep {
		fmt.Fprintln(out, "temp dir:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.bin == "" {
		if o.bin, err = sinkdproc.Build(dir); err != nil {
			return false, err
		}
	}

	lists := newVersions(o.domains, o.hitDomains, o.churn)
	zonesDir, stage, evDir := filepath.Join(dir, "zones.d"), filepath.Join(dir, "stage"), filepath.Join(dir, "hits")
	for _, d := range []string{zonesDir, stage} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return false, err
		}
	}
	if _, err := lists.write(filepath.Join(zonesDir, listName), 0); err != nil {
		return false, err
	}

	up, err := startUpstream()
	if err != nil {
		return false, err
	}
	defer up.stop()

	cfg := filepath.Join(dir, "sinkd.yaml")
	yaml := fmt.Sprintf(`listen:
  dns: ["127.0.0.1:0"]
  http: 127.0.0.1:0
upstreams: ["%s"]
zones:
  dir: %s
evidence:
  dir: %s
  segment_size: %s
sinkhole:
  ipv4: %s
access:
  rate_limit: 0
`, up.addr, zonesDir, evDir, o.segmentSize, sinkholeAddr)
	if err := os.WriteFile(cfg, []byte(yaml), 0o640); err != nil {
		return false, err
	}
	sd, err := sinkdproc.Start(o.bin, cfg, filepath.Join(dir, "sinkd.log"))
	if err != nil {
		return false, err
	}
	defer func() {
		select {
		case <-sd.Done():
		default:
			sd.Kill()
		}
	}()
	fmt.Fprintf(out, "soak: sinkd %s (http %s), upstream %s, %d qps for %v, %.0f%% hits, %d-domain list replaced every %v\n",
		sd.DNS, sd.HTTP, up.addr, o.qps, o.duration, o.hitRatio*100, o.domains, o.reloadEvery)

	gen, err := newLoadGen(sd.DNS, o, lists.hit)
	if err != nil {
		return false, err
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { gen.run(ctx, start.Add(o.duration)) })
	rl := &reloader{o: o, lists: lists, hc: hc, sd: sd, stage: stage, zones: zonesDir, probes: map[string]bool{}}
	if o.reloadEvery > 0 {
		wg.Go(func() { rl.run(ctx, start, start.Add(o.duration)) })
	}
	mon := &monitor{hc: hc, sd: sd, gen: gen, up: up, rl: rl, out: out}
	drops0, _ := sinkdproc.UDPDrops(sd.DNS)
	mon.run(ctx, start, o.sampleEvery, start.Add(o.duration))
	wg.Wait() // the load has stopped and its last replies have come (or timed out)
	drops1, _ := sinkdproc.UDPDrops(sd.DNS)
	time.Sleep(o.settle)

	termErr := sd.Terminate(30 * time.Second)

	var r report
	r.o = o
	r.loadTime = time.Since(start)
	r.gen = gen.result()
	r.drops = drops1 - drops0
	r.upstreamAsked = up.asked.Load()
	r.reloads = rl.result()
	r.heap = mon.samples
	r.termErr = termErr
	r.ev, err = countEvidence(o.bin, cfg, evDir, gen, rl)
	if err != nil {
		return false, err
	}
	r.verifyOut, r.verifyErr = verify(o.bin, cfg)
	return r.print(out), nil
}

// versions are the versions of the replaced list: the base list (from
// internal/synth) less a window of churn domains that moves with each
// version, plus churn domains of the version's own. The first hit
// domains are in every version.
type versions struct {
	base  []string
	hit   []string
	churn int
}

func newVersions(domains, hit, churn int) *versions {
	base := synth.DomainList(1, domains)
	return &versions{base: base, hit: base[:hit], churn: churn}
}

// removed is the window of base domains version k leaves out (none for
// version 0).
func (v *versions) removed(k int) []string {
	if k == 0 {
		return nil
	}
	span := len(v.base) - len(v.hit) - v.churn
	from := len(v.hit) + (k*7919)%span
	return v.base[from : from+v.churn]
}

// added are the domains only version k holds (none for version 0).
func (v *versions) added(k int) []string {
	if k == 0 {
		return nil
	}
	return synth.DomainList(1000+uint64(k), v.churn)
}

// names is version k's rules, in file order.
func (v *versions) names(k int) []string {
	rm := v.removed(k)
	out := make([]string, 0, len(v.base)+v.churn)
	for _, d := range v.base {
		if len(rm) > 0 && d == rm[0] {
			rm = rm[1:]
			continue
		}
		out = append(out, d)
	}
	return append(out, v.added(k)...)
}

// write writes version k to path and returns its SHA-256 (hex).
func (v *versions) write(path string, k int) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<16)
	fmt.Fprintf(w, "# soak list, version %d\n", k)
	for _, d := range v.names(k) {
		_, _ = w.WriteString(d)
		_ = w.WriteByte('\n')
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return hex.EncodeToString(h.Sum(nil)), err
}

// blocked reports whether name or a parent of it is in set.
func blocked(set map[string]bool, name string) bool {
	for {
		if set[name] {
			return true
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return false
		}
		name = name[i+1:]
	}
}

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
	ready := make(chan struct{})
	u.srv = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(ready) }}
	go func() { _ = u.srv.ActivateAndServe() }()
	<-ready
	u.addr = pc.LocalAddr().String()
	return u, nil
}

func (u *upstream) stop() { _ = u.srv.Shutdown() }

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

	mu   sync.Mutex
	hits []byte // state by hit number

	sent, answered, timedOut, badRcode, wrong, sendErr, late, stale atomic.Int64
	normalSent                                                      atomic.Int64
	examples                                                        exampleList
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
	order   []idAt // pending IDs in send order, for the timeout sweep
	nextID  uint16
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
	g := &loadGen{o: o, hitDomains: hitDomains, rng: rand.New(rand.NewPCG(1, 2))}
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

	start := time.Now()
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
	g.examples.add("%s (%s): %s", p.name, kind(p.hit), fmt.Sprintf(format, a...))
	if p.hit >= 0 {
		g.setHit(p.hit, hitFailed)
	}
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
		id := uint16(b[0])<<8 | uint16(b[1])
		gc.mu.Lock()
		p := gc.pending[id]
		gc.pending[id] = pend{}
		gc.mu.Unlock()
		if p.sent == 0 {
			g.late.Add(1) // after its timeout (already failed), or a duplicate
			continue
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
	return r
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

// reloader replaces the list with a new version every -reload-every and
// checks that each one goes live.
type reloader struct {
	o            options
	lists        *versions
	hc           *http.Client
	sd           *sinkdproc.Process
	stage, zones string

	mu     sync.Mutex
	took   []time.Duration // rename to live, per reload done
	failed []string
	probes map[string]bool // names asked by the probes that are hits
}

func (rl *reloader) run(ctx context.Context, start, until time.Time) {
	c := &dns.Client{Timeout: rl.o.timeout}
	for k := 1; ; k++ {
		at := start.Add(time.Duration(k) * rl.o.reloadEvery)
		if !at.Before(until) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		if err := rl.reload(ctx, c, k); err != nil {
			rl.mu.Lock()
			rl.failed = append(rl.failed, fmt.Sprintf("version %d: %v", k, err))
			rl.mu.Unlock()
		}
	}
}

// reload renames version k into zones.dir, waits for /api/v1/lists to
// show its sha256, then probes a name it added (blocked) and one it
// removed (answered by the upstream).
func (rl *reloader) reload(ctx context.Context, c *dns.Client, k int) error {
	src := filepath.Join(rl.stage, listName)
	sum, err := rl.lists.write(src, k)
	if err != nil {
		return err
	}
	renamed := time.Now()
	if err := os.Rename(src, filepath.Join(rl.zones, listName)); err != nil {
		return err
	}
	for {
		st, got, err := rl.listStatus()
		if err == nil && got == sum {
			if st != "ok" {
				return fmt.Errorf("/api/v1/lists: status %q", st)
			}
			break
		}
		if time.Since(renamed) > rl.o.reloadTimeout {
			return fmt.Errorf("not live %v after the rename (sha256 %s, /api/v1/lists: %s %v)", rl.o.reloadTimeout, sum, got, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	took := time.Since(renamed)

	set := make(map[string]bool, len(rl.lists.base))
	for _, d := range rl.lists.names(k) {
		set[d] = true
	}
	add := fmt.Sprintf("probe%d.%s.", k, rl.lists.added(k)[0])
	rm := ""
	for _, d := range rl.lists.removed(k) {
		if !blocked(set, d) {
			rm = "probe." + d + "."
			break
		}
	}
	rl.mu.Lock()
	rl.probes[strings.TrimSuffix(add, ".")] = true
	rl.mu.Unlock()
	if got := probe(c, rl.sd.DNS, add); got != netip.MustParseAddr(sinkholeAddr) {
		return fmt.Errorf("live (sha256 in /api/v1/lists), but %s, added, is answered %v", add, got)
	}
	if rm != "" {
		if want, _ := upstreamAnswer(rm); probe(c, rl.sd.DNS, rm) != want {
			return fmt.Errorf("live (sha256 in /api/v1/lists), but %s, removed, is not answered by the upstream", rm)
		}
	}
	rl.mu.Lock()
	rl.took = append(rl.took, took)
	rl.mu.Unlock()
	return nil
}

// listStatus is the replaced list's status and sha256 in /api/v1/lists.
func (rl *reloader) listStatus() (status, sum string, err error) {
	resp, err := rl.hc.Get("http://" + rl.sd.HTTP + "/api/v1/lists")
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var lists []struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
		Status string `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&lists); err != nil {
		return "", "", err
	}
	for _, l := range lists {
		if l.Name == listName {
			return l.Status, l.SHA256, nil
		}
	}
	return "", "", fmt.Errorf("no %s", listName)
}

// probe is the A record sinkd answers for name (invalid on any failure).
func probe(c *dns.Client, server, name string) netip.Addr {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, _, err := c.Exchange(m, server)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return netip.Addr{}
	}
	a, ok := r.Answer[0].(*dns.A)
	if !ok {
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(a.A)
	return ip.Unmap()
}

// reloadResult is what the reloader saw.
type reloadResult struct {
	took   []time.Duration
	failed []string
	probes map[string]bool
}

func (rl *reloader) result() reloadResult {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return reloadResult{took: slices.Clone(rl.took), failed: slices.Clone(rl.failed), probes: rl.probes}
}

// isProbe reports whether qname (a hit record's) was asked by a probe.
func (rl *reloader) isProbe(qname string) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.probes[qname]
}

// sample is one reading of sinkd's memory.
type sample struct {
	at        time.Duration // since the load started
	heap, rss int64
}

// monitor prints a progress line and samples sinkd's memory every
// -sample-every.
type monitor struct {
	hc      *http.Client
	sd      *sinkdproc.Process
	gen     *loadGen
	up      *upstream
	rl      *reloader
	out     io.Writer
	samples []sample
}

// run samples until the deadline (and once more at it).
func (m *monitor) run(ctx context.Context, start time.Time, every time.Duration, until time.Time) {
	for k := 1; ; k++ {
		at := start.Add(time.Duration(k) * every)
		if at.After(until) {
			at = until
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		s := sample{at: at.Sub(start).Round(time.Second)}
		if b, err := sinkdproc.Scrape(m.hc, m.sd.HTTP); err != nil {
			fmt.Fprintf(m.out, "  %v: /metrics: %v\n", s.at, err)
		} else {
			h, _ := sinkdproc.Value(b, "go_memstats_heap_inuse_bytes")
			r, _ := sinkdproc.Value(b, "process_resident_memory_bytes")
			s.heap, s.rss = int64(h), int64(r)
			m.samples = append(m.samples, s)
		}
		g := m.gen.result()
		rl := m.rl.result()
		fmt.Fprintf(m.out, "  %5v: sent %d answered %d failed %d (hits %d), upstream asked %d, reloads %d, heap_inuse %s, RSS %s, load avg %s\n",
			s.at, g.sent, g.answered, g.failed(), g.hitsSent, m.up.asked.Load(), len(rl.took), mib(s.heap), mib(s.rss), loadavg())
		if !at.Before(until) {
			return
		}
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// loadavg is the machine's 1, 5 and 15 minute load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// evidence is what the evidence log holds after the run.
type evidence struct {
	hits, missing, dup, unexpected, probes int64 // hit records (sinkd hits), by how they relate to the hits sent
	recordedFailed                         int64 // hit records of queries the load counted failed
	direct                                 int64 // hit records counted by reading the segments
	gaps, lost                             int64
	reloadRecords, starts, stops           int64
	jsonl, gz                              int // segments
	unexpectedEx                           []string
}

// countEvidence counts the hit records with `sinkd hits -type all -format
// json` against the hits the load sent, and again straight from the
// segment files.
func countEvidence(bin, cfg, evDir string, gen *loadGen, rl *reloader) (evidence, error) {
	var ev evidence
	cmd := exec.Command(bin, "hits", "-config", cfg, "-type", "all", "-format", "json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return ev, err
	}
	if err := cmd.Start(); err != nil {
		return ev, err
	}
	seen := make(map[int64]bool)
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Type  string `json:"type"`
			Qname string `json:"qname"`
			Lost  int64  `json:"lost"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return ev, fmt.Errorf("sinkd hits: %w: %s", err, sc.Bytes())
		}
		switch rec.Type {
		case "gap":
			ev.gaps++
			ev.lost += rec.Lost
		case "reload":
			ev.reloadRecords++
		case "start":
			ev.starts++
		case "stop":
			ev.stops++
		case "hit":
			ev.hits++
			n, ok := hitNumber(rec.Qname, gen.hitDomains)
			st, sent := gen.hitState(n)
			switch {
			case !ok && rl.isProbe(rec.Qname):
				ev.probes++
			case !ok || !sent:
				ev.unexpected++
				if len(ev.unexpectedEx) < 5 {
					ev.unexpectedEx = append(ev.unexpectedEx, rec.Qname)
				}
			case seen[n]:
				ev.dup++
			default:
				seen[n] = true
				if st != hitAnswered {
					ev.recordedFailed++
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return ev, fmt.Errorf("sinkd hits: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return ev, fmt.Errorf("sinkd hits: %w: %s", err, stderr.String())
	}
	for n := range gen.result().hitsSent {
		if st, _ := gen.hitState(n); st == hitAnswered && !seen[n] {
			ev.missing++
		}
	}
	ev.direct, ev.jsonl, ev.gz, err = countSegments(evDir)
	return ev, err
}

// hitNumber parses a load hit name, q<N>.<hit domain N>, without the final
// dot.
func hitNumber(qname string, hitDomains []string) (int64, bool) {
	label, rest, ok := strings.Cut(qname, ".")
	if !ok || len(label) < 2 || label[0] != 'q' {
		return 0, false
	}
	n, err := strconv.ParseInt(label[1:], 10, 64)
	if err != nil || n < 0 || rest != hitDomains[n%int64(len(hitDomains))] {
		return 0, false
	}
	return n, true
}

// countSegments counts the hit records in every segment of dir, gzip'ed
// or not, by reading the files.
func countSegments(dir string) (hits int64, jsonl, gz int, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "hits-") {
			continue
		}
		var r io.Reader
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return 0, 0, 0, err
		}
		r = f
		switch {
		case strings.HasSuffix(name, ".jsonl"):
			jsonl++
		case strings.HasSuffix(name, ".jsonl.gz"):
			gz++
			zr, err := gzip.NewReader(f)
			if err != nil {
				f.Close()
				return 0, 0, 0, fmt.Errorf("%s: %w", name, err)
			}
			r = zr
		default:
			f.Close()
			continue
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"type":"hit"`) {
				hits++
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return 0, 0, 0, fmt.Errorf("%s: %w", name, err)
		}
	}
	return hits, jsonl, gz, nil
}

// verify runs `sinkd verify -config cfg`.
func verify(bin, cfg string) (string, error) {
	out, err := exec.Command(bin, "verify", "-config", cfg).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// report is everything the soak found.
type report struct {
	o             options
	loadTime      time.Duration
	gen           genResult
	drops         int64
	upstreamAsked int64
	reloads       reloadResult
	heap          []sample
	termErr       error
	ev            evidence
	verifyOut     string
	verifyErr     error
}

// print writes the report and returns whether every check passed.
func (r *report) print(w io.Writer) bool {
	var fails []string
	failIf := func(cond bool, format string, a ...any) {
		if cond {
			fails = append(fails, fmt.Sprintf(format, a...))
		}
	}
	g := r.gen
	fmt.Fprintf(w, "\nqueries: sent %d (%.0f qps over %v), answered %d, failed %d (timed out > %v %d, SERVFAIL or other rcode %d, wrong answer %d, send error %d); late replies %d; kernel drops at sinkd's UDP socket %d\n",
		g.sent, float64(g.sent)/r.o.duration.Seconds(), r.o.duration, g.answered, g.failed(), r.o.timeout, g.timedOut, g.badRcode, g.wrong, g.sendErr, g.late, r.drops)
	for _, e := range g.examples {
		fmt.Fprintln(w, "  failed:", e)
	}
	failIf(g.failed() > 0, "%d failed queries", g.failed())
	failIf(g.answered+g.failed() != g.sent, "answered + failed (%d) != sent (%d)", g.answered+g.failed(), g.sent)
	if g.normalSent > 0 {
		fmt.Fprintf(w, "cache: %d queries for upstream names, the upstream was asked %d times (%.1f%% answered from the cache); %d stale answers\n",
			g.normalSent, r.upstreamAsked, 100*(1-float64(r.upstreamAsked)/float64(g.normalSent)), g.stale)
	}

	ev := r.ev
	fmt.Fprintf(w, "hits: %d hit queries sent, %d answered with the sinkhole (hits sent); %d hit records (sinkd hits -format json): %d of hits sent, missing %d, duplicate %d, not sent by the load %d, of failed queries %d, of reload probes %d\n",
		g.hitsSent, g.hitsAnswered, ev.hits, ev.hits-ev.dup-ev.unexpected-ev.probes-ev.recordedFailed, ev.missing, ev.dup, ev.unexpected, ev.recordedFailed, ev.probes)
	fmt.Fprintf(w, "evidence: %d segments (%d .jsonl, %d .jsonl.gz) hold %d hit records read directly; gap records %d (lost %d); reload records %d; start %d, stop %d\n",
		ev.jsonl+ev.gz, ev.jsonl, ev.gz, ev.direct, ev.gaps, ev.lost, ev.reloadRecords, ev.starts, ev.stops)
	for _, q := range ev.unexpectedEx {
		fmt.Fprintln(w, "  unexpected hit record:", q)
	}
	recorded := ev.hits - ev.dup - ev.unexpected - ev.probes - ev.recordedFailed
	failIf(recorded != g.hitsAnswered || ev.missing > 0, "hits recorded %d != hits sent (answered with the sinkhole) %d (missing %d)", recorded, g.hitsAnswered, ev.missing)
	failIf(ev.dup > 0 || ev.unexpected > 0, "%d duplicate and %d unexpected hit records", ev.dup, ev.unexpected)
	failIf(ev.direct != ev.hits, "sinkd hits found %d hit records, the segments hold %d", ev.hits, ev.direct)
	failIf(ev.gaps > 0, "%d gap records (%d hits lost)", ev.gaps, ev.lost)
	failIf(ev.stops != 1 || ev.starts != 1, "want 1 start and 1 stop record, have %d and %d", ev.starts, ev.stops)

	took := slices.Clone(r.reloads.took)
	slices.Sort(took)
	want := 0
	if r.o.reloadEvery > 0 {
		want = int((r.o.duration - 1) / r.o.reloadEvery)
	}
	if len(took) > 0 {
		fmt.Fprintf(w, "reloads: %d of %d done and seen live (sha256 in /api/v1/lists, an added name blocked, a removed one not), rename to live median %d ms, max %d ms\n",
			len(took), want, took[len(took)/2].Milliseconds(), took[len(took)-1].Milliseconds())
	} else {
		fmt.Fprintf(w, "reloads: 0 of %d done\n", want)
	}
	for _, f := range r.reloads.failed {
		fmt.Fprintln(w, "  reload failed:", f)
	}
	failIf(len(took) != want, "%d of %d reloads done", len(took), want)
	failIf(ev.reloadRecords < int64(len(took)), "%d reload records for %d reloads", ev.reloadRecords, len(took))

	warm, end, top := r.heapFigures()
	if warm.heap > 0 && end.heap > 0 {
		ratio := float64(end.heap) / float64(warm.heap)
		fmt.Fprintf(w, "heap_inuse: after warm-up %s (highest sample in %v..%v), at end %s (highest in the last %v), max %s; end/warm-up %.2fx (limit %.2fx)\n",
			mib(warm.heap), r.o.warmup, r.o.warmup+r.o.heapWindow, mib(end.heap), r.o.heapWindow, mib(top.heap), ratio, r.o.maxGrowth)
		fmt.Fprintf(w, "RSS: after warm-up %s, at end %s, max %s; end/warm-up %.2fx\n",
			mib(warm.rss), mib(end.rss), mib(top.rss), float64(end.rss)/float64(max(warm.rss, 1)))
		failIf(ratio > r.o.maxGrowth, "heap at end %.2fx heap after warm-up (limit %.2fx)", ratio, r.o.maxGrowth)
	} else {
		failIf(true, "no heap samples after warm-up or at the end")
	}

	if r.termErr != nil {
		fmt.Fprintln(w, "sinkd: SIGTERM:", r.termErr)
	} else {
		fmt.Fprintln(w, "sinkd: exited 0 after SIGTERM")
	}
	failIf(r.termErr != nil, "sinkd: %v", r.termErr)
	fmt.Fprintf(w, "verify: %s\n", r.verifyOut)
	failIf(r.verifyErr != nil, "sinkd verify: %v", r.verifyErr)

	if len(fails) == 0 {
		fmt.Fprintln(w, "result: PASS")
		return true
	}
	fmt.Fprintln(w, "result: FAIL")
	for _, f := range fails {
		fmt.Fprintln(w, "  -", f)
	}
	return false
}

// heapFigures are the highest heap (and RSS) sampled in the window after
// warm-up, in the last window, and over the whole run after warm-up.
func (r *report) heapFigures() (warm, end, top sample) {
	last := r.o.duration
	for _, s := range r.heap {
		if s.at < r.o.warmup {
			continue
		}
		if s.at < r.o.warmup+r.o.heapWindow {
			warm.heap, warm.rss = max(warm.heap, s.heap), max(warm.rss, s.rss)
		}
		if s.at > last-r.o.heapWindow {
			end.heap, end.rss = max(end.heap, s.heap), max(end.rss, s.rss)
		}
		top.heap, top.rss = max(top.heap, s.heap), max(top.rss, s.rss)
	}
	return warm, end, top
}
