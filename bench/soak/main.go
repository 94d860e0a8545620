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
//	go run ./bench/soak -duration 90s -reload-every 15s -warmup 50s -heap-window 20s -segment-size 1MiB
//
// It exits 1 if any query failed, hits recorded != hits sent (or a hit
// record is duplicated, unexpected or a gap), a reload was not seen live,
// sinkd did not exit 0 after SIGTERM or logged an ERROR, verify failed or
// the heap grew more than -max-heap-growth; 2 on a usage error. Everything talks to
// 127.0.0.1 only: sinkd, its fake upstream (in this process) and the load.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sinkd/sinkd/internal/sinkdproc"
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
	fs.DurationVar(&o.heapWindow, "heap-window", time.Minute, "heap after warm-up and at end: the median sample of a window this long (GC makes single samples swing)")
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
	case o.sampleEvery <= 0 || o.heapWindow < o.sampleEvery || o.warmup+2*o.heapWindow > o.duration:
		fmt.Fprintln(stderr, "soak: want -sample-every > 0, -heap-window >= -sample-every, -warmup + 2 x -heap-window <= -duration (the windows after warm-up and at the end must not overlap)")
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
	logPath := filepath.Join(dir, "sinkd.log")
	sd, err := sinkdproc.Start(o.bin, cfg, logPath)
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
	upDrops0, _ := sinkdproc.UDPDrops(up.addr)
	mon.run(ctx, start, o.sampleEvery, start.Add(o.duration))
	wg.Wait() // the load has stopped and its last replies have come (or timed out)
	drops1, _ := sinkdproc.UDPDrops(sd.DNS)
	upDrops1, _ := sinkdproc.UDPDrops(up.addr)
	time.Sleep(o.settle)

	termErr := sd.Terminate(30 * time.Second)

	var r report
	r.o = o
	r.gen = gen.result()
	gen.latencies(&r.gen)
	r.drops, r.upDrops, r.genDrops = drops1-drops0, upDrops1-upDrops0, gen.sockDrops.Load()
	r.upstreamAsked = up.asked.Load()
	r.reloads = rl.result()
	r.heap = mon.samples
	r.termErr = termErr
	r.ev, err = countEvidence(o.bin, cfg, evDir, gen, rl)
	if err != nil {
		return false, err
	}
	r.verifyOut, r.verifyErr = verify(o.bin, cfg)
	if r.logErrors, r.logWarnings, err = scanLog(logPath); err != nil {
		return false, err
	}
	return r.print(out), nil
}

// sample is one reading of sinkd's memory.
type sample struct {
	at         time.Duration // since the load started
	heap, rss  int64
	goroutines int64
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
			n, _ := sinkdproc.Value(b, "go_goroutines")
			s.heap, s.rss, s.goroutines = int64(h), int64(r), int64(n)
			m.samples = append(m.samples, s)
		}
		g := m.gen.result()
		rl := m.rl.result()
		su, sh := m.gen.takeSlowest()
		fmt.Fprintf(m.out, "  %5v: sent %d answered %d failed %d (hits %d), slowest reply %v (hits %v), upstream asked %d, reloads %d, heap_inuse %s, RSS %s, goroutines %d, load avg %s\n",
			s.at, g.sent, g.answered, g.failed(), g.hitsSent, su.Round(time.Millisecond), sh.Round(time.Millisecond), m.up.asked.Load(), len(rl.took), mib(s.heap), mib(s.rss), s.goroutines, sinkdproc.LoadAvg())
		if !at.Before(until) {
			return
		}
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
