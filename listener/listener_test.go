package listener

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sinkd/sinkd/sinkhole"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// startListener runs a listener on 127.0.0.1 with ephemeral ports over a
// real evidence log; both stop at cleanup.
func startListener(t *testing.T, mod func(*Config)) (*Listener, *sinkhole.Log, *prometheus.Registry) {
	t.Helper()
	lc := sinkhole.DefaultLogConfig()
	lc.Dir = filepath.Join(t.TempDir(), "hits")
	lc.Instance = "test-1"
	lc.Neighbours = func(netip.Addr) (string, bool) { return "", false }
	reg := prometheus.NewRegistry()
	log, err := sinkhole.OpenLog(lc, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Addresses: []netip.Addr{loopback}, TCPPorts: []uint16{0, 0}, UDPPorts: []uint16{0},
		CaptureBytes: 64, IdleTimeout: 2 * time.Second, MaxConns: 100, HTTPReply: ReplyPage, Instance: "test-1"}
	if mod != nil {
		mod(&cfg)
	}
	l, err := New(cfg, log, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = l.Serve(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = log.Close("test")
	})
	return l, log, reg
}

// contacts closes the log and returns its contact records.
func contacts(t *testing.T, log *sinkhole.Log, want int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := log.Sync(); err != nil {
			t.Fatal(err)
		}
		var out []map[string]any
		err := sinkhole.SearchLog(context.Background(), log.Dir(), sinkhole.HitQuery{Type: "contact"}, func(line []byte) error {
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				return err
			}
			out = append(out, m)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(out) >= want || time.Now().After(deadline) {
			return out
		}
		time.Sleep(5 * time.Millisecond) // poll with a deadline
	}
}

func TestListenerContacts(t *testing.T) {
	l, log, reg := startListener(t, nil)
	tcp := l.TCPAddrs()
	log.RecordHit(&sinkhole.Hit{Time: time.Now(), Client: netip.AddrPortFrom(loopback, 5353), Proto: "udp",
		QName: "evil.example", Match: "evil.example", List: &sinkhole.Source{Name: "malware.txt"}, Action: sinkhole.ActionSinkhole})
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}

	// HTTP: the block page names the list and the reference.
	req, _ := http.NewRequest("GET", "http://"+tcp[0].String()+"/gate.php", nil)
	req.Host = "evil.example"
	req.Header.Set("User-Agent", "bot/1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "Reference: test-1-1") || !strings.Contains(string(body), "malware.txt") {
		t.Errorf("reply %d %q", resp.StatusCode, body)
	}

	// TLS: the handshake fails (no certificate), the ClientHello is kept.
	c, err := tls.Dial("tcp", tcp[0].String(), &tls.Config{ServerName: "www.evil.example", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
	if err == nil {
		c.Close()
		t.Fatal("TLS handshake completed")
	}

	// Anything else, on the other port.
	raw, err := net.Dial("tcp", tcp[1].String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Write([]byte("\x00\x01hello")); err != nil {
		t.Fatal(err)
	}
	raw.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, raw)
	raw.Close()

	// UDP.
	u, err := net.Dial("udp", l.UDPAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = u.Write([]byte{0xde, 0xad})
	u.Close()

	got := contacts(t, log, 4)
	kinds := map[string]map[string]any{}
	for _, m := range got {
		kinds[m["kind"].(string)+"/"+m["proto"].(string)] = m
	}
	h := kinds["http/tcp"]
	if h == nil || h["hit_seq"] != float64(1) || h["list"] != "malware.txt" || h["sinkhole_port"] != float64(tcp[0].Port()) {
		t.Errorf("http contact = %v", h)
	}
	if m, _ := h["http"].(map[string]any); m["host"] != "evil.example" || m["path"] != "/gate.php" || m["user_agent"] != "bot/1" {
		t.Errorf("http member = %v", h["http"])
	}
	tl := kinds["tls/tcp"]
	if m, _ := tl["tls"].(map[string]any); m == nil || m["sni"] != "www.evil.example" || !strings.HasPrefix(m["ja4"].(string), "t13d") || !strings.HasSuffix(strings.SplitN(m["ja4"].(string), "_", 2)[0], "h2") {
		t.Errorf("tls contact = %v", tl)
	}
	if tl["hit_seq"] != float64(1) || tl["hit_qname"] != "evil.example" {
		t.Errorf("tls contact not linked: %v", tl)
	}
	if r := kinds["raw/tcp"]; r == nil || r["raw_hex"] != "000168656c6c6f" || r["bytes"] != float64(7) || r["sinkhole_port"] != float64(tcp[1].Port()) {
		t.Errorf("raw contact = %v", r)
	}
	if r := kinds["raw/udp"]; r == nil || r["raw_hex"] != "dead" {
		t.Errorf("udp contact = %v", r)
	}
	if n := testutil.ToFloat64(l.connections.WithLabelValues("tcp", itoa(tcp[0].Port()))); n != 2 {
		t.Errorf("connections_total{tcp,%d} = %v, want 2", tcp[0].Port(), n)
	}

	if err := log.Close("test"); err != nil {
		t.Fatal(err)
	}
	if _, err := sinkhole.Verify(context.Background(), log.Dir(), nil); err != nil {
		t.Errorf("verify with contacts: %v", err)
	}
	_ = reg
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

func TestListenerConnectionCap(t *testing.T) {
	l, _, _ := startListener(t, func(c *Config) { c.MaxConns = 3; c.IdleTimeout = 30 * time.Second })
	addr := l.TCPAddrs()[0].String()
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(l.active) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("active = %v, want 3", testutil.ToFloat64(l.active))
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Over the cap the listener accepts and resets at once: the reset can
	// reach the dial itself on a loaded machine, or the first read.
	c, err := net.Dial("tcp", addr)
	switch {
	case errors.Is(err, syscall.ECONNRESET):
	case err != nil:
		t.Fatal(err)
	default:
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := bufio.NewReader(c).ReadByte(); err == nil || os.IsTimeout(err) {
			t.Fatalf("connection over the cap: read err %v, want closed", err)
		}
	}
	deadline = time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(l.rejected.WithLabelValues("max_conns")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("rejected{max_conns} = %v, want 1", testutil.ToFloat64(l.rejected.WithLabelValues("max_conns")))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	c := Config{Addresses: []netip.Addr{netip.IPv4Unspecified()}, CaptureBytes: 1, IdleTimeout: time.Second, MaxConns: 1, HTTPReply: ReplyPage}
	if err := c.Validate(); err == nil {
		t.Error("0.0.0.0 accepted")
	}
	c.Addresses = []netip.Addr{loopback}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	c.HTTPReply = "html"
	if err := c.Validate(); err == nil {
		t.Error("http_reply html accepted")
	}
}
