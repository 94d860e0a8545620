// Command contacts measures the sinkhole listener: how many short HTTP
// contacts per second it answers and records in the evidence log, and what
// that load costs DNS answers. In-process, on 127.0.0.1 only: a resolver
// whose every answer is a hit (a listed name) and a listener, both over one
// evidence log. Each round runs three phases on fresh servers:
//
//   - dns: a fixed rate of UDP queries alone (the latency baseline);
//   - dns+contacts: the same queries while workers open short HTTP
//     contacts (connect, GET with Host evil.example, read the block page
//     to EOF, close) at -contact-rate per second (0: as fast as they are
//     answered);
//   - contacts: the contact workers alone, as fast as they are answered
//     (the most contacts recorded per second).
//
// It prints each phase's figures and the medians per phase; the p99 of
// dns+contacts against dns is the cost of the contact load. By default the
// servers run in one child process and the contact clients in another
// (-procs=false: all in this one, where the clients' goroutines also delay
// the DNS clients):
//
//	go run ./bench/contacts -rounds 3 -duration 3s -rate 2000 -contact-rate 5000 -workers 8 -control
//
// Bounded: at most 10 rounds of at most 30 s per phase, and at most
// -max-contacts contacts per phase.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sinkd/sinkd/listener"
	"github.com/sinkd/sinkd/resolver"
	"github.com/sinkd/sinkd/sinkhole"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	duration    time.Duration
	rate        float64
	dnsClients  int
	workers     int
	contactRate float64
	maxContacts int64
	procs       bool
	cpuprofile  string
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("contacts", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	rounds := fs.Int("rounds", 3, "rounds (each runs the three phases), 1 to 10")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "length of one phase, up to 30s")
	fs.Float64Var(&o.rate, "rate", 2000, "DNS queries per second (open loop, spread over -dns-clients)")
	fs.IntVar(&o.dnsClients, "dns-clients", 4, "UDP clients sending the DNS queries")
	fs.IntVar(&o.workers, "workers", 8, "concurrent HTTP contact clients (closed loop)")
	fs.Float64Var(&o.contactRate, "contact-rate", 5000, "HTTP contacts per second during dns+contacts (open loop; 0: closed loop)")
	fs.Int64Var(&o.maxContacts, "max-contacts", 200000, "contacts per phase at most")
	fs.BoolVar(&o.procs, "procs", true, "servers and contact clients each in a child process (false: all in this one)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write the servers' CPU profile of the dns+contacts phases to this file (with -procs; the last round's)")
	control := fs.Bool("control", false, "a fourth phase, dns+plain: the same contact load against a plain TCP responder (read once, write a fixed 403, close) in the servers' process: the cost of the connections alone")
	childMode := fs.Bool("child", false, "internal: run as a child process")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *childMode {
		return runChild(fs.Args(), stdout)
	}
	if fs.NArg() > 0 || *rounds < 1 || *rounds > 10 || o.duration <= 0 || o.duration > 30*time.Second ||
		o.rate <= 0 || o.dnsClients < 1 || o.workers < 1 || o.contactRate < 0 || o.maxContacts < 1 {
		fs.Usage()
		return 2
	}
	dir, err := os.MkdirTemp("", "bench-contacts")
	if err != nil {
		fmt.Fprintln(stderr, "contacts:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	phases := []string{"dns", "dns+contacts", "contacts"}
	if *control {
		phases = append(phases, "dns+plain")
	}
	results := map[string][]result{}
	for r := range *rounds {
		for _, ph := range phases {
			res, err := phase(ph, filepath.Join(dir, fmt.Sprintf("round%d-%s", r, ph)), o)
			if err != nil {
				fmt.Fprintln(stderr, "contacts:", err)
				return 1
			}
			results[ph] = append(results[ph], res)
			fmt.Fprintf(stdout, "round %d %-13s %s\n", r+1, ph, res)
		}
	}
	for _, ph := range phases {
		fmt.Fprintf(stdout, "median  %-13s %s\n", ph, median(results[ph]))
	}
	base, load := median(results["dns"]), median(results["dns+contacts"])
	fmt.Fprintf(stdout, "DNS p99 with contacts / without: %.2f\n", float64(load.p99)/float64(base.p99))
	if *control {
		plain := median(results["dns+plain"])
		fmt.Fprintf(stdout, "DNS p99 with plain TCP load / without: %.2f; with contacts / with plain TCP load: %.2f\n",
			float64(plain.p99)/float64(base.p99), float64(load.p99)/float64(plain.p99))
	}
	return 0
}

// result is one phase's figures.
type result struct {
	qps           float64 // DNS answers per second
	p50, p99, max time.Duration
	dnsLost       int64   // queries without an answer within 1 s
	contacts      float64 // contact records written per second
	answered      float64 // HTTP contacts answered (block page read to EOF) per second
	contactErrs   int64
	evLost        float64 // evidence records lost (queue full)
}

func (r result) String() string {
	s := ""
	if r.qps > 0 {
		s = fmt.Sprintf("dns %6.0f q/s p50 %-8v p99 %-8v max %-8v lost %d", r.qps, r.p50.Round(time.Microsecond),
			r.p99.Round(time.Microsecond), r.max.Round(time.Microsecond), r.dnsLost)
	}
	if r.answered > 0 || r.contacts > 0 {
		s += fmt.Sprintf("  contacts recorded %6.0f/s (answered %6.0f/s, errors %d)", r.contacts, r.answered, r.contactErrs)
	}
	return s + fmt.Sprintf("  evidence lost %.0f", r.evLost)
}

func median(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return result{
		qps:         pick(func(r result) float64 { return r.qps }),
		p50:         time.Duration(pick(func(r result) float64 { return float64(r.p50) })),
		p99:         time.Duration(pick(func(r result) float64 { return float64(r.p99) })),
		max:         time.Duration(pick(func(r result) float64 { return float64(r.max) })),
		dnsLost:     int64(pick(func(r result) float64 { return float64(r.dnsLost) })),
		contacts:    pick(func(r result) float64 { return r.contacts }),
		answered:    pick(func(r result) float64 { return r.answered }),
		contactErrs: int64(pick(func(r result) float64 { return float64(r.contactErrs) })),
		evLost:      pick(func(r result) float64 { return r.evLost }),
	}
}

type noUpstream struct{}

func (noUpstream) Exchange(context.Context, *dns.Msg) (*dns.Msg, error) {
	return nil, errors.New("no upstream")
}
func (noUpstream) Ready() bool { return true }

// phase runs one phase on a fresh resolver, listener and evidence log: in
// this process, or (o.procs) the servers in one child process and the
// contact clients in another, so that neither the servers' nor the contact
// clients' goroutines delay this process's DNS clients and their clocks.
func phase(name, dir string, o options) (result, error) {
	var (
		srv    *servers
		sp     *child
		dnsAdr string
		httpAd string
		plain  string
		err    error
	)
	if o.procs {
		prof := ""
		if name == "dns+contacts" {
			prof = o.cpuprofile
		}
		if sp, err = startChild("serve", dir, prof); err != nil {
			return result{}, err
		}
		defer sp.kill()
		if _, err := fmt.Fscan(sp.out, &dnsAdr, &httpAd, &plain); err != nil {
			return result{}, fmt.Errorf("serve child: %w", err)
		}
	} else {
		if srv, err = startServers(dir); err != nil {
			return result{}, err
		}
		dnsAdr, httpAd, plain = srv.dns, srv.http, srv.plain
	}
	if name == "dns+plain" {
		httpAd = plain
	}

	var r result
	stop := time.Now().Add(o.duration)
	var load sync.WaitGroup
	var dnsErr, httpErr error
	if name != "contacts" {
		load.Go(func() { r.qps, r.p50, r.p99, r.max, r.dnsLost, dnsErr = askDNS(dnsAdr, o, stop) })
	}
	if name != "dns" {
		load.Go(func() {
			rate := o.contactRate
			if name == "contacts" {
				rate = 0
			}
			var n int64
			if o.procs {
				n, r.contactErrs, httpErr = floodChild(httpAd, o, rate)
			} else {
				n, r.contactErrs, httpErr = contactLoad(httpAd, o.workers, o.maxContacts, rate, stop)
			}
			r.answered = float64(n) / o.duration.Seconds()
		})
	}
	load.Wait()
	var contacts float64
	if o.procs {
		_ = sp.in.Close() // the child stops, closes the log and prints its counts
		if _, err := fmt.Fscan(sp.out, &contacts, &r.evLost); err != nil {
			return result{}, fmt.Errorf("serve child: %w", err)
		}
	} else if contacts, r.evLost, err = srv.stop(); err != nil {
		return result{}, err
	}
	r.contacts = contacts / o.duration.Seconds()
	return r, errors.Join(dnsErr, httpErr)
}

// servers are a resolver and a listener on 127.0.0.1 over one evidence
// log; every DNS answer is a hit (evil.example and below, sinkholed to
// 127.0.0.1).
type servers struct {
	dns, http string
	plain     string // a plain TCP responder (the control)
	plainLn   net.Listener
	ev        *sinkhole.Log
	reg       *prometheus.Registry
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	served    chan error
}

func startServers(dir string) (*servers, error) {
	log := slog.New(slog.DiscardHandler)
	s := &servers{reg: prometheus.NewRegistry(), served: make(chan error, 1)}
	ecfg := sinkhole.DefaultLogConfig()
	ecfg.Dir, ecfg.Instance = dir, "bench"
	var err error
	if s.ev, err = sinkhole.OpenLog(ecfg, s.reg, log); err != nil {
		return nil, err
	}
	cfg := resolver.DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	srv, err := resolver.New(cfg, noUpstream{}, s.ev, s.reg, log)
	if err != nil {
		return nil, err
	}
	src := &sinkhole.Source{Name: "malware.txt", SHA256: "00", Action: sinkhole.ActionSinkhole, Category: "malware"}
	bl := sinkhole.NewBuilder(src)
	bl.AddDomain("evil.example", sinkhole.SyntaxPlain, "")
	srv.SetPolicy(sinkhole.NewPolicy(sinkhole.Settings{IPv4: netip.MustParseAddr("127.0.0.1"), IPv6: netip.IPv6Unspecified(), TTL: 60},
		[]*sinkhole.Rules{bl.Build()}))
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	ln, err := listener.New(listener.Config{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, TCPPorts: []uint16{0},
		CaptureBytes: listener.DefaultCaptureBytes, IdleTimeout: listener.DefaultIdleTimeout, MaxConns: listener.DefaultMaxConns,
		HTTPReply: listener.ReplyPage, Instance: "bench"}, s.ev, s.reg, log)
	if err != nil {
		return nil, err
	}
	var ctx context.Context
	ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Go(func() { s.served <- srv.Serve(ctx) })
	s.wg.Go(func() { _ = ln.Serve(ctx) })
	s.dns, s.http = srv.Addrs()[0].String(), ln.TCPAddrs()[0].String()
	if s.plainLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	s.plain = s.plainLn.Addr().String()
	s.wg.Go(func() { plainResponder(s.plainLn) })
	return s, nil
}

// plainResponder is the control: per connection one read, a fixed 403,
// close; no parsing, no record.
func plainResponder(ln net.Listener) {
	reply := []byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Go(func() {
			defer c.Close()
			buf := make([]byte, 4096)
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(buf); err == nil {
				_, _ = c.Write(reply)
			}
		})
	}
}

// stop stops the servers, closes the log and returns the contact records
// written and the evidence records lost.
func (s *servers) stop() (contacts, lost float64, err error) {
	s.cancel()
	_ = s.plainLn.Close()
	s.wg.Wait()
	if err := <-s.served; err != nil && !errors.Is(err, context.Canceled) {
		return 0, 0, err
	}
	if err := s.ev.Close("bench phase done"); err != nil {
		return 0, 0, err
	}
	mfs, err := s.reg.Gather()
	if err != nil {
		return 0, 0, err
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "sinkd_evidence_records_total":
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetValue() == "contact" {
						contacts = m.GetCounter().GetValue()
					}
				}
			}
		case "sinkd_evidence_lost_total":
			for _, m := range mf.GetMetric() {
				lost += m.GetCounter().GetValue()
			}
		}
	}
	return contacts, lost, nil
}

// child is this program run again in another mode.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startChild(args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &child{cmd: exec.Command(exe, append([]string{"-child"}, args...)...)}
	c.cmd.Stderr = os.Stderr
	if c.in, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c.out = bufio.NewReader(out)
	return c, c.cmd.Start()
}

// kill ends the child (if still running) and reaps it.
func (c *child) kill() {
	_ = c.in.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// floodChild runs the contact clients in a child process.
func floodChild(addr string, o options, rate float64) (n, failed int64, err error) {
	c, err := startChild("flood", addr, strconv.Itoa(o.workers), strconv.FormatInt(o.maxContacts, 10),
		strconv.FormatFloat(rate, 'f', -1, 64), o.duration.String())
	if err != nil {
		return 0, 0, err
	}
	defer c.kill()
	var msg string
	if _, err := fmt.Fscan(c.out, &n, &failed, &msg); err != nil {
		return 0, 0, fmt.Errorf("flood child: %w", err)
	}
	if msg != "ok" {
		return n, failed, fmt.Errorf("flood child: %s", msg)
	}
	return n, failed, nil
}

// runChild is the -child side: "serve DIR PROFILE" prints the DNS and HTTP
// addresses (and the control's), serves until stdin closes, then prints the contacts written
// and the records lost; "flood ADDR WORKERS MAX RATE DURATION" runs the
// contact clients and prints answered, failed and ok (or the error).
func runChild(args []string, stdout io.Writer) int {
	switch {
	case len(args) == 3 && args[0] == "serve":
		if args[2] != "" {
			f, err := os.Create(args[2])
			if err != nil {
				fmt.Fprintln(os.Stderr, "contacts serve:", err)
				return 1
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				fmt.Fprintln(os.Stderr, "contacts serve:", err)
				return 1
			}
			defer pprof.StopCPUProfile()
		}
		s, err := startServers(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "contacts serve:", err)
			return 1
		}
		fmt.Fprintln(stdout, s.dns, s.http, s.plain)
		_, _ = io.Copy(io.Discard, os.Stdin)
		contacts, lost, err := s.stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "contacts serve:", err)
			return 1
		}
		fmt.Fprintln(stdout, contacts, lost)
		return 0
	case len(args) == 6 && args[0] == "flood":
		workers, err1 := strconv.Atoi(args[2])
		maxN, err2 := strconv.ParseInt(args[3], 10, 64)
		rate, err3 := strconv.ParseFloat(args[4], 64)
		d, err4 := time.ParseDuration(args[5])
		if err := errors.Join(err1, err2, err3, err4); err != nil || workers < 1 || d > 30*time.Second {
			fmt.Fprintln(os.Stderr, "contacts flood: bad arguments", args)
			return 2
		}
		n, failed, err := contactLoad(args[1], workers, maxN, rate, time.Now().Add(d))
		msg := "ok"
		if err != nil {
			msg = strconv.Quote(err.Error())
		}
		fmt.Fprintln(stdout, n, failed, msg)
		return 0
	}
	fmt.Fprintln(os.Stderr, "contacts: bad -child arguments", args)
	return 2
}

// askDNS sends o.rate queries per second (open loop: a fixed schedule, so
// that a slow answer does not lower the load) until stop, and returns the
// answer rate and latency percentiles.
func askDNS(addr string, o options, stop time.Time) (qps float64, p50, p99, maxLat time.Duration, lost int64, err error) {
	every := time.Duration(float64(o.dnsClients) / o.rate * float64(time.Second))
	lat := make([][]time.Duration, o.dnsClients)
	var lostN atomic.Int64
	errs := make(chan error, o.dnsClients)
	var wg sync.WaitGroup
	begin := time.Now()
	for c := range o.dnsClients {
		wg.Go(func() {
			conn, err := net.Dial("udp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			buf := make([]byte, 1500)
			m := new(dns.Msg)
			next := begin.Add(time.Duration(c) * every / time.Duration(o.dnsClients))
			for i := 0; ; i++ {
				time.Sleep(time.Until(next))
				next = next.Add(every)
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
					lostN.Add(1)
					continue
				}
				lat[c] = append(lat[c], time.Since(now))
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, 0, 0, 0, err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return 0, 0, 0, 0, 0, errors.New("no DNS answers")
	}
	slices.Sort(all)
	d := time.Since(begin).Seconds()
	return float64(len(all)) / d, all[len(all)/2], all[len(all)*99/100], all[len(all)-1], lostN.Load(), nil
}

var (
	request  = []byte("GET /gate.php HTTP/1.1\r\nHost: evil.example\r\nUser-Agent: bench/1\r\nAccept: */*\r\n\r\n")
	wantHead = []byte("HTTP/1.1 403 ")
)

// contactLoad runs workers clients that each open a contact, send an
// HTTP request, read the block page to EOF and close, until stop or
// maxContacts: rate per second in all on a fixed schedule, or (rate 0)
// each the next as soon as the last is done. It returns the contacts answered and the failed ones.
// Clients close with SO_LINGER 0 after reading the reply, so that
// hundreds of thousands of contacts do not leave TIME_WAIT sockets
// holding 127.0.0.1's ephemeral ports.
func contactLoad(addr string, workers int, maxContacts int64, rate float64, stop time.Time) (n, failed int64, err error) {
	var ok, bad atomic.Int64
	var started atomic.Int64
	var wg sync.WaitGroup
	var every time.Duration
	if rate > 0 {
		every = time.Duration(float64(workers) / rate * float64(time.Second))
	}
	begin := time.Now()
	for w := range workers {
		wg.Go(func() {
			buf := make([]byte, 4096)
			next := begin.Add(time.Duration(w) * every / time.Duration(workers))
			for time.Now().Before(stop) && started.Add(1) <= maxContacts {
				if every > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(every)
				}
				if contact(addr, buf) {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() == 0 {
		return 0, bad.Load(), errors.New("no HTTP contact answered")
	}
	return ok.Load(), bad.Load(), nil
}

func contact(addr string, buf []byte) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	tc := c.(*net.TCPConn)
	defer func() { _ = tc.SetLinger(0); _ = tc.Close() }()
	_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := tc.Write(request); err != nil {
		return false
	}
	n := 0
	for {
		m, err := tc.Read(buf[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil || n == len(buf) {
			return false
		}
	}
	return bytes.HasPrefix(buf[:n], wantHead)
}
