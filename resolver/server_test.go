package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/sinkd/sinkd/sinkhole"
)

// startUpstream runs a fake upstream DNS server on 127.0.0.1 (UDP).
func startUpstream(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(ready) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-ready
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// clientUpstream asks one upstream with a plain dns.Client: a fake of the
// upstream pool that still talks to a real server over loopback.
type clientUpstream struct {
	addr string
}

func (u clientUpstream) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	q = q.Copy()
	if o := q.IsEdns0(); o != nil {
		o.SetUDPSize(65535) // the fake upstream only speaks UDP
	}
	c := &dns.Client{Net: "udp"}
	r, _, err := c.ExchangeContext(ctx, q, u.addr)
	return r, err
}

func (clientUpstream) Ready() bool { return true }

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type testServer struct {
	*Server
	addr string
	reg  *prometheus.Registry
	clk  *clock
}

// startServer runs a Server on 127.0.0.1 with an ephemeral port.
func startServer(t *testing.T, up Upstream, mod func(*Config)) *testServer {
	t.Helper()
	return startServerWith(t, up, nil, mod)
}

// startServerWith is startServer with a hit recorder.
func startServerWith(t *testing.T, up Upstream, rec sinkhole.Recorder, mod func(*Config)) *testServer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.QueryTimeout = 500 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	clk := newClock()
	s, err := New(cfg, up, rec, reg, slog.New(slog.NewTextHandler(io.Discard, nil)), WithClock(clk.now))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &testServer{Server: s, addr: s.Addrs()[0].String(), reg: reg, clk: clk}
}

func (ts *testServer) ask(t *testing.T, net string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: net, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, ts.addr)
	if err != nil {
		t.Fatalf("%s query %s: %v", net, m.Question[0].Name, err)
	}
	return r
}

func newQuery(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// answerA answers every A query with addr and ttl, counting queries.
func answerA(count *atomic.Int32, addr string, ttl uint32) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		count.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(r.Question[0].Name + " IN A " + addr)
			rr.Header().Ttl = ttl
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	}
}

func TestCacheAnswersAndCountsTTLDown(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 300))}, nil)

	r := ts.ask(t, "udp", newQuery("www.example.com.", dns.TypeA))
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" || r.Answer[0].Header().Ttl != 300 {
		t.Fatalf("first answer = %v", r.Answer)
	}
	if !r.RecursionAvailable || !r.Response {
		t.Errorf("RA/QR not set: %v", r.MsgHdr)
	}
	ts.clk.advance(100 * time.Second)
	r = ts.ask(t, "udp", newQuery("www.example.com.", dns.TypeA))
	if got := r.Answer[0].Header().Ttl; got != 200 {
		t.Errorf("TTL after 100 s = %d, want 200", got)
	}
	if got := n.Load(); got != 1 {
		t.Errorf("upstream asked %d times for two queries, want 1", got)
	}
	if got := testutil.ToFloat64(ts.m.hits); got != 1 {
		t.Errorf("cache hits = %v, want 1", got)
	}
	ts.clk.advance(201 * time.Second)
	ts.ask(t, "udp", newQuery("www.example.com.", dns.TypeA))
	if got := n.Load(); got != 2 {
		t.Errorf("upstream asked %d times after expiry, want 2", got)
	}
}

func TestCacheNegativeAnswerPerRFC2308(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		soa, _ := dns.NewRR("example.com. 3600 IN SOA ns.example.com. h.example.com. 1 3600 600 86400 60")
		m.Ns = []dns.RR{soa}
		_ = w.WriteMsg(m)
	})
	ts := startServer(t, clientUpstream{up}, nil)
	for range 2 {
		r := ts.ask(t, "udp", newQuery("nope.example.com.", dns.TypeA))
		if r.Rcode != dns.RcodeNameError {
			t.Fatalf("rcode = %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
		}
		if len(r.Ns) != 1 || r.Ns[0].Header().Ttl != 60 {
			t.Fatalf("authority = %v, want the SOA with TTL min(3600, 60)", r.Ns)
		}
	}
	if got := n.Load(); got != 1 {
		t.Errorf("upstream asked %d times, want 1 (NXDOMAIN cached)", got)
	}
	ts.clk.advance(61 * time.Second)
	ts.ask(t, "udp", newQuery("nope.example.com.", dns.TypeA))
	if got := n.Load(); got != 2 {
		t.Errorf("upstream asked %d times after the negative TTL, want 2", got)
	}
}

func TestServeStaleWhenUpstreamsFail(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	var dead atomic.Bool
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if dead.Load() {
			return // never answers
		}
		answerA(&n, "192.0.2.7", 10)(w, r)
	})
	ts := startServer(t, clientUpstream{up}, func(c *Config) { c.QueryTimeout = 200 * time.Millisecond })
	ts.ask(t, "udp", newQuery("stale.example.", dns.TypeA))
	dead.Store(true)
	ts.clk.advance(time.Minute)

	m := newQuery("stale.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	r := ts.ask(t, "udp", m)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 30 {
		t.Fatalf("stale answer = %s %v, want the old record with TTL 30", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if ede := edeOf(r); ede == nil || ede.InfoCode != dns.ExtendedErrorCodeStaleAnswer {
		t.Errorf("EDE = %v, want 3 (Stale Answer)", ede)
	}
	// A name never seen gets SERVFAIL within the timeout.
	r = ts.ask(t, "udp", newQuery("never.example.", dns.TypeA))
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode = %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func edeOf(m *dns.Msg) *dns.EDNS0_EDE {
	if o := m.IsEdns0(); o != nil {
		for _, opt := range o.Option {
			if e, ok := opt.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

func TestAccessControlRefusesOutsiders(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, func(c *Config) {
		c.Access.Allow = MustPrefixes("10.0.0.0/8") // loopback is not allowed
	})
	for _, net := range []string{"udp", "tcp"} {
		if r := ts.ask(t, net, newQuery("example.com.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
			t.Errorf("%s: rcode = %s, want REFUSED", net, dns.RcodeToString[r.Rcode])
		}
	}
	if n.Load() != 0 {
		t.Error("upstream was asked for a refused client")
	}
}

func TestRateLimitDropsExcess(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, func(c *Config) {
		c.Access.RateLimit = 5
		c.Access.RateLimitExempt = nil
	})
	answered := 0
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	for range 8 { // the fake clock stands still: all in one second
		if _, _, err := c.Exchange(newQuery("example.com.", dns.TypeA), ts.addr); err == nil {
			answered++
		}
	}
	if answered != 5 {
		t.Errorf("answered %d of 8 queries, want 5", answered)
	}
	if got := testutil.ToFloat64(ts.m.limited); got != 3 {
		t.Errorf("sinkd_ratelimited_total = %v, want 3", got)
	}
	ts.clk.advance(time.Second)
	ts.ask(t, "udp", newQuery("example.com.", dns.TypeA)) // a new second, a new budget
}

func TestANYGetsRFC8482Answer(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, nil)
	r := ts.ask(t, "udp", newQuery("example.com.", dns.TypeANY))
	if len(r.Answer) != 1 {
		t.Fatalf("answer = %v", r.Answer)
	}
	h, ok := r.Answer[0].(*dns.HINFO)
	if !ok || h.Cpu != "RFC8482" || h.Os != "" {
		t.Errorf("answer = %v, want HINFO \"RFC8482\" \"\"", r.Answer[0])
	}
	if n.Load() != 0 {
		t.Error("upstream was asked for ANY")
	}
}

func TestLargeAnswerTruncatedOverUDPWholeOverTCP(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range 15 {
			rr, _ := dns.NewRR(r.Question[0].Name + ` 300 IN TXT "` + strings.Repeat(string(rune('a'+i)), 200) + `"`)
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
	ts := startServer(t, clientUpstream{up}, nil)
	tests := []struct {
		name    string
		net     string
		edns    uint16
		wantTC  bool
		wantAns int
	}{
		{name: "udp without EDNS", net: "udp", wantTC: true},
		{name: "udp with EDNS 4096 (capped at 1232)", net: "udp", edns: 4096, wantTC: true},
		{name: "tcp", net: "tcp", wantAns: 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newQuery("big.example.", dns.TypeTXT)
			if tt.edns > 0 {
				m.SetEdns0(tt.edns, false)
			}
			c := &dns.Client{Net: tt.net, Timeout: 2 * time.Second, UDPSize: 65535}
			r, _, err := c.Exchange(m, ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			if r.Truncated != tt.wantTC || len(r.Answer) != tt.wantAns {
				t.Errorf("TC=%v answers=%d rcode=%s, want TC=%v answers=%d", r.Truncated, len(r.Answer), dns.RcodeToString[r.Rcode], tt.wantTC, tt.wantAns)
			}
			if tt.edns > 0 && r.IsEdns0() == nil {
				t.Error("no OPT in the reply to an EDNS query")
			}
		})
	}
}

func TestCoalescesIdenticalQueries(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	release := make(chan struct{})
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		<-release
		answerA(&n, "192.0.2.9", 60)(w, r)
	})
	ts := startServer(t, clientUpstream{up}, func(c *Config) { c.QueryTimeout = 5 * time.Second })
	const clients = 50
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
			r, _, err := c.Exchange(newQuery("hot.example.", dns.TypeA), ts.addr)
			if err == nil && len(r.Answer) != 1 {
				err = errors.New("no answer")
			}
			errs <- err
		}()
	}
	waitFor(t, "50 cache misses", func() bool { return testutil.ToFloat64(ts.m.misses) == clients })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := n.Load(); got != 1 {
		t.Errorf("upstream asked %d times for %d identical queries, want 1", got, clients)
	}
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPrefetchRefreshesPopularEntries(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 100))}, nil)
	for range 3 {
		ts.ask(t, "udp", newQuery("popular.example.", dns.TypeA))
	}
	ts.clk.advance(95 * time.Second) // in the last tenth of its life
	r := ts.ask(t, "udp", newQuery("popular.example.", dns.TypeA))
	if r.Answer[0].Header().Ttl != 5 {
		t.Errorf("TTL = %d, want 5 (served from cache while prefetching)", r.Answer[0].Header().Ttl)
	}
	waitFor(t, "the prefetch to ask upstream", func() bool { return n.Load() == 2 })
	waitFor(t, "the refreshed entry", func() bool {
		return ts.ask(t, "udp", newQuery("popular.example.", dns.TypeA)).Answer[0].Header().Ttl == 100
	})
}

func TestProtocolEdges(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, nil)
	tests := []struct {
		name      string
		msg       func() *dns.Msg
		wantRcode int
	}{
		{name: "no question", msg: func() *dns.Msg { m := newQuery("a.example.", dns.TypeA); m.Question = nil; return m }, wantRcode: dns.RcodeFormatError},
		{name: "two questions", msg: func() *dns.Msg {
			m := newQuery("a.example.", dns.TypeA)
			m.Question = append(m.Question, m.Question[0])
			return m
		}, wantRcode: dns.RcodeFormatError},
		{name: "NOTIFY opcode", msg: func() *dns.Msg { m := newQuery("a.example.", dns.TypeSOA); m.Opcode = dns.OpcodeNotify; return m }, wantRcode: dns.RcodeNotImplemented},
		{name: "UPDATE opcode", msg: func() *dns.Msg { m := newQuery("a.example.", dns.TypeSOA); m.Opcode = dns.OpcodeUpdate; return m }, wantRcode: dns.RcodeNotImplemented},
		{name: "CHAOS class", msg: func() *dns.Msg {
			m := newQuery("version.bind.", dns.TypeTXT)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}, wantRcode: dns.RcodeNotImplemented},
		{name: "EDNS version 1", msg: func() *dns.Msg {
			m := newQuery("a.example.", dns.TypeA)
			m.SetEdns0(1232, false)
			m.IsEdns0().SetVersion(1)
			return m
		}, wantRcode: dns.RcodeBadVers},
		{name: "RD=0 answered like RD=1", msg: func() *dns.Msg { m := newQuery("a.example.", dns.TypeA); m.RecursionDesired = false; return m }, wantRcode: dns.RcodeSuccess},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ts.ask(t, "udp", tt.msg())
			if r.Rcode != tt.wantRcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.wantRcode])
			}
		})
	}
}

func TestEchoesCaseAndHonoursEDNS(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, nil)
	ts.ask(t, "udp", newQuery("mixed.example.", dns.TypeA)) // cache it in lower case
	m := newQuery("MiXeD.ExAmPlE.", dns.TypeA)
	m.SetEdns0(4096, true)
	m.CheckingDisabled = true
	r := ts.ask(t, "udp", m)
	if r.Question[0].Name != "MiXeD.ExAmPlE." {
		t.Errorf("question = %q, want the client's letter case", r.Question[0].Name)
	}
	opt := r.IsEdns0()
	if opt == nil || opt.UDPSize() != 1232 || !opt.Do() {
		t.Errorf("OPT = %v, want size 1232 with DO echoed", opt)
	}
	if !r.CheckingDisabled {
		t.Error("CD not copied")
	}
	if r := ts.ask(t, "udp", newQuery("mixed.example.", dns.TypeA)); r.IsEdns0() != nil {
		t.Error("OPT in the reply to a query without EDNS (RFC 6891)")
	}
	if n.Load() != 2 { // DO and CD are part of the cache key
		t.Errorf("upstream asked %d times, want 2", n.Load())
	}
}

func TestTCPPipelining(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, nil)
	conn, err := dns.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want := map[uint16]string{}
	for i, name := range []string{"a.example.", "b.example.", "c.example."} {
		m := newQuery(name, dns.TypeA)
		m.Id = uint16(100 + i)
		want[m.Id] = name
		if err := conn.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	for range want {
		r, err := conn.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if want[r.Id] != r.Question[0].Name || len(r.Answer) != 1 {
			t.Errorf("reply %d for %s with %v", r.Id, r.Question[0].Name, r.Answer)
		}
		delete(want, r.Id)
	}
}

func TestTCPIdleTimeoutClosesConnection(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, func(c *Config) {
		c.TCPIdleTimeout = 100 * time.Millisecond
	})
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read on an idle connection: %v, want EOF (closed by the server)", err)
	}
}

func TestMetricNamesPassPromlint(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, nil)
	ts.ask(t, "udp", newQuery("example.com.", dns.TypeA))
	mfs, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if got := testutil.ToFloat64(ts.m.queries[protoUDP][qtypeIndex(dns.TypeA)][0]); got != 1 {
		t.Errorf("sinkd_queries_total{proto=udp,qtype=A,rcode=NOERROR} = %v, want 1", got)
	}
}

func TestListenIPv6AndWildcard(t *testing.T) {
	t.Parallel()
	if c, err := net.ListenPacket("udp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		_ = c.Close()
	}
	var n atomic.Int32
	up := clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}
	tests := []struct {
		name    string
		listen  string
		askHost []string // where the client sends, on the bound port
	}{
		{name: "IPv6 loopback", listen: "[::1]:0", askHost: []string{"::1"}},
		{name: "IPv4 wildcard answers from the queried address", listen: "0.0.0.0:0", askHost: []string{"127.0.0.1", "127.0.0.2"}},
		{name: "IPv6 wildcard", listen: "[::]:0", askHost: []string{"::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, up, func(c *Config) { c.Listen = []string{tt.listen} })
			port := ts.Addrs()[0].Port()
			for _, h := range tt.askHost {
				addr := net.JoinHostPort(h, fmt.Sprint(port))
				for _, network := range []string{"udp", "tcp"} {
					// dns.Client rejects replies from another source address
					// on a connected UDP socket: an answer proves the source.
					c := &dns.Client{Net: network, Timeout: 2 * time.Second}
					r, _, err := c.Exchange(newQuery("v6.example.", dns.TypeA), addr)
					if err != nil || len(r.Answer) != 1 {
						t.Errorf("%s %s: %v %v", network, addr, err, r)
					}
				}
			}
		})
	}
}
