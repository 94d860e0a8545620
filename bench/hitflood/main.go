// Command hitflood measures what the evidence log costs DNS answers under a
// flood of hits: an in-process resolver on 127.0.0.1 whose every answer is a
// hit (a listed name), asked by UDP clients, in alternating rounds of three
// modes: no recorder ("none": the resolver does not even build the hit),
// a recorder that drops hits ("discard": the resolver's own cost of
// handing hits over), and the evidence log ("evidence"). It prints
// each round's rate and latency percentiles and the medians per mode:
//
//	go run ./bench/hitflood -clients 8 -duration 5s -rounds 3             # as fast as it answers
//	go run ./bench/hitflood -clients 50 -rate 20000 -duration 5s -rounds 5 # a fixed flood of hits
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sinkd/sinkd/resolver"
	"github.com/sinkd/sinkd/sinkhole"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hitflood", flag.ContinueOnError)
	fs.SetOutput(stderr)
	clients := fs.Int("clients", 8, "concurrent closed-loop UDP clients")
	duration := fs.Duration("duration", 5*time.Second, "length of one round")
	rounds := fs.Int("rounds", 3, "rounds per mode (modes alternate)")
	segment := fs.Int64("segment", sinkhole.DefaultSegmentSize, "evidence segment size in bytes (huge: no gzip during the run)")
	rate := fs.Float64("rate", 0, "total queries per second, spread over the clients (0: each client asks as fast as answers come)")
	dir := fs.String("dir", "", "evidence directory (default: a temporary one, removed after)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *clients < 1 || *rounds < 1 {
		fs.Usage()
		return 2
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "hitflood")
		if err != nil {
			fmt.Fprintln(stderr, "hitflood:", err)
			return 1
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	results := map[string][]round{}
	modes := []string{"none", "discard", "evidence"}
	for r := 0; r < *rounds; r++ {
		for _, mode := range modes {
			res, err := flood(mode, filepath(*dir, r), *clients, *duration, *rate, *segment)
			if err != nil {
				fmt.Fprintln(stderr, "hitflood:", err)
				return 1
			}
			results[mode] = append(results[mode], res)
			fmt.Fprintf(stdout, "round %d %-8s %s\n", r+1, mode, res)
		}
	}
	for _, mode := range modes {
		fmt.Fprintf(stdout, "median   %-8s %s\n", mode, median(results[mode]))
	}
	return 0
}

func filepath(dir string, r int) string { return fmt.Sprintf("%s/round%d", dir, r) }

type round struct {
	qps           float64
	p50, p99, max time.Duration
	hits, lost    float64
}

func (r round) String() string {
	s := fmt.Sprintf("%8.0f q/s  p50 %-9v p99 %-9v max %v", r.qps, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.max.Round(time.Microsecond))
	if r.hits > 0 || r.lost > 0 {
		s += fmt.Sprintf("  (hit records %.0f, lost %.0f)", r.hits, r.lost)
	}
	return s
}

func median(rs []round) round {
	pick := func(f func(round) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return round{
		qps:  pick(func(r round) float64 { return r.qps }),
		p50:  time.Duration(pick(func(r round) float64 { return float64(r.p50) })),
		p99:  time.Duration(pick(func(r round) float64 { return float64(r.p99) })),
		max:  time.Duration(pick(func(r round) float64 { return float64(r.max) })),
		hits: pick(func(r round) float64 { return r.hits }),
		lost: pick(func(r round) float64 { return r.lost }),
	}
}

// discard is a recorder that drops every hit: what the resolver pays to
// hand hits over (a Hit and a copy of the reply), without a log.
type discard struct{}

func (discard) RecordHit(*sinkhole.Hit) {}

type noUpstream struct{}

func (noUpstream) Exchange(context.Context, *dns.Msg) (*dns.Msg, error) {
	return nil, errors.New("no upstream")
}
func (noUpstream) Ready() bool { return true }

func flood(mode, dir string, clients int, d time.Duration, rate float64, segment int64) (round, error) {
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	cfg := resolver.DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	var rec sinkhole.Recorder
	var ev *sinkhole.Log
	if mode == "discard" {
		rec = discard{}
	}
	if mode == "evidence" {
		ecfg := sinkhole.DefaultLogConfig()
		ecfg.Dir, ecfg.Instance = dir, "hitflood"
		ecfg.SegmentSize = segment
		var err error
		if ev, err = sinkhole.OpenLog(ecfg, reg, log); err != nil {
			return round{}, err
		}
		rec = ev
	}
	srv, err := resolver.New(cfg, noUpstream{}, rec, reg, log)
	if err != nil {
		return round{}, err
	}
	src := &sinkhole.Source{Name: "malware.txt", SHA256: "00", Action: sinkhole.ActionSinkhole, Category: "malware"}
	bl := sinkhole.NewBuilder(src)
	bl.AddDomain("evil.example", sinkhole.SyntaxPlain, "")
	srv.SetPolicy(sinkhole.NewPolicy(sinkhole.Settings{IPv4: netip.IPv4Unspecified(), IPv6: netip.IPv6Unspecified(), TTL: 60},
		[]*sinkhole.Rules{bl.Build()}))
	if err := srv.Listen(); err != nil {
		return round{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	addr := srv.Addrs()[0].String()

	var total atomic.Int64
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	begin := time.Now()
	stop := begin.Add(d)
	var every time.Duration
	if rate > 0 {
		every = time.Duration(float64(clients) / rate * float64(time.Second))
	}
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("udp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			buf := make([]byte, 1500)
			m := new(dns.Msg)
			next := begin.Add(time.Duration(c) * every / time.Duration(clients))
			for i := 0; ; i++ {
				if every > 0 {
					time.Sleep(time.Until(next)) // open loop: a fixed schedule
					next = next.Add(every)
				}
				now := time.Now()
				if now.After(stop) {
					return
				}
				m.SetQuestion(fmt.Sprintf("h%d-%d.evil.example.", c, i%1000), dns.TypeA)
				q, _ := m.Pack()
				_ = conn.SetDeadline(now.Add(time.Second))
				if _, err := conn.Write(q); err != nil {
					errs <- err
					return
				}
				if _, err := conn.Read(buf); err != nil {
					continue // a lost datagram: counted as missing, not as latency
				}
				lat[c] = append(lat[c], time.Since(now))
				total.Add(1)
			}
		}()
	}
	wg.Wait()
	cancel()
	if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
		return round{}, err
	}
	close(errs)
	for err := range errs {
		return round{}, err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) == 0 {
		return round{}, errors.New("no answers")
	}
	r := round{qps: float64(total.Load()) / d.Seconds(), p50: all[len(all)/2], p99: all[len(all)*99/100], max: all[len(all)-1]}
	if ev != nil {
		if err := ev.Close("hitflood round done"); err != nil {
			return round{}, err
		}
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			switch mf.GetName() {
			case "sinkd_evidence_records_total":
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == "hit" {
						r.hits = m.GetCounter().GetValue()
					}
				}
			case "sinkd_evidence_lost_total":
				for _, m := range mf.GetMetric() {
					r.lost += m.GetCounter().GetValue()
				}
			}
		}
	}
	return r, nil
}
