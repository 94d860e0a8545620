// Command reload measures live reload of zones.dir against the real sinkd
// binary, on loopback only:
//
//  1. latency: how long after a 100k-line list is renamed into zones.dir
//     its names are sinkholed (polling one of them over DNS);
//  2. load: under a steady query load at a fixed rate, a 1M-domain list is
//     replaced; it reports failed and timed-out queries, p99 latency while
//     the reload runs against the steady p99, and peak heap (and RSS)
//     during the reload against the steady peak.
//
// Run from the repository root (it builds ./cmd/sinkd):
//
//	go run ./bench/reload -mode latency -runs 7
//	go run ./bench/reload -mode load -qps 20000 -reloads 5
//
// The lists come from internal/synth, the generator behind bench/genlist
// (go run ./bench/genlist -domains 1000000 -o FILE writes the same bytes).
// Everything talks to 127.0.0.1 only: sinkd, its fake upstream (in this
// process) and the load.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/sinkd/sinkd/internal/sinkdproc"
	"github.com/sinkd/sinkd/internal/synth"
)

const sinkholeAddr = "192.0.2.254"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "reload:", err)
		os.Exit(1)
	}
}

func run() error {
	mode := flag.String("mode", "latency", "latency | load")
	bin := flag.String("sinkd", "", "sinkd binary (default: go build ./cmd/sinkd)")
	runs := flag.Int("runs", 7, "latency: renames to time")
	lines := flag.Int("lines", 100_000, "latency: domains in the renamed list")
	debounce := flag.Duration("debounce", 200*time.Millisecond, "zones.debounce")
	qps := flag.Int("qps", 20_000, "load: queries per second")
	domains := flag.Int("domains", 1_000_000, "load: domains in the replaced list")
	reloads := flag.Int("reloads", 5, "load: replacements, each after a steady window")
	blocked := flag.Float64("blocked", 0.1, "load: share of queries for listed names (each one a hit record)")
	steady := flag.Duration("steady", 4*time.Second, "load: steady window before each replacement")
	after := flag.Duration("after", 2*time.Second, "load: load after the last replacement is live")
	timeout := flag.Duration("timeout", time.Second, "load: a query unanswered this long has timed out")
	keep := flag.Bool("keep", false, "keep the temp dir and sinkd's log")
	flag.Parse()

	dir, err := os.MkdirTemp("", "sinkd-reload-bench")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	} else {
		fmt.Println("temp dir:", dir)
	}
	if *bin == "" {
		if *bin, err = sinkdproc.Build(dir); err != nil {
			return err
		}
	}
	up, stop, err := fakeUpstream()
	if err != nil {
		return err
	}
	defer stop()

	switch *mode {
	case "latency":
		return latency(*bin, dir, up, *debounce, *runs, *lines)
	case "load":
		return load(*bin, dir, up, *debounce, *qps, *domains, *reloads, *blocked, *steady, *after, *timeout)
	default:
		return fmt.Errorf("unknown -mode %q", *mode)
	}
}

// writeList writes a synthetic list of n domains for seed to path, and
// returns its last name.
func writeList(path string, seed uint64, n int) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	err = synth.WriteList(f, seed, n, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	g := synth.NewDomains(seed)
	var last string
	for range n {
		last = g.Next()
	}
	return last, nil
}

func latency(bin, dir, up string, debounce time.Duration, runs, lines int) error {
	sd, err := startSinkd(bin, dir, up, debounce)
	if err != nil {
		return err
	}
	defer sd.Kill()
	stage := filepath.Join(dir, "stage")
	if err := os.MkdirAll(stage, 0o750); err != nil {
		return err
	}
	c := &dns.Client{Timeout: time.Second}
	var took []time.Duration
	for i := range runs {
		src := filepath.Join(stage, "big.txt")
		name, err := writeList(src, uint64(100+i), lines)
		if err != nil {
			return err
		}
		if got := resolve(c, sd.DNS, name); got == sinkholeAddr {
			return fmt.Errorf("%s blocked before its list was dropped", name)
		}
		start := time.Now()
		if err := os.Rename(src, filepath.Join(sd.zones, "big.txt")); err != nil {
			return err
		}
		for resolve(c, sd.DNS, name) != sinkholeAddr {
			if time.Since(start) > 30*time.Second {
				return fmt.Errorf("run %d: %s not blocked after 30 s", i, name)
			}
			time.Sleep(time.Millisecond)
		}
		d := time.Since(start)
		took = append(took, d)
		fmt.Printf("run %d: %d-line list live %d ms after the rename\n", i+1, lines, d.Milliseconds())
	}
	slices.Sort(took)
	fmt.Printf("latency: runs=%d debounce=%v median=%d ms max=%d ms (target <= 1000 ms)\n",
		runs, debounce, took[len(took)/2].Milliseconds(), took[len(took)-1].Milliseconds())
	return nil
}

// resolve asks sinkd for name's A record; "" on any failure.
func resolve(c *dns.Client, server, name string) string {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, _, err := c.Exchange(m, server)
	if err != nil || len(r.Answer) == 0 {
		return ""
	}
	if a, ok := r.Answer[0].(*dns.A); ok {
		return a.A.String()
	}
	return ""
}

func load(bin, dir, up string, debounce time.Duration, qps, domains, reloads int, blocked float64, steady, after, timeout time.Duration) error {
	// Versions of one feed: version k holds version k-1's names and ten
	// more, as a feed update does. The load asks names in all of them, so
	// it is the same before, during and after each reload, and the whole
	// file is parsed each time.
	zd := filepath.Join(dir, "zones.d")
	stage := filepath.Join(dir, "stage")
	for _, d := range []string{zd, stage} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	fmt.Printf("generating %d lists of %d domains...\n", reloads+1, domains)
	if _, err := writeList(filepath.Join(zd, "feed.txt"), 1, domains); err != nil {
		return err
	}
	newest := make([]string, reloads+1) // a name only version k (and later) holds
	for k := 1; k <= reloads; k++ {
		var err error
		if newest[k], err = writeList(filepath.Join(stage, fmt.Sprintf("feed%d.txt", k)), 1, domains+10*k); err != nil {
			return err
		}
	}
	sd, err := startSinkd(bin, dir, up, debounce)
	if err != nil {
		return err
	}
	defer sd.Kill()

	// Queries: a share of listed names (answered by the policy, each a
	// hit record), the rest names the fake upstream answers (cached after
	// the first time). Every query is checked against the policy.
	listed := synth.DomainList(1, min(domains, 50_000))
	var names []string
	nb := int(blocked*1000 + 0.5)
	for i := range 1000 * 50 {
		if i%1000 < nb {
			names = append(names, listed[i%len(listed)])
		} else {
			names = append(names, fmt.Sprintf("host%d.good.example", i%5000))
		}
	}

	mon := newMonitor(sd)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go mon.run(ctx)

	gen, err := newLoadGen(sd.DNS, names, qps, timeout)
	if err != nil {
		return err
	}
	genDone := make(chan struct{})
	loadStart := time.Now()
	stopLoad := make(chan struct{})
	go func() { gen.run(stopLoad); close(genDone) }()

	// Cycles: a steady window, then a reload window from the rename to 1 s
	// after the new version is live (the old policy becomes garbage
	// then). The first steady window starts after 1 s of warm-up.
	type cycle struct {
		steadyFrom, renamed, live, reloadTo time.Time
		loadavg                             string // of the machine, at the rename
	}
	var cycles []cycle
	c := &dns.Client{Timeout: time.Second}
	from := loadStart.Add(time.Second)
	for k := 1; k <= reloads; k++ {
		time.Sleep(time.Until(from.Add(steady))) // the load runs meanwhile
		if resolve(c, sd.DNS, newest[k]) == sinkholeAddr {
			return fmt.Errorf("version %d's name is blocked before its rename", k)
		}
		la := sinkdproc.LoadAvg()
		renamed := time.Now()
		if err := os.Rename(filepath.Join(stage, fmt.Sprintf("feed%d.txt", k)), filepath.Join(sd.zones, "feed.txt")); err != nil {
			return err
		}
		for resolve(c, sd.DNS, newest[k]) != sinkholeAddr {
			if time.Since(renamed) > time.Minute {
				return fmt.Errorf("version %d is not live after a minute", k)
			}
			time.Sleep(2 * time.Millisecond)
		}
		live := time.Now()
		cycles = append(cycles, cycle{from, renamed, live, live.Add(time.Second), la})
		from = live.Add(time.Second)
	}
	time.Sleep(after)
	close(stopLoad)
	total := time.Since(loadStart)
	<-genDone
	cancel()
	mon.wait()

	all := gen.stats(loadStart, loadStart.Add(total))
	fmt.Printf("load: %.0f%% of queries for listed names\n", blocked*100)
	fmt.Printf("load: target %d qps for %.1f s, sent %d (%.0f qps), answered %d, timed out (>%v) %d, SERVFAIL/REFUSED/other rcode %d; kernel drops at sinkd's UDP socket %d\n",
		qps, total.Seconds(), all.sent, float64(all.sent)/total.Seconds(), all.answered, timeout, all.timedOut, all.failed,
		mon.dropped(loadStart, time.Now()))
	var ratios, heaps []float64
	for k, cy := range cycles {
		st := gen.stats(cy.steadyFrom, cy.renamed)
		rl := gen.stats(cy.renamed, cy.reloadTo)
		hs, rs := mon.peak(cy.steadyFrom, cy.renamed)
		hr, rr := mon.peak(cy.renamed, cy.reloadTo)
		s1, g1 := mon.cores(cy.steadyFrom, cy.renamed)
		s2, g2 := mon.cores(cy.renamed, cy.live)
		ratio := float64(rl.p99) / float64(max(st.p99, 1))
		heap := float64(hr) / float64(max(hs, 1))
		ratios, heaps = append(ratios, ratio), append(heaps, heap)
		fmt.Printf("reload %d: %d-domain list live %d ms after the rename\n", k+1, domains+10*(k+1), cy.live.Sub(cy.renamed).Milliseconds())
		fmt.Printf("  steady: n=%d p50=%v p99=%v p99.9=%v max=%v timed out %d, failed %d, socket drops %d\n",
			st.sent, st.p50, st.p99, st.p999, st.max, st.timedOut, st.failed, mon.dropped(cy.steadyFrom, cy.renamed))
		fmt.Printf("  reload: n=%d p50=%v p99=%v p99.9=%v max=%v timed out %d, failed %d, socket drops %d\n",
			rl.sent, rl.p50, rl.p99, rl.p999, rl.max, rl.timedOut, rl.failed, mon.dropped(cy.renamed, cy.reloadTo))
		fmt.Printf("  p99 reload/steady %.2fx; heap_inuse peak %d -> %d MiB (%.2fx); RSS peak %d -> %d MiB (%.2fx)\n",
			ratio, hs>>20, hr>>20, heap, rs>>20, rr>>20, float64(rr)/float64(max(rs, 1)))
		fmt.Printf("  CPU cores (of %d) steady -> rename..live: sinkd %.2f -> %.2f, load generator + fake upstream %.2f -> %.2f; load average %s\n",
			runtime.NumCPU(), s1, s2, g1, g2, cy.loadavg)
	}
	slices.Sort(ratios)
	slices.Sort(heaps)
	fmt.Printf("summary: %d reloads, p99 reload/steady median %.2fx max %.2fx (target <= 2x); heap_inuse peak ratio median %.2fx max %.2fx (target <= 2.2x); timed out %d (target 0)\n",
		len(ratios), ratios[len(ratios)/2], ratios[len(ratios)-1], heaps[len(heaps)/2], heaps[len(heaps)-1], all.timedOut)
	fmt.Println("(heap_inuse: /metrics go_memstats_heap_inuse_bytes polled every 50 ms; RSS: /proc/PID/status VmRSS every 10 ms)")
	return nil
}

// sinkd is a running sinkd binary and its zones.dir.
type sinkd struct {
	*sinkdproc.Process
	zones string
}

func startSinkd(bin, dir, up string, debounce time.Duration) (*sinkd, error) {
	zd := filepath.Join(dir, "zones.d")
	if err := os.MkdirAll(zd, 0o750); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "sinkd.yaml")
	yaml := fmt.Sprintf(`listen:
  dns: ["127.0.0.1:0"]
  http: 127.0.0.1:0
upstreams: ["%s"]
zones:
  dir: %s
  debounce: %v
evidence:
  dir: %s
  # No segment is closed (and gzip'ed in the background) during a run:
  # that work is the evidence log's, not the reload's.
  segment_size: 64GiB
sinkhole:
  ipv4: %s
`, up, zd, debounce, filepath.Join(dir, "hits"), sinkholeAddr)
	if err := os.WriteFile(cfg, []byte(yaml), 0o640); err != nil {
		return nil, err
	}
	p, err := sinkdproc.Start(bin, cfg, filepath.Join(dir, "sinkd.log"))
	if err != nil {
		return nil, err
	}
	return &sinkd{Process: p, zones: zd}, nil
}

// fakeUpstream answers every A query with 192.0.2.1 (TTL 3600) and
// everything else with NODATA, on 127.0.0.1.
func fakeUpstream() (string, func(), error) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Name + " 3600 IN A 192.0.2.1")
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	ready := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(ready) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-ready
	return pc.LocalAddr().String(), func() { _ = srv.Shutdown() }, nil
}

// monitor samples sinkd's heap (from /metrics) and RSS (from /proc).
type monitor struct {
	sd    *sinkd
	mu    sync.Mutex
	heap  []sample
	rss   []sample
	drops []sample // datagrams the kernel dropped at sinkd's DNS socket (receive buffer full)
	cpu   []cpuSample
	wg    sync.WaitGroup
}

// cpuSample holds CPU clock ticks (USER_HZ) used so far by sinkd and by
// this process.
type cpuSample struct {
	t           time.Time
	sinkd, self int64
}

type sample struct {
	t time.Time
	v int64
}

func newMonitor(sd *sinkd) *monitor { return &monitor{sd: sd} }

func (m *monitor) run(ctx context.Context) {
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		hc := &http.Client{Timeout: time.Second}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			b, err := sinkdproc.Scrape(hc, m.sd.HTTP)
			if err != nil {
				continue
			}
			if v, ok := sinkdproc.Value(b, "go_memstats_heap_inuse_bytes"); ok {
				m.mu.Lock()
				m.heap = append(m.heap, sample{time.Now(), int64(v)})
				m.mu.Unlock()
			}
		}
	}()
	go func() {
		defer m.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			v, err := sinkdproc.RSS(m.sd.Pid())
			if err != nil {
				continue
			}
			now := time.Now()
			m.mu.Lock()
			m.rss = append(m.rss, sample{now, v})
			m.mu.Unlock()
			if d, ok := sinkdproc.UDPDrops(m.sd.DNS); ok {
				m.mu.Lock()
				m.drops = append(m.drops, sample{now, d})
				m.mu.Unlock()
			}
			cs := cpuSample{t: now, sinkd: procTicks(m.sd.Pid()), self: procTicks(os.Getpid())}
			m.mu.Lock()
			m.cpu = append(m.cpu, cs)
			m.mu.Unlock()
		}
	}()
}

func (m *monitor) wait() { m.wg.Wait() }

// cores is the CPU used in [from, to), in cores: by sinkd and by this
// process (load generator and fake upstream).
func (m *monitor) cores(from, to time.Time) (sinkd, self float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var a, b *cpuSample
	for i := range m.cpu {
		if s := &m.cpu[i]; !s.t.Before(from) && s.t.Before(to) {
			if a == nil {
				a = s
			}
			b = s
		}
	}
	if a == nil || a == b {
		return 0, 0
	}
	sec := b.t.Sub(a.t).Seconds() * 100 // USER_HZ
	return float64(b.sinkd-a.sinkd) / sec, float64(b.self-a.self) / sec
}

// procTicks is utime+stime of a process, from /proc/PID/stat.
func procTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(string(f[11]), 10, 64)
	st, _ := strconv.ParseInt(string(f[12]), 10, 64)
	return u + st
}

// dropped is how many datagrams sinkd's socket dropped in [from, to).
func (m *monitor) dropped(from, to time.Time) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var first, last int64 = -1, 0
	for _, s := range m.drops {
		if !s.t.Before(from) && s.t.Before(to) {
			if first < 0 {
				first = s.v
			}
			last = s.v
		}
	}
	if first < 0 {
		return 0
	}
	return last - first
}

// peak is the highest heap and RSS sampled in [from, to).
func (m *monitor) peak(from, to time.Time) (heap, rss int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	top := func(ss []sample) int64 {
		var v int64
		for _, s := range ss {
			if !s.t.Before(from) && s.t.Before(to) {
				v = max(v, s.v)
			}
		}
		return v
	}
	return top(m.heap), top(m.rss)
}

// loadGen sends queries at a fixed rate over a few UDP sockets and times
// each reply.
type loadGen struct {
	conns   []*genConn
	qps     int
	timeout time.Duration
	names   [][]byte // packed queries, ID 0
}

type genConn struct {
	c       *net.UDPConn
	pending [1 << 16]atomic.Int64 // send time (UnixNano) by ID; 0: none
	mu      sync.Mutex
	recs    []rec
	nextID  uint16
}

// rec is one query: when it was sent, how long its reply took (-1: none),
// and its rcode.
type rec struct {
	sent  int64
	lat   int64
	rcode int8
}

func newLoadGen(server string, names []string, qps int, timeout time.Duration) (*loadGen, error) {
	g := &loadGen{qps: qps, timeout: timeout}
	for _, n := range names {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(n), dns.TypeA)
		m.Id = 0
		b, err := m.Pack()
		if err != nil {
			return nil, err
		}
		g.names = append(g.names, b)
	}
	raddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, err
	}
	for range 8 {
		c, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			return nil, err
		}
		_ = c.SetReadBuffer(4 << 20)
		g.conns = append(g.conns, &genConn{c: c})
	}
	return g, nil
}

// run sends until stop is closed, then waits out the timeout for the last
// replies.
func (g *loadGen) run(stop <-chan struct{}) {
	var wg sync.WaitGroup
	for _, gc := range g.conns {
		wg.Add(1)
		go func() { defer wg.Done(); gc.receive(g.timeout) }()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	sent := 0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 0, 512)
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-tick.C:
		}
		due := int(time.Since(start).Seconds() * float64(g.qps))
		for ; sent < due; sent++ {
			gc := g.conns[sent%len(g.conns)]
			q := g.names[rng.IntN(len(g.names))]
			buf = append(buf[:0], q...)
			gc.mu.Lock()
			id := gc.nextID
			gc.nextID++
			gc.mu.Unlock()
			binary.BigEndian.PutUint16(buf, id)
			now := time.Now().UnixNano()
			if old := gc.pending[id].Swap(now); old != 0 {
				gc.record(rec{sent: old, lat: -1}) // the ID wrapped: never answered
			}
			if _, err := gc.c.Write(buf); err != nil {
				gc.pending[id].Store(0)
				gc.record(rec{sent: now, lat: -1})
			}
		}
	}
	time.Sleep(g.timeout) // the last queries' replies may still come
	for _, gc := range g.conns {
		_ = gc.c.Close()
	}
	wg.Wait()
	for _, gc := range g.conns {
		for id := range gc.pending {
			if t := gc.pending[id].Swap(0); t != 0 {
				gc.record(rec{sent: t, lat: -1})
			}
		}
	}
}

func (gc *genConn) record(r rec) {
	gc.mu.Lock()
	gc.recs = append(gc.recs, r)
	gc.mu.Unlock()
}

func (gc *genConn) receive(timeout time.Duration) {
	b := make([]byte, 4096)
	for {
		n, err := gc.c.Read(b)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := time.Now().UnixNano()
		if n < 12 {
			continue
		}
		id := binary.BigEndian.Uint16(b)
		t := gc.pending[id].Swap(0)
		if t == 0 {
			continue // late or duplicate
		}
		lat := now - t
		if lat > int64(timeout) {
			lat = -1
		}
		gc.record(rec{sent: t, lat: lat, rcode: int8(b[3] & 0x0f)})
	}
}

type stats struct {
	sent, answered, timedOut, failed int
	p50, p99, p999, max              time.Duration
}

// stats summarises the queries sent in [from, to).
func (g *loadGen) stats(from, to time.Time) stats {
	var s stats
	var lats []int64
	f, t := from.UnixNano(), to.UnixNano()
	for _, gc := range g.conns {
		gc.mu.Lock()
		for _, r := range gc.recs {
			if r.sent < f || r.sent >= t {
				continue
			}
			s.sent++
			switch {
			case r.lat < 0:
				s.timedOut++
			case r.rcode != dns.RcodeSuccess && r.rcode != dns.RcodeNameError:
				s.failed++
				lats = append(lats, r.lat)
			default:
				s.answered++
				lats = append(lats, r.lat)
			}
		}
		gc.mu.Unlock()
	}
	if len(lats) == 0 {
		return s
	}
	slices.Sort(lats)
	q := func(p float64) time.Duration {
		return time.Duration(lats[min(len(lats)-1, int(p*float64(len(lats))))]).Round(time.Microsecond)
	}
	s.p50, s.p99, s.p999, s.max = q(0.50), q(0.99), q(0.999), time.Duration(lats[len(lats)-1]).Round(time.Microsecond)
	return s
}
