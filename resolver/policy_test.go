package resolver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sinkd/sinkd/sinkhole"
)

// hitLog is a Recorder that keeps every hit.
type hitLog struct {
	mu   sync.Mutex
	hits []*sinkhole.Hit
}

func (l *hitLog) RecordHit(h *sinkhole.Hit) { l.mu.Lock(); l.hits = append(l.hits, h); l.mu.Unlock() }

func (l *hitLog) all() []*sinkhole.Hit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*sinkhole.Hit(nil), l.hits...)
}

// testPolicy builds a policy from lists of rules (names or prefixes), each
// list with its action.
func testPolicy(t *testing.T, lists ...testList) *sinkhole.Policy {
	t.Helper()
	var rs []*sinkhole.Rules
	for _, l := range lists {
		b := sinkhole.NewBuilder(&sinkhole.Source{Name: l.name, SHA256: "ab", Action: l.action, Allow: l.allow})
		for _, r := range l.rules {
			if p, err := netip.ParsePrefix(r); err == nil {
				b.AddPrefix(p, "")
			} else {
				b.AddDomain(r, sinkhole.SyntaxPlain, "")
			}
		}
		rs = append(rs, b.Build())
	}
	return sinkhole.NewPolicy(sinkhole.Settings{IPv4: netip.MustParseAddr("192.0.2.254"), IPv6: netip.IPv6Unspecified(), TTL: 60}, rs)
}

type testList struct {
	name   string
	action sinkhole.Action
	allow  bool
	rules  []string
}

// zoneUpstream answers from fixed records, following CNAMEs, and counts
// the queries it gets per name.
func zoneUpstream(t *testing.T, asked *sync.Map, records ...string) string {
	t.Helper()
	var rrs []dns.RR
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	return startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		n, _ := asked.LoadOrStore(q.Name, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		name := q.Name
		for _, rr := range rrs {
			if rr.Header().Name == name && (rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == dns.TypeCNAME) {
				m.Answer = append(m.Answer, rr)
				if c, ok := rr.(*dns.CNAME); ok {
					name = c.Target
				}
			}
		}
		_ = w.WriteMsg(m)
	})
}

func askedTimes(asked *sync.Map, name string) int32 {
	if n, ok := asked.Load(name); ok {
		return n.(*atomic.Int32).Load()
	}
	return 0
}

func TestPolicyPipeline(t *testing.T) {
	t.Parallel()
	var asked sync.Map
	up := zoneUpstream(t, &asked,
		"www.evil.example. 300 IN A 192.0.2.66",
		"cdn.example. 300 IN CNAME t.tracker.example.",
		"t.tracker.example. 300 IN A 192.0.2.12",
		"pointer.example. 300 IN A 203.0.113.45",
		"ok.evil.example. 300 IN A 192.0.2.13",
		"ok.evil.example. 300 IN AAAA 2001:db8::13",
		"watch.example. 300 IN A 192.0.2.14",
		"gone.example. 300 IN A 192.0.2.15",
	)
	rec := &hitLog{}
	ts := startServerWith(t, clientUpstream{up}, rec, nil)
	ts.SetPolicy(testPolicy(t,
		testList{name: "malware.txt", action: sinkhole.ActionSinkhole, rules: []string{"evil.example", "tracker.example", "203.0.113.0/24"}},
		testList{name: "allow/ok.txt", allow: true, rules: []string{"ok.evil.example"}},
		testList{name: "watch.txt", action: sinkhole.ActionLog, rules: []string{"watch.example"}},
		testList{name: "drop.txt", action: sinkhole.ActionDrop, rules: []string{"gone.example"}},
	))

	tests := []struct {
		name        string
		qtype       uint16
		edns        bool
		wantAddr    string // "" = no address answer
		wantEDE     string
		wantTrigger string // recorded hit's trigger ("" = no hit)
		wantAction  sinkhole.Action
		wantMatch   string
		wantUp      bool // the hit carries the withheld upstream answer
		wantAsked   bool // upstream was asked for the name
	}{
		{name: "www.evil.example.", qtype: dns.TypeA, edns: true, wantAddr: "192.0.2.254", wantEDE: "blocked by malware.txt",
			wantTrigger: "qname", wantAction: sinkhole.ActionSinkhole, wantMatch: "www.evil.example"},
		{name: "www.evil.example.", qtype: dns.TypeA, wantAddr: "192.0.2.254", wantTrigger: "qname", wantAction: sinkhole.ActionSinkhole, wantMatch: "www.evil.example"},
		{name: "cdn.example.", qtype: dns.TypeA, edns: true, wantAddr: "192.0.2.254", wantEDE: "blocked by malware.txt",
			wantTrigger: "cname", wantAction: sinkhole.ActionSinkhole, wantMatch: "t.tracker.example", wantUp: true, wantAsked: true},
		{name: "pointer.example.", qtype: dns.TypeA, edns: true, wantAddr: "192.0.2.254", wantEDE: "blocked by malware.txt",
			wantTrigger: "ip", wantAction: sinkhole.ActionSinkhole, wantMatch: "203.0.113.45", wantUp: true, wantAsked: true},
		{name: "ok.evil.example.", qtype: dns.TypeA, edns: true, wantAddr: "192.0.2.13", wantAsked: true},
		{name: "watch.example.", qtype: dns.TypeA, edns: true, wantAddr: "192.0.2.14", wantTrigger: "qname", wantAction: sinkhole.ActionLog,
			wantMatch: "watch.example", wantAsked: true},
	}
	for _, tt := range tests {
		n0 := len(rec.all())
		m := newQuery(tt.name, tt.qtype)
		if tt.edns {
			m.SetEdns0(1232, false)
		}
		r := ts.ask(t, "udp", m)
		var addr string
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				addr = a.A.String()
			}
		}
		if addr != tt.wantAddr {
			t.Errorf("%s: address %q, want %q (%v)", tt.name, addr, tt.wantAddr, r.Answer)
		}
		var ede string
		if e := edeOf(r); e != nil {
			ede = e.ExtraText
		}
		if ede != tt.wantEDE {
			t.Errorf("%s edns=%v: EDE %q, want %q", tt.name, tt.edns, ede, tt.wantEDE)
		}
		if !tt.edns && r.IsEdns0() != nil {
			t.Errorf("%s: OPT in the reply to a query without EDNS", tt.name)
		}
		hits := rec.all()[n0:]
		switch {
		case tt.wantTrigger == "" && len(hits) != 0:
			t.Errorf("%s: recorded %d hits, want none", tt.name, len(hits))
		case tt.wantTrigger != "" && len(hits) != 1:
			t.Errorf("%s: recorded %d hits, want 1", tt.name, len(hits))
		case tt.wantTrigger != "":
			h := hits[0]
			if h.Trigger.String() != tt.wantTrigger || h.Action != tt.wantAction || h.Match != tt.wantMatch ||
				h.QName != tt.name[:len(tt.name)-1] || (h.Upstream != nil) != tt.wantUp || len(h.Answer) < 12 {
				t.Errorf("%s: hit %+v", tt.name, h)
			}
		}
		if got := askedTimes(&asked, tt.name) > 0; got != tt.wantAsked {
			t.Errorf("%s: upstream asked = %v, want %v", tt.name, got, tt.wantAsked)
		}
	}

	// drop: no reply at all, and the hit is still recorded.
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	if _, _, err := c.Exchange(newQuery("gone.example.", dns.TypeA), ts.addr); err == nil {
		t.Error("drop action: got a reply")
	}
	if hits := rec.all(); hits[len(hits)-1].Action != sinkhole.ActionDrop || askedTimes(&asked, "gone.example.") != 0 {
		t.Errorf("drop action: last hit %+v, upstream asked %d", hits[len(hits)-1], askedTimes(&asked, "gone.example."))
	}
}

func TestTTLZeroAnswerServedNotCached(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 0))}, nil)
	for i := 1; i <= 2; i++ {
		r := ts.ask(t, "udp", newQuery("zero.example.", dns.TypeA))
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 0 {
			t.Fatalf("TTL-0 answer served as %s %v", dns.RcodeToString[r.Rcode], r.Answer)
		}
		if n.Load() != int32(i) {
			t.Errorf("upstream asked %d times after %d queries: a TTL-0 answer must not be cached", n.Load(), i)
		}
	}
}

func TestReusedReaderLeaksNoEDNS(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	ts := startServer(t, clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 60))}, func(c *Config) {
		c.Listen = []string{"127.0.0.1:0"}
	})
	// One client socket, so one server reader sees both packets in order.
	conn, err := net.Dial("udp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	co := &dns.Conn{Conn: conn}
	m := newQuery("a.example.", dns.TypeA)
	m.SetEdns0(1232, true)
	if err := co.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	_ = co.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := co.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	notify := newQuery("a.example.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	if err := co.WriteMsg(notify); err != nil {
		t.Fatal(err)
	}
	r, err := co.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeNotImplemented || r.IsEdns0() != nil {
		t.Errorf("NOTIFY after an EDNS query: rcode %s, OPT %v; want NOTIMP without OPT", dns.RcodeToString[r.Rcode], r.IsEdns0())
	}
}

func TestStaleRecheckSkipsDeadUpstream(t *testing.T) {
	t.Parallel()
	var n, deadAsked atomic.Int32
	var dead atomic.Bool
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if dead.Load() {
			deadAsked.Add(1)
			return
		}
		answerA(&n, "192.0.2.7", 10)(w, r)
	})
	ts := startServer(t, clientUpstream{up}, func(c *Config) { c.QueryTimeout = 200 * time.Millisecond })
	ts.ask(t, "udp", newQuery("stale.example.", dns.TypeA))
	dead.Store(true)
	ts.clk.advance(time.Minute)
	ts.ask(t, "udp", newQuery("stale.example.", dns.TypeA)) // waits out the timeout, then stale
	asked := deadAsked.Load()
	r := ts.ask(t, "udp", newQuery("stale.example.", dns.TypeA))
	if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 30 {
		t.Fatalf("second stale answer = %v", r.Answer)
	}
	if deadAsked.Load() != asked {
		t.Error("upstream asked again within the failure recheck time")
	}
	ts.clk.advance(staleRecheck + time.Second)
	ts.ask(t, "udp", newQuery("stale.example.", dns.TypeA))
	if deadAsked.Load() == asked {
		t.Error("upstream not asked again after the failure recheck time")
	}
}

func TestShutdownDrainsBusyTCPClients(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	up := clientUpstream{startUpstream(t, answerA(&n, "192.0.2.1", 300))}
	cfg := DefaultConfig()
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.DrainTimeout = 200 * time.Millisecond
	s, err := New(cfg, up, nil, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx); close(done) }()
	addr := s.Addrs()[0].String()

	// Clients that never stop sending pipelined queries.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	started := make(chan struct{}, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := dns.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer conn.Close()
			go func() { // drain replies
				for {
					if _, err := conn.ReadMsg(); err != nil {
						return
					}
				}
			}()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if conn.WriteMsg(newQuery("busy.example.", dns.TypeA)) != nil {
					return
				}
				if i == 10 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range 4 {
		<-started
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("Serve still running 5 s after cancel with busy TCP clients (drain timeout 200 ms)")
	}
	close(stop)
	wg.Wait()
	<-done
}
