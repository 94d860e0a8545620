package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sinkd/sinkd/internal/sinkdproc"
)

// The sinkhole address of these tests: all of 127.0.0.0/8 is loopback on
// Linux, so 127.0.0.2 is a sinkhole address distinct from the DNS server's
// 127.0.0.1.
const sinkholeAddr = "127.0.0.2"

// contactRecord is what the end-to-end tests read back from `sinkd hits
// -type contact -format json`.
type contactRecord struct {
	Type         string `json:"type"`
	Seq          int    `json:"seq"`
	Client       string `json:"client"`
	Proto        string `json:"proto"`
	Sinkhole     string `json:"sinkhole"`
	SinkholePort int    `json:"sinkhole_port"`
	Kind         string `json:"kind"`
	Bytes        int    `json:"bytes"`
	HitSeq       int    `json:"hit_seq"`
	HitQName     string `json:"hit_qname"`
	List         string `json:"list"`
	HTTP         *struct {
		Method, Host, Path string
		UserAgent          string `json:"user_agent"`
	} `json:"http"`
	TLS *struct {
		SNI     string   `json:"sni"`
		ALPN    []string `json:"alpn"`
		Version string   `json:"version"`
		JA4     string   `json:"ja4"`
	} `json:"tls"`
	RawHex string `json:"raw_hex"`
}

var listenerBoundRe = regexp.MustCompile(`msg="sinkhole listener bound".* tcp=(\S*)`)

// listenerPorts reads the listener's bound TCP ports (ephemeral: the
// config says port 0) from its log line.
func listenerPorts(t *testing.T, in *instance, want int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := listenerBoundRe.FindStringSubmatch(in.log()); m != nil {
			addrs := strings.Split(m[1], ",")
			if len(addrs) != want {
				t.Fatalf("listener bound %v, want %d TCP addresses", addrs, want)
			}
			for _, a := range addrs {
				if host, _, _ := net.SplitHostPort(a); host != sinkholeAddr {
					t.Fatalf("listener bound %s, want %s", a, sinkholeAddr)
				}
			}
			return addrs
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 'sinkhole listener bound' line in the log:\n%s", in.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialSinkhole connects to addr from 127.0.0.1, the address the DNS
// queries come from, so the contact is the same client as the hit.
var dialSinkhole = net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 3 * time.Second}

// sinkholeListenerConfig is a sinkd.yaml with the listener on 127.0.0.2.
func sinkholeListenerConfig(up, extra string) string {
	return `
instance: e2e-1
listen:
  dns: ["127.0.0.1:0"]
  http: 127.0.0.1:0
upstreams: ["` + up + `"]
zones:
  dir: ZONES
evidence:
  dir: HITS
sinkhole:
  ipv4: ` + sinkholeAddr + `
listener:
  addresses: [` + sinkholeAddr + `]
` + extra
}

func TestListenerEndToEnd(t *testing.T) {
	t.Parallel()
	up := fakeUpstream(t, "good.example. 300 IN A 192.0.2.10")
	in := startSinkd(t, sinkholeListenerConfig(up, "  tcp_ports: [0, 0]\n  capture_bytes: 256\n  idle_timeout: 5s\n"),
		map[string]string{"malware.txt": "evil.example\n"})
	ports := listenerPorts(t, in, 2)
	httpPort, rawPort := ports[0], ports[1]

	// The client resolves evil.example through sinkd: the sinkhole address.
	if got := addrs(in.ask(t, "evil.example", dns.TypeA)); strings.Join(got, ",") != sinkholeAddr {
		t.Fatalf("evil.example resolves to %v, want %s", got, sinkholeAddr)
	}

	// ... then connects to it with HTTP. The hit becomes visible to the
	// listener once the evidence writer has encoded it (milliseconds):
	// retry until the page carries a reference.
	client := &http.Client{Transport: &http.Transport{DialContext: dialSinkhole.DialContext, DisableKeepAlives: true}}
	var page, ref string
	deadline := time.Now().Add(10 * time.Second)
	for ref == "" {
		req, err := http.NewRequest("GET", "http://"+httpPort+"/gate.php?id=7", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "evil.example"
		req.Header.Set("User-Agent", "bot/1.0")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("GET with Host evil.example: status %d, want 403\n%s", resp.StatusCode, b)
		}
		page, ref = string(b), resp.Header.Get("X-Sinkd-Reference")
		if ref == "" && time.Now().After(deadline) {
			t.Fatalf("block page without a reference after 10 s:\n%s", page)
		}
	}

	// A TLS client offering SNI evil.example gets a fatal alert, never a
	// certificate.
	conn, err := dialSinkhole.Dial("tcp", httpPort)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, &tls.Config{ServerName: "evil.example", NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12})
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err == nil || !strings.Contains(err.Error(), "handshake failure") {
		t.Errorf("TLS handshake with the sinkhole: %v, want a handshake failure alert", err)
	}
	_ = tc.Close()

	// Anything else on another port is captured (the first capture_bytes).
	raw := []byte("\x00\x01\x02beacon id=42\xff\xfe")
	rc, err := dialSinkhole.Dial("tcp", rawPort)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Write(raw); err != nil {
		t.Fatal(err)
	}
	_ = rc.(*net.TCPConn).CloseWrite()
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := rc.Read(make([]byte, 1)); err != io.EOF { // the listener closes once the client has
		t.Errorf("raw connection: read %d bytes, %v; want EOF (nothing is answered)", n, err)
	}
	_ = rc.Close()

	in.stop(t)

	cfg := in.dir + "/sinkd.yaml"
	out, errOut, code := sinkdCmd(t, "hits", "-config", cfg, "-format", "json")
	hits := parseHits(t, out)
	if code != 0 || len(hits) != 1 || hits[0].QName != "evil.example" {
		t.Fatalf("sinkd hits: exit %d, hits %+v, want the one on evil.example\n%s", code, hits, errOut)
	}
	hit := hits[0]
	wantRef := fmt.Sprintf("e2e-1-%d", hit.Seq)
	if ref != wantRef || !strings.Contains(page, "Reference: "+wantRef) || !strings.Contains(page, "malware.txt") {
		t.Errorf("block page reference %q, want %q naming malware.txt; page:\n%s", ref, wantRef, page)
	}

	out, errOut, code = sinkdCmd(t, "hits", "-config", cfg, "-type", "contact", "-format", "json")
	if code != 0 {
		t.Fatalf("sinkd hits -type contact: exit %d\n%s", code, errOut)
	}
	byKind := map[string]contactRecord{}
	for line := range strings.Lines(out) {
		var c contactRecord
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if c.Type != "contact" || c.Client != "127.0.0.1" || c.Proto != "tcp" || c.Sinkhole != sinkholeAddr {
			t.Errorf("contact %s: want type contact, client 127.0.0.1, proto tcp, sinkhole %s", line, sinkholeAddr)
		}
		byKind[c.Kind] = c // the last of each kind
	}
	wantPort := func(hostport string) int {
		_, p, _ := net.SplitHostPort(hostport)
		n, _ := strconv.Atoi(p)
		return n
	}
	linked := func(kind string, c contactRecord) {
		t.Helper()
		if c.HitSeq != hit.Seq || c.HitQName != "evil.example" || c.List != "malware.txt" {
			t.Errorf("%s contact linked to hit_seq %d %q list %q, want %d evil.example malware.txt", kind, c.HitSeq, c.HitQName, c.List, hit.Seq)
		}
	}

	h, ok := byKind["http"]
	switch {
	case !ok || h.HTTP == nil:
		t.Errorf("no http contact in\n%s", out)
	default:
		linked("http", h)
		if h.SinkholePort != wantPort(httpPort) || h.HTTP.Method != "GET" || h.HTTP.Host != "evil.example" ||
			h.HTTP.Path != "/gate.php?id=7" || h.HTTP.UserAgent != "bot/1.0" {
			t.Errorf("http contact %+v %+v", h, *h.HTTP)
		}
	}
	tl, ok := byKind["tls"]
	switch {
	case !ok || tl.TLS == nil:
		t.Errorf("no tls contact in\n%s", out)
	default:
		linked("tls", tl)
		if tl.TLS.SNI != "evil.example" || strings.Join(tl.TLS.ALPN, ",") != "h2,http/1.1" || tl.TLS.Version != "1.3" ||
			!regexp.MustCompile(`^t13d\d{4}h2_[0-9a-f]{12}_[0-9a-f]{12}$`).MatchString(tl.TLS.JA4) {
			t.Errorf("tls contact %+v %+v", tl, *tl.TLS)
		}
	}
	r, ok := byKind["raw"]
	switch {
	case !ok:
		t.Errorf("no raw contact in\n%s", out)
	default:
		linked("raw", r) // no Host/SNI: the client's most recent hit in the window
		if r.SinkholePort != wantPort(rawPort) || r.RawHex != hex.EncodeToString(raw) || r.Bytes != len(raw) {
			t.Errorf("raw contact port %d raw_hex %q bytes %d, want %s %x %d", r.SinkholePort, r.RawHex, r.Bytes, rawPort, raw, len(raw))
		}
	}

	// The summary puts the client that connected first.
	out, errOut, code = sinkdCmd(t, "hits", "-config", cfg, "-type", "all", "-summary")
	if code != 0 || !regexp.MustCompile(`(?m)^CLIENTS THAT CONNECTED.*\n.*\n127\.0\.0\.1\s+\d+\s+\S+\s+\S+\s+\d+,\d+$`).MatchString(out) {
		t.Errorf("sinkd hits -type all -summary: exit %d, want 127.0.0.1 among the clients that connected (two ports)\n%s%s", code, out, errOut)
	}

	if out, errOut, code := sinkdCmd(t, "verify", "-config", cfg); code != 0 {
		t.Errorf("sinkd verify with contacts in the chain: exit %d\n%s%s", code, out, errOut)
	}
}

// metricValue reads one sample (name with its labels, as /metrics prints
// it) from the running instance; -1 when absent.
func metricValue(t *testing.T, in *instance, sample string) float64 {
	t.Helper()
	if v, ok := sinkdproc.Value([]byte(httpBody(t, "http://"+in.http+"/metrics")), sample); ok {
		return v
	}
	return -1
}

func TestListenerConnectionCapLeavesDNSAnswering(t *testing.T) {
	t.Parallel()
	const (
		idle     = 2000
		maxConns = 500
	)
	up := fakeUpstream(t, "good.example. 300 IN A 192.0.2.10")
	in := startSinkd(t, sinkholeListenerConfig(up, fmt.Sprintf("  tcp_ports: [0]\n  idle_timeout: 60s\n  max_conns: %d\n", maxConns)),
		map[string]string{"malware.txt": "evil.example\n"})
	port := listenerPorts(t, in, 1)[0]

	// 2,000 connections that send nothing, held open. One the listener
	// rejects may already be reset when the dial returns: it counts as
	// rejected all the same. They come from 127.0.0.3 so that their 2,000
	// ephemeral ports do not collide with listeners other tests bind on
	// 127.0.0.1.
	flood := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}, Timeout: 3 * time.Second}
	conns := make([]net.Conn, idle)
	errs := make(chan error, idle)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < idle; i += 8 {
				c, err := flood.DialContext(ctx, "tcp", port)
				if errors.Is(err, syscall.ECONNRESET) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	})
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("dialing %d connections: %v", idle, err)
	}

	// The listener keeps max_conns and closes the rest at once.
	rejected := `sinkd_listener_rejected_total{reason="max_conns"}`
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, a := metricValue(t, in, rejected), metricValue(t, in, "sinkd_listener_active_connections")
		if r == idle-maxConns && a == maxConns {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, active = %v; want %d and %d", rejected, r, a, idle-maxConns, maxConns)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// While they are held, DNS is answered, over UDP and TCP.
	for _, proto := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: proto, Timeout: time.Second}
		for i := range 20 {
			name, want := "good.example", "192.0.2.10"
			if i%2 == 1 {
				name, want = fmt.Sprintf("n%d.evil.example", i), sinkholeAddr
			}
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(name), dns.TypeA)
			r, rtt, err := c.Exchange(m, in.dns)
			if err != nil {
				t.Fatalf("%s query %s with %d idle sinkhole connections: %v", proto, name, idle, err)
			}
			if got := addrs(r); strings.Join(got, ",") != want {
				t.Errorf("%s %s = %v (rtt %v), want %s", proto, name, got, rtt, want)
			}
		}
	}
	if r := metricValue(t, in, rejected); r != idle-maxConns {
		t.Errorf("%s = %v after the queries, want %d", rejected, r, idle-maxConns)
	}
}
