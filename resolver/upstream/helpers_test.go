package upstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs a miekg server until the test ends.
func serve(t testing.TB, srv *dns.Server) {
	t.Helper()
	ready := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(ready) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-ready
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
}

// startUDP starts a fake upstream on 127.0.0.1:0/udp and returns its address.
func startUDP(t testing.TB, h dns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, &dns.Server{PacketConn: pc, Handler: h})
	return pc.LocalAddr().String()
}

// startTCP starts a fake upstream on 127.0.0.1:0/tcp and returns its address.
func startTCP(t testing.TB, h dns.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, &dns.Server{Listener: ln, Handler: h})
	return ln.Addr().String()
}

// startUDPTCP starts one handler on the same port over UDP and TCP.
func startUDPTCP(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil { // the UDP port is taken: try another
			ln.Close()
			continue
		}
		serve(t, &dns.Server{Listener: ln, Handler: h})
		serve(t, &dns.Server{PacketConn: pc, Handler: h})
		return ln.Addr().String()
	}
	t.Fatal("no port free for both UDP and TCP")
	return ""
}

// blackhole returns the address of a UDP socket that reads nothing and
// answers nothing, and the socket itself (to see what arrived).
func blackhole(t *testing.T) (string, net.PacketConn) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String(), pc
}

// closedPort returns a loopback address where nothing listens (UDP and TCP).
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// reply builds the answer to r with one A record per ip.
func reply(r *dns.Msg, ips ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	for _, ip := range ips {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.ParseIP(ip),
		})
	}
	return m
}

// answer is a handler answering every query with A ip.
func answer(ip string) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) { _ = w.WriteMsg(reply(r, ip)) }
}

// counting wraps h and counts the queries it sees.
func counting(n *atomic.Int32, h dns.HandlerFunc) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		n.Add(1)
		h(w, r)
	}
}

// rcodeHandler answers every query with rcode.
func rcodeHandler(rcode int) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		_ = w.WriteMsg(m)
	}
}

// newPool builds a Pool on a fresh registry and closes it after the test.
func newPool(t *testing.T, cfg Config) (*Pool, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := New(cfg, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, reg
}

// question returns a query for name/A with id.
func question(name string, id uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	q.Id = id
	return q
}

// firstA returns the first A record's address of m, or "".
func firstA(m *dns.Msg) string {
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	return ""
}

// selfSigned returns a certificate for the names and IPs given, usable as
// its own root.
func selfSigned(t *testing.T, dnsNames []string, ips []net.IP) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sinkd test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// trackingListener counts accepted connections and can close them all.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

// startStreamFake runs a raw TCP DNS server: for each query read on a
// connection, fn returns the replies to write now (possibly none, or
// several held back earlier) and whether to close the connection.
// conn counts connections from 0; n counts queries on the connection.
func startStreamFake(t *testing.T, fn func(conn, n int, q *dns.Msg) (replies []*dns.Msg, hangUp bool)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				for n := 0; ; n++ {
					var l [2]byte
					if _, err := io.ReadFull(c, l[:]); err != nil {
						return
					}
					b := make([]byte, binary.BigEndian.Uint16(l[:]))
					if _, err := io.ReadFull(c, b); err != nil {
						return
					}
					q := new(dns.Msg)
					if err := q.Unpack(b); err != nil {
						return
					}
					replies, hangUp := fn(i, n, q)
					for _, r := range replies {
						out, _ := r.Pack()
						out = append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...)
						if _, err := c.Write(out); err != nil {
							return
						}
					}
					if hangUp {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// lowerQuestion answers with A ip, echoing the question in lower case.
func lowerQuestion(ip string) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := reply(r, ip)
		m.Question[0].Name = strings.ToLower(m.Question[0].Name)
		_ = w.WriteMsg(m)
	}
}

// waitFor polls cond until it holds or the deadline passes.
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
