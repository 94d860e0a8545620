package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func TestExchangePlain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		server func(t *testing.T) string // returns the Servers entry
	}{
		{"udp bare address", func(t *testing.T) string { return startUDP(t, lowerQuestion("192.0.2.1")) }},
		{"udp scheme", func(t *testing.T) string { return "udp://" + startUDP(t, lowerQuestion("192.0.2.1")) }},
		{"tcp", func(t *testing.T) string { return "tcp://" + startTCP(t, lowerQuestion("192.0.2.1")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := newPool(t, Config{Servers: []string{tt.server(t)}})
			q := question("WwW.ExAmple.ORG.", 4242)
			got, err := p.Exchange(t.Context(), q)
			if err != nil {
				t.Fatal(err)
			}
			if got.Id != 4242 {
				t.Errorf("reply ID = %d, want the caller's 4242", got.Id)
			}
			if n := got.Question[0].Name; n != "WwW.ExAmple.ORG." {
				t.Errorf("reply question = %q, want the caller's letter case", n)
			}
			if a := firstA(got); a != "192.0.2.1" {
				t.Errorf("answer = %q, want 192.0.2.1", a)
			}
			if q.Id != 4242 || q.Question[0].Name != "WwW.ExAmple.ORG." {
				t.Errorf("the caller's query was modified: %v", q)
			}
			if !p.Ready() {
				t.Error("Ready() = false after an answer")
			}
		})
	}
}

func TestTruncatedRetriedOverTCP(t *testing.T) {
	t.Parallel()
	ips := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6"}
	addr := startUDPTCP(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if w.RemoteAddr().Network() == "udp" {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Truncated = true
			_ = w.WriteMsg(m)
			return
		}
		_ = w.WriteMsg(reply(r, ips...))
	})
	p, reg := newPool(t, Config{Servers: []string{addr}})
	got, err := p.Exchange(t.Context(), question("big.example.", 7))
	if err != nil {
		t.Fatal(err)
	}
	if got.Truncated || len(got.Answer) != len(ips) {
		t.Errorf("got TC=%v with %d answers, want the full TCP answer with %d", got.Truncated, len(got.Answer), len(ips))
	}
	if got.Id != 7 {
		t.Errorf("ID = %d, want 7", got.Id)
	}
	for result, want := range map[string]float64{resultTruncated: 1, resultOK: 1} {
		if n := counterValue(t, reg, addr, result); n != want {
			t.Errorf("requests_total{result=%q} = %v, want %v", result, n, want)
		}
	}
}

// counterValue reads sinkd_upstream_requests_total{upstream,result}.
func counterValue(t *testing.T, reg *prometheus.Registry, upstream, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sinkd_upstream_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var u, r string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "upstream":
					u = l.GetValue()
				case "result":
					r = l.GetValue()
				}
			}
			if u == upstream && r == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestDoT(t *testing.T) {
	t.Parallel()
	cert, roots := selfSigned(t, []string{"dot.test"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var snis []string
	tl := &trackingListener{Listener: ln}
	serve(t, &dns.Server{
		Listener: tls.NewListener(tl, &tls.Config{
			Certificates: []tls.Certificate{cert},
			GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
				mu.Lock()
				snis = append(snis, hi.ServerName)
				mu.Unlock()
				return nil, nil
			},
		}),
		Net:     "tcp-tls",
		Handler: answer("192.0.2.53"),
	})
	addr := ln.Addr().String()
	tests := []struct {
		name    string
		server  string
		wantSNI string // "" for an IP: no SNI is sent
		wantErr bool
	}{
		{"IP in certificate", "tls://" + addr, "", false},
		{"servername after #", "tls://" + addr + "#dot.test", "dot.test", false},
		{"servername not in certificate", "tls://" + addr + "#other.test", "other.test", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: the server's SNI log is shared.
			mu.Lock()
			snis = nil
			mu.Unlock()
			p, _ := newPool(t, Config{Servers: []string{tt.server}, Timeout: time.Second, TLS: &tls.Config{RootCAs: roots}})
			got, err := p.Exchange(t.Context(), question("dot.example.", 99))
			if tt.wantErr {
				if !errors.Is(err, ErrNoUpstream) {
					t.Fatalf("err = %v, want ErrNoUpstream", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if firstA(got) != "192.0.2.53" || got.Id != 99 {
					t.Errorf("got %v, want A 192.0.2.53 with ID 99", got)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(snis) == 0 || snis[0] != tt.wantSNI {
				t.Errorf("SNI seen %q, want %q", snis, tt.wantSNI)
			}
		})
	}
}

func TestDoTReusesAndReconnects(t *testing.T) {
	t.Parallel()
	cert, roots := selfSigned(t, nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := &trackingListener{Listener: ln}
	serve(t, &dns.Server{
		Listener: tls.NewListener(tl, &tls.Config{Certificates: []tls.Certificate{cert}}),
		Net:      "tcp-tls",
		Handler:  answer("192.0.2.53"),
	})
	p, _ := newPool(t, Config{Servers: []string{"tls://" + ln.Addr().String()}, TLS: &tls.Config{RootCAs: roots}})

	ask := func(t *testing.T, n int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				name := fmt.Sprintf("q%d.example.", i)
				got, err := p.Exchange(t.Context(), question(name, uint16(i)))
				switch {
				case err != nil:
					errs <- err
				case got.Id != uint16(i) || got.Question[0].Name != name || firstA(got) != "192.0.2.53":
					errs <- fmt.Errorf("query %d got mismatched reply %v", i, got)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}

	ask(t, 20) // concurrent: one dial, pipelined
	ask(t, 1)
	if n := tl.accepted(); n != 1 {
		t.Errorf("after 21 queries: %d connections accepted, want 1", n)
	}

	tl.closeAll() // the server hangs up: the next query must reconnect
	ask(t, 1)
	if n := tl.accepted(); n != 2 {
		t.Errorf("after the server closed the connection: %d connections accepted, want 2", n)
	}
}

func TestStreamRetriesOnDeadReusedConnAndMatchesOutOfOrder(t *testing.T) {
	t.Parallel()
	var held *dns.Msg
	var mu sync.Mutex
	addr := startStreamFake(t, func(conn, n int, q *dns.Msg) ([]*dns.Msg, bool) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case conn == 0 && n == 0:
			return []*dns.Msg{reply(q, "192.0.2.1")}, false
		case conn == 0:
			return nil, true // a reused connection dies under the query
		case n == 0:
			held = q // hold the first, answer both when the second comes
			return nil, false
		case n == 1:
			return []*dns.Msg{reply(q, "192.0.2.2"), reply(held, "192.0.2.1")}, false
		}
		return []*dns.Msg{reply(q, "192.0.2.3")}, false
	})
	p, _ := newPool(t, Config{Servers: []string{"tcp://" + addr}})
	if _, err := p.Exchange(t.Context(), question("a.example.", 1)); err != nil {
		t.Fatal(err)
	}
	// Two queries in flight on the new connection; the server answers the
	// second first.
	type res struct {
		ip  string
		err error
	}
	first := make(chan res, 1)
	go func() {
		m, err := p.Exchange(t.Context(), question("b.example.", 2))
		if err != nil {
			first <- res{err: err}
			return
		}
		first <- res{ip: firstA(m)}
	}()
	waitFor(t, "the first query to be held", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return held != nil
	})
	m, err := p.Exchange(t.Context(), question("c.example.", 3))
	if err != nil {
		t.Fatal(err)
	}
	if got := firstA(m); got != "192.0.2.2" {
		t.Errorf("second query got %s, want 192.0.2.2", got)
	}
	r := <-first
	if r.err != nil || r.ip != "192.0.2.1" {
		t.Errorf("first query got %q, %v; want 192.0.2.1", r.ip, r.err)
	}
}

func TestDoH(t *testing.T) {
	t.Parallel()
	type seen struct {
		id          uint16
		proto       int
		method      string
		contentType string
	}
	requests := make(chan seen, 10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q := new(dns.Msg)
		if err := q.Unpack(body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		requests <- seen{q.Id, r.ProtoMajor, r.Method, r.Header.Get("Content-Type")}
		out, _ := reply(q, "192.0.2.80").Pack()
		w.Header().Set("Content-Type", "application/dns-message")
		_, _ = w.Write(out)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	p, _ := newPool(t, Config{Servers: []string{srv.URL + "/dns-query"}, TLS: &tls.Config{RootCAs: roots}})
	got, err := p.Exchange(t.Context(), question("doh.example.", 0xBEEF))
	if err != nil {
		t.Fatal(err)
	}
	if got.Id != 0xBEEF || firstA(got) != "192.0.2.80" {
		t.Errorf("got ID %#x answer %q, want 0xbeef and 192.0.2.80", got.Id, firstA(got))
	}
	s := <-requests
	if s.id != 0 {
		t.Errorf("wire query ID = %d, want 0", s.id)
	}
	if s.proto != 2 || s.method != http.MethodPost || s.contentType != "application/dns-message" {
		t.Errorf("request: HTTP/%d %s %q, want HTTP/2 POST application/dns-message", s.proto, s.method, s.contentType)
	}
}

func TestDoHInjectedClient(t *testing.T) {
	t.Parallel()
	var asked atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		body, _ := io.ReadAll(r.Body)
		q := new(dns.Msg)
		if err := q.Unpack(body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out, _ := reply(q, "192.0.2.81").Pack()
		w.Header().Set("Content-Type", "application/dns-message")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	// No TLS config: only the injected client trusts the test server.
	p, _ := newPool(t, Config{Servers: []string{srv.URL + "/dns-query"}, HTTPClient: srv.Client()})
	got, err := p.Exchange(t.Context(), question("doh.example.", 3))
	if err != nil {
		t.Fatal(err)
	}
	if firstA(got) != "192.0.2.81" || asked.Load() != 1 {
		t.Errorf("answer %q after %d requests, want 192.0.2.81 after 1", firstA(got), asked.Load())
	}
}

func TestDoHErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"status 500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusInternalServerError) }},
		{"wrong content type", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>"))
		}},
		{"garbage body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/dns-message")
			_, _ = w.Write([]byte("garbage"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewTLSServer(tt.handler)
			t.Cleanup(srv.Close)
			roots := x509.NewCertPool()
			roots.AddCert(srv.Certificate())
			p, reg := newPool(t, Config{Servers: []string{srv.URL}, TLS: &tls.Config{RootCAs: roots}})
			_, err := p.Exchange(t.Context(), question("doh.example.", 1))
			if !errors.Is(err, ErrNoUpstream) {
				t.Fatalf("err = %v, want ErrNoUpstream", err)
			}
			if n := counterValue(t, reg, srv.URL, resultError); n != 1 {
				t.Errorf("requests_total{result=error} = %v, want 1", n)
			}
		})
	}
}

func TestFailover(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		first      func(t *testing.T) string
		wantResult string // recorded for the first upstream
	}{
		{"silent", func(t *testing.T) string { a, _ := blackhole(t); return a }, resultTimeout},
		{"closed port", closedPort, resultError},
		{"SERVFAIL", func(t *testing.T) string { return startUDP(t, rcodeHandler(dns.RcodeServerFailure)) }, resultServfail},
		{"REFUSED", func(t *testing.T) string { return startUDP(t, rcodeHandler(dns.RcodeRefused)) }, resultRefused},
		{"FORMERR", func(t *testing.T) string { return startUDP(t, rcodeHandler(dns.RcodeFormatError)) }, resultRcode},
		{"dead tcp", func(t *testing.T) string { return "tcp://" + closedPort(t) }, resultError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			first := tt.first(t)
			second := startUDP(t, answer("192.0.2.2"))
			timeout := 2 * time.Second
			p, reg := newPool(t, Config{Servers: []string{first, second}, Timeout: timeout})
			start := time.Now()
			got, err := p.Exchange(t.Context(), question("fail.example.", 5))
			if err != nil {
				t.Fatal(err)
			}
			if elapsed := time.Since(start); elapsed > timeout {
				t.Errorf("took %v, more than the timeout %v", elapsed, timeout)
			}
			if firstA(got) != "192.0.2.2" {
				t.Errorf("answer %q, want the second upstream's 192.0.2.2", firstA(got))
			}
			if n := counterValue(t, reg, first, tt.wantResult); n != 1 {
				t.Errorf("first upstream requests_total{result=%q} = %v, want 1", tt.wantResult, n)
			}
			wantUp := 1.0 // it replied, uselessly
			if tt.wantResult == resultTimeout || tt.wantResult == resultError {
				wantUp = 0
			}
			if up := testutil.ToFloat64(p.ups[0].m.up); up != wantUp {
				t.Errorf("first upstream up = %v, want %v", up, wantUp)
			}
			if up := testutil.ToFloat64(p.ups[1].m.up); up != 1 {
				t.Errorf("second upstream up = %v, want 1", up)
			}
			// The failed upstream is now ranked after the good one.
			if order := p.rank(); order[0].name != second {
				t.Errorf("ranked first: %s, want %s", order[0].name, second)
			}
		})
	}
}

func TestAllDead(t *testing.T) {
	t.Parallel()
	silent, _ := blackhole(t)
	timeout := 300 * time.Millisecond
	p, _ := newPool(t, Config{Servers: []string{silent, closedPort(t), "tcp://" + closedPort(t)}, Timeout: timeout})
	start := time.Now()
	_, err := p.Exchange(t.Context(), question("dead.example.", 5))
	elapsed := time.Since(start)
	if !errors.Is(err, ErrNoUpstream) {
		t.Fatalf("err = %v, want ErrNoUpstream", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to wrap context.DeadlineExceeded", err)
	}
	if elapsed > timeout+time.Second {
		t.Errorf("took %v, want about the timeout %v", elapsed, timeout)
	}
	if p.Ready() {
		t.Error("Ready() = true with no upstream answering")
	}
}

func TestCallerCancel(t *testing.T) {
	t.Parallel()
	silent, _ := blackhole(t)
	p, reg := newPool(t, Config{Servers: []string{silent}, Timeout: time.Minute})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := p.Exchange(ctx, question("gone.example.", 1))
		done <- err
	}()
	cancel()
	err := <-done
	if !errors.Is(err, ErrNoUpstream) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrNoUpstream and context.Canceled", err)
	}
	if n := counterValue(t, reg, silent, resultTimeout); n != 0 {
		t.Errorf("a query the caller cancelled at once counted as timeout (%v)", n)
	}
}

func TestSpoofedRepliesIgnored(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			send := func(m *dns.Msg) {
				b, _ := m.Pack()
				_, _ = pc.WriteTo(b, from)
			}
			wrongID := reply(q, "192.0.2.66")
			wrongID.Id = q.Id + 1
			send(wrongID)
			wrongName := reply(q, "192.0.2.67")
			wrongName.Question[0].Name = "evil.example."
			send(wrongName)
			wrongType := reply(q, "192.0.2.68")
			wrongType.Question[0].Qtype = dns.TypeAAAA
			send(wrongType)
			notReply := q.Copy() // QR bit clear
			send(notReply)
			garbage := append([]byte{buf[0], buf[1]}, []byte("\x81\x80\x00\x01garbage garbage")...)
			_, _ = pc.WriteTo(garbage, from)
			send(reply(q, "192.0.2.1"))
		}
	}()
	p, _ := newPool(t, Config{Servers: []string{pc.LocalAddr().String()}})
	for i := range 3 {
		got, err := p.Exchange(t.Context(), question("spoof.example.", uint16(i)))
		if err != nil {
			t.Fatal(err)
		}
		if a := firstA(got); a != "192.0.2.1" {
			t.Fatalf("answer %q, want the genuine 192.0.2.1", a)
		}
	}
}

func TestFastestPrefersLowerRTT(t *testing.T) {
	t.Parallel()
	var slowN, fastN atomic.Int32
	slow := startUDP(t, counting(&slowN, func(w dns.ResponseWriter, r *dns.Msg) {
		time.Sleep(100 * time.Millisecond) // server behaviour: a slow upstream
		_ = w.WriteMsg(reply(r, "192.0.2.1"))
	}))
	fast := startUDP(t, counting(&fastN, answer("192.0.2.2")))
	p, _ := newPool(t, Config{Servers: []string{slow, fast}})
	const n = 12
	for i := range n {
		if _, err := p.Exchange(t.Context(), question("rtt.example.", uint16(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Query 1 measures the slow one (configured first), query 2 the fast
	// one; from then on only the fast one is asked.
	if s, f := slowN.Load(), fastN.Load(); s != 1 || f != n-1 {
		t.Errorf("slow asked %d times, fast %d; want 1 and %d", s, f, n-1)
	}
}

func TestParallel(t *testing.T) {
	t.Parallel()
	// With a 20s timeout, "fastest" would give the first upstream 10s
	// alone; "parallel" asks both at once and answers in milliseconds.
	const timeout = 20 * time.Second
	const within = 5 * time.Second
	t.Run("answers while the other hangs", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		hung := startUDP(t, func(w dns.ResponseWriter, r *dns.Msg) {
			<-release
			_ = w.WriteMsg(reply(r, "192.0.2.1"))
		})
		t.Cleanup(func() { close(release) }) // runs before the server shuts down
		good := startUDP(t, answer("192.0.2.2"))
		p, _ := newPool(t, Config{Servers: []string{hung, good}, Strategy: StrategyParallel, Timeout: timeout})
		start := time.Now()
		got, err := p.Exchange(t.Context(), question("par.example.", 1))
		if err != nil {
			t.Fatal(err)
		}
		if firstA(got) != "192.0.2.2" {
			t.Errorf("answer %q, want 192.0.2.2", firstA(got))
		}
		if d := time.Since(start); d > within {
			t.Errorf("took %v: the second upstream was not asked at once", d)
		}
	})
	t.Run("asks both at once", func(t *testing.T) {
		t.Parallel()
		// Each fake answers only once both have been asked.
		var arrived atomic.Int32
		both := make(chan struct{})
		release := make(chan struct{})
		h := func(ip string) dns.HandlerFunc {
			return func(w dns.ResponseWriter, r *dns.Msg) {
				if arrived.Add(1) == 2 {
					close(both)
				}
				select {
				case <-both:
				case <-release:
				}
				_ = w.WriteMsg(reply(r, ip))
			}
		}
		a, b := startUDP(t, h("192.0.2.1")), startUDP(t, h("192.0.2.2"))
		t.Cleanup(func() { close(release) })
		p, _ := newPool(t, Config{Servers: []string{a, b}, Strategy: StrategyParallel, Timeout: timeout})
		start := time.Now()
		if _, err := p.Exchange(t.Context(), question("par.example.", 1)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > within {
			t.Errorf("took %v: the two upstreams were not asked at once", d)
		}
	})
}

func TestRunMarksReady(t *testing.T) {
	t.Parallel()
	var refuse atomic.Bool
	refuse.Store(true)
	var asked atomic.Int32
	addr := startUDP(t, counting(&asked, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name != "." || r.Question[0].Qtype != dns.TypeNS {
			t.Errorf("probe asked %v, want . NS", r.Question[0])
		}
		if refuse.Load() {
			rcodeHandler(dns.RcodeRefused)(w, r)
			return
		}
		answer("192.0.2.1")(w, r)
	}))
	p, _ := newPool(t, Config{Servers: []string{addr}})
	p.every = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, "the first probe", func() bool { return asked.Load() >= 1 })
	if p.Ready() {
		t.Fatal("Ready() = true while the only upstream refuses")
	}
	refuse.Store(false)
	waitFor(t, "Ready after a probe is answered", p.Ready)
	cancel()
	<-done
}

func TestRunProbesAtStart(t *testing.T) {
	t.Parallel()
	silent, _ := blackhole(t)
	p, _ := newPool(t, Config{Servers: []string{silent, startUDP(t, answer("192.0.2.1"))}, Timeout: 200 * time.Millisecond})
	if p.Ready() {
		t.Fatal("Ready() before anything answered")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	waitFor(t, "Ready", p.Ready)
	cancel()
	<-done
}

func TestBackoffAndComeBack(t *testing.T) {
	t.Parallel()
	var refuse atomic.Bool
	refuse.Store(true)
	flaky := startUDP(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if refuse.Load() {
			rcodeHandler(dns.RcodeRefused)(w, r)
			return
		}
		answer("192.0.2.1")(w, r)
	})
	steady := startUDP(t, answer("192.0.2.2"))
	p, _ := newPool(t, Config{Servers: []string{flaky, steady}})
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	p.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	ask := func() string {
		t.Helper()
		m, err := p.Exchange(t.Context(), question("x.example.", 1))
		if err != nil {
			t.Fatal(err)
		}
		return firstA(m)
	}
	if got := ask(); got != "192.0.2.2" {
		t.Fatalf("answer %s, want the steady upstream's", got)
	}
	refuse.Store(false)
	if got := ask(); got != "192.0.2.2" {
		t.Errorf("during the backoff: answer from %s, want the steady upstream", got)
	}
	advance(backoffBase + time.Millisecond)
	// On a frozen clock both RTTs are equal; out of backoff the flaky
	// one, configured first, is asked first again.
	if got := ask(); got != "192.0.2.1" {
		t.Errorf("after the backoff: answer from %s, want the recovered upstream", got)
	}
}

func TestHealthRank(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_000_000, 0)
	type outcome struct {
		result  string
		elapsed time.Duration
	}
	ms := time.Millisecond
	tests := []struct {
		name        string
		outcomes    []outcome // all at t0
		at          time.Duration
		wantBackoff bool
		wantSRTT    time.Duration // before decay
	}{
		{"unmeasured", nil, 0, false, 0},
		{"ok", []outcome{{resultOK, 100 * ms}}, 0, false, 100 * ms},
		{"ewma", []outcome{{resultOK, 100 * ms}, {resultOK, 20 * ms}}, 0, false, 80 * ms},
		{"unrefreshed rtt halves per minute", []outcome{{resultOK, 100 * ms}}, rttDecay, false, 100 * ms},
		{"timeout backs off, rtt at least 300ms", []outcome{{resultTimeout, 100 * ms}}, 0, true, hedgeMin},
		{"fast error is not fast", []outcome{{resultOK, 10 * ms}, {resultError, 0}}, 0, true, 10*ms + (hedgeMin-10*ms)/4},
		{"backoff ends", []outcome{{resultTimeout, 100 * ms}}, backoffBase, false, hedgeMin},
		{"second failure doubles backoff", []outcome{{resultTimeout, 100 * ms}, {resultError, 100 * ms}}, backoffBase, true, hedgeMin},
		{"backoff capped", slices.Repeat([]outcome{{resultTimeout, 100 * ms}}, 20), backoffMax, false, hedgeMin},
		{"servfail backs off", []outcome{{resultServfail, 100 * ms}}, 0, true, 100 * ms},
		{"ok clears backoff", []outcome{{resultRefused, 100 * ms}, {resultOK, 100 * ms}}, 0, false, 100 * ms},
		{"canceled raises to a lower bound", []outcome{{resultOK, 100 * ms}, {resultCanceled, 500 * ms}}, 0, false, 200 * ms},
		{"canceled early changes nothing", []outcome{{resultOK, 100 * ms}, {resultCanceled, 50 * ms}}, 0, false, 100 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var h health
			for _, o := range tt.outcomes {
				h.outcome(t0, o.result, o.elapsed)
			}
			backoff, score := h.rank(t0.Add(tt.at))
			if backoff != tt.wantBackoff {
				t.Errorf("backoff = %v, want %v", backoff, tt.wantBackoff)
			}
			want := float64(tt.wantSRTT) * math.Exp2(-float64(tt.at)/float64(rttDecay))
			if d := score - want; d > 1 || d < -1 {
				t.Errorf("score = %v, want %v", time.Duration(score), time.Duration(want))
			}
		})
	}
}

func TestShareOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		srtt, rem time.Duration
		want      time.Duration
	}{
		{"unknown gets half", 0, 2 * time.Second, time.Second},
		{"fast gets the floor", 10 * time.Millisecond, 2 * time.Second, hedgeMin},
		{"slow gets 3 srtt", 200 * time.Millisecond, 2 * time.Second, 600 * time.Millisecond},
		{"capped at half the rest", 500 * time.Millisecond, 2 * time.Second, time.Second},
		{"little left", 10 * time.Millisecond, 200 * time.Millisecond, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := shareOf(tt.srtt, tt.rem); got != tt.want {
				t.Errorf("shareOf(%v, %v) = %v, want %v", tt.srtt, tt.rem, got, tt.want)
			}
		})
	}
}

func TestMetricsLint(t *testing.T) {
	t.Parallel()
	p, reg := newPool(t, Config{Servers: []string{startUDP(t, answer("192.0.2.1"))}})
	if _, err := p.Exchange(t.Context(), question("lint.example.", 1)); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"sinkd_upstream_requests_total", "sinkd_upstream_request_duration_seconds", "sinkd_upstream_up", "sinkd_upstream_rtt_seconds"} {
		if !names[want] {
			t.Errorf("metric %s missing", want)
		}
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, Config{Servers: []string{"tcp://" + startTCP(t, answer("192.0.2.1"))}})
	if _, err := p.Exchange(t.Context(), question("c.example.", 1)); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Exchange(t.Context(), question("c.example.", 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Exchange after Close: err = %v, want ErrClosed", err)
	}
}

func TestBadQuery(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, Config{Servers: []string{"192.0.2.1"}})
	if _, err := p.Exchange(t.Context(), new(dns.Msg)); !errors.Is(err, ErrBadQuery) {
		t.Errorf("no question: err = %v, want ErrBadQuery", err)
	}
	if got := strings.Join(p.Names(), ","); got != "192.0.2.1" {
		t.Errorf("Names() = %q", got)
	}
}

// TestLongUDPReplyRetriedOverTCP: a UDP reply is read whole up to
// maxUDPReply bytes; a longer datagram (which a waiting query no longer
// has 64 KiB for) counts as truncated and the answer comes over TCP.
func TestLongUDPReplyRetriedOverTCP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		records int // 255-byte TXT strings in the UDP reply
		wantTCP bool
	}{
		{name: "3 KB read whole", records: 11},
		{name: "6 KB asked over TCP", records: 23, wantTCP: true},
		{name: "60 KB asked over TCP", records: 230, wantTCP: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tcpAsked atomic.Int32
			addr := startUDPTCP(t, func(w dns.ResponseWriter, r *dns.Msg) {
				m := new(dns.Msg)
				m.SetReply(r)
				if w.RemoteAddr().Network() != "udp" {
					tcpAsked.Add(1)
					_ = w.WriteMsg(reply(r, "192.0.2.1"))
					return
				}
				for range tt.records {
					m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
						Txt: []string{strings.Repeat("x", 255)}})
				}
				_ = w.WriteMsg(m)
			})
			p, _ := newPool(t, Config{Servers: []string{addr}})
			got, err := p.Exchange(t.Context(), question("long.example.", 9))
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantTCP {
				if tcpAsked.Load() != 1 || len(got.Answer) != 1 {
					t.Errorf("TCP asked %d times, %d answers; want the TCP answer", tcpAsked.Load(), len(got.Answer))
				}
			} else if tcpAsked.Load() != 0 || len(got.Answer) != tt.records {
				t.Errorf("TCP asked %d times, %d answers; want the UDP reply's %d", tcpAsked.Load(), len(got.Answer), tt.records)
			}
		})
	}
}
