// Package listener is the sinkhole address's catcher: it accepts TCP
// connections and UDP datagrams sent to the sinkhole, reads what their
// first bytes say (an HTTP request head, a TLS ClientHello, or anything
// else), answers HTTP with a block page, refuses TLS with a fatal alert,
// and records each one as a contact in the evidence log, linked to the DNS
// hit that sent the client there. It never connects anywhere.
package listener

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sinkd/sinkd/sinkhole"
)

// Defaults (DESIGN.md "Details ... Listener").
const (
	DefaultCaptureBytes = 4096
	DefaultIdleTimeout  = 10 * time.Second
	DefaultMaxConns     = 1000
	ReplyPage           = "page"
	ReplyEmpty          = "empty"
)

// DefaultTCPPorts are the ports listened on when tcp_ports is not set.
func DefaultTCPPorts() []uint16 { return []uint16{80, 443, 8080, 8443} }

// Config configures the listener (the listener.* keys of sinkd.yaml).
type Config struct {
	Addresses    []netip.Addr  // bound; never unspecified
	TCPPorts     []uint16      // one TCP socket per address and port (0: ephemeral, tests)
	UDPPorts     []uint16      // one UDP socket per address and port
	CaptureBytes int           // bytes of a raw contact kept (and the cap on an HTTP head)
	IdleTimeout  time.Duration // a read waits at most this long
	MaxConns     int           // TCP connections at once; more are closed at once
	HTTPReply    string        // ReplyPage (403 naming the list) or ReplyEmpty (204)
	Instance     string        // in the page's Reference
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	for _, a := range c.Addresses {
		if !a.IsValid() || a.IsUnspecified() {
			return fmt.Errorf("listener: address %v: want a sinkhole address, not a wildcard", a)
		}
	}
	switch {
	case c.CaptureBytes < 1 || c.CaptureBytes > 1<<20:
		return fmt.Errorf("listener: capture_bytes %d: want 1..1048576", c.CaptureBytes)
	case c.IdleTimeout <= 0:
		return fmt.Errorf("listener: idle_timeout %v: want > 0", c.IdleTimeout)
	case c.MaxConns < 1:
		return fmt.Errorf("listener: max_conns %d: want >= 1", c.MaxConns)
	case c.HTTPReply != ReplyPage && c.HTTPReply != ReplyEmpty:
		return fmt.Errorf("listener: http_reply %q: want page or empty", c.HTTPReply)
	}
	return nil
}

// Recorder takes contacts and finds the hits to link them to;
// *sinkhole.Log is one.
type Recorder interface {
	RecordContact(c *sinkhole.Contact)
	LastHit(client netip.Addr, host string) (seq uint64, qname, list string, ok bool)
}

// Listener owns the sockets. New binds them; Serve runs until its context
// ends.
type Listener struct {
	cfg   Config
	rec   Recorder
	log   *slog.Logger
	tcp   []*net.TCPListener
	udp   []*net.UDPConn
	ports map[uint16]bool // the bound ports (every configured one): the port label values

	mu    sync.Mutex
	conns map[net.Conn]struct{} // open TCP connections: at most MaxConns
	done  bool                  // Serve is closing every connection: take no more

	connections *prometheus.CounterVec
	active      prometheus.GaugeFunc // len(conns)
	rejected    *prometheus.CounterVec
}

// New binds every address × port. On error nothing stays bound.
func New(cfg Config, rec Recorder, reg prometheus.Registerer, logger *slog.Logger) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Listener{cfg: cfg, rec: rec, log: logger, ports: map[uint16]bool{}, conns: map[net.Conn]struct{}{}}
	for _, a := range cfg.Addresses {
		for _, p := range cfg.TCPPorts {
			ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, p)))
			if err != nil {
				l.closeSockets()
				return nil, fmt.Errorf("listener: %w", err)
			}
			l.tcp = append(l.tcp, ln)
			l.ports[uint16(ln.Addr().(*net.TCPAddr).Port)] = true
		}
		for _, p := range cfg.UDPPorts {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, p)))
			if err != nil {
				l.closeSockets()
				return nil, fmt.Errorf("listener: %w", err)
			}
			l.udp = append(l.udp, c)
			l.ports[uint16(c.LocalAddr().(*net.UDPAddr).Port)] = true
		}
	}
	f := promauto.With(reg)
	l.connections = f.NewCounterVec(prometheus.CounterOpts{Name: "sinkd_listener_connections_total",
		Help: "Connections (TCP) and datagrams (UDP) to the sinkhole listener, by protocol and original port (configured ports, else other)."},
		[]string{"proto", "port"})
	l.active = f.NewGaugeFunc(prometheus.GaugeOpts{Name: "sinkd_listener_active_connections",
		Help: "TCP connections to the sinkhole listener open now."}, func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(len(l.conns))
	})
	l.rejected = f.NewCounterVec(prometheus.CounterOpts{Name: "sinkd_listener_rejected_total",
		Help: "Connections the sinkhole listener closed at once, by reason (max_conns, accept_error)."},
		[]string{"reason"})
	logger.Info("sinkhole listener bound", "tcp", joinAddrs(l.TCPAddrs()), "udp", joinAddrs(l.UDPAddrs()))
	return l, nil
}

// joinAddrs is addrs comma-separated (one token in the log, so that tests
// and operators can read ephemeral ports from it).
func joinAddrs(addrs []netip.AddrPort) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// TCPAddrs are the bound TCP addresses, in Config order (address, then port).
func (l *Listener) TCPAddrs() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(l.tcp))
	for _, ln := range l.tcp {
		out = append(out, ln.Addr().(*net.TCPAddr).AddrPort())
	}
	return out
}

// UDPAddrs are the bound UDP addresses.
func (l *Listener) UDPAddrs() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(l.udp))
	for _, c := range l.udp {
		out = append(out, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	return out
}

func (l *Listener) closeSockets() {
	for _, ln := range l.tcp {
		_ = ln.Close()
	}
	for _, c := range l.udp {
		_ = c.Close()
	}
}

// Serve accepts until ctx ends, then closes the sockets and every open
// connection and returns once all its goroutines have.
func (l *Listener) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, ln := range l.tcp {
		wg.Go(func() { l.acceptLoop(ln, &wg) })
	}
	for _, c := range l.udp {
		wg.Go(func() { l.udpLoop(c) })
	}
	<-ctx.Done()
	l.closeSockets()
	l.mu.Lock()
	l.done = true
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	wg.Wait()
	return nil
}

func (l *Listener) acceptLoop(ln *net.TCPListener, wg *sync.WaitGroup) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.rejected.WithLabelValues("accept_error").Inc()
			l.log.Warn("listener: accept", "err", err)
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		if !l.track(c) {
			l.rejected.WithLabelValues("max_conns").Inc()
			_ = c.SetLinger(0)
			_ = c.Close()
			continue
		}
		wg.Go(func() {
			defer func() {
				_ = c.Close()
				l.mu.Lock()
				delete(l.conns, c)
				l.mu.Unlock()
			}()
			l.handle(c)
		})
	}
}

// track adds c to the open connections unless MaxConns are open or Serve
// is closing them (c was accepted just before its socket closed).
func (l *Listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done || len(l.conns) >= l.cfg.MaxConns {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Listener) portLabel(p uint16) string {
	if l.ports[p] {
		return strconv.Itoa(int(p))
	}
	return "other"
}

// tlsAlert is a fatal handshake_failure alert.
var tlsAlert = []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}

// handle reads the first bytes of one connection, answers and records it.
func (l *Listener) handle(c *net.TCPConn) {
	start := time.Now()
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	dst, ok := originalDst(c)
	if !ok {
		dst = c.LocalAddr().(*net.TCPAddr).AddrPort()
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	l.connections.WithLabelValues("tcp", l.portLabel(dst.Port())).Inc()
	ct := &sinkhole.Contact{Time: start, Client: client, Proto: "tcp", Sinkhole: dst, Kind: "raw"}
	end := start.Add(4 * l.cfg.IdleTimeout) // slow-loris bound on a connection's life
	buf := make([]byte, 0, min(l.cfg.CaptureBytes, 4096))
	limit := l.cfg.CaptureBytes
	final := false
	for !final {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(len(buf), maxHello-len(buf)))
		}
		deadline := min(time.Now().Add(l.cfg.IdleTimeout).UnixNano(), end.UnixNano())
		_ = c.SetReadDeadline(time.Unix(0, deadline))
		n, err := c.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		ct.Bytes += int64(n)
		final = err != nil || len(buf) >= limit
		switch {
		case len(buf) > 0 && buf[0] == 0x16:
			limit = maxHello
			final = err != nil || len(buf) >= limit
			ch, perr := parseClientHello(buf)
			if perr == errNeedMore && !final {
				continue
			}
			if perr == nil {
				ct.Kind = "tls"
				ct.TLS = &sinkhole.ContactTLS{SNI: ch.sni, ALPN: ch.alpn, Version: versionName(ch.version()), JA4: ch.ja4()}
				_, _ = c.Write(tlsAlert)
				l.finish(c, ct, start)
				return
			}
			limit = l.cfg.CaptureBytes
			final = final || len(buf) >= limit
		case len(buf) > 0:
			h, perr := parseHTTP(buf, final)
			if perr == errNeedMore {
				continue
			}
			if perr == nil {
				ct.Kind, ct.HTTP = "http", h
				l.replyHTTP(c, ct)
				l.finish(c, ct, start)
				return
			}
		}
		if !final && len(buf) > 0 && ct.Kind == "raw" {
			// Neither HTTP nor TLS: capture up to capture_bytes.
			continue
		}
	}
	// raw: keep counting what arrives until the client stops or the
	// connection's time is up; only the first capture_bytes are kept.
	ct.Raw = buf[:min(len(buf), l.cfg.CaptureBytes)]
	var sink [4096]byte
	for {
		deadline := min(time.Now().Add(l.cfg.IdleTimeout).UnixNano(), end.UnixNano())
		_ = c.SetReadDeadline(time.Unix(0, deadline))
		n, err := c.Read(sink[:])
		ct.Bytes += int64(n)
		if err != nil {
			break
		}
	}
	ct.Duration = time.Since(start)
	l.rec.RecordContact(ct)
}

// finish half-closes c and reads what the client still sends (briefly,
// counted) so that closing does not reset the connection before the client
// has read the reply, then records the contact.
func (l *Listener) finish(c *net.TCPConn, ct *sinkhole.Contact, start time.Time) {
	_ = c.CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(min(l.cfg.IdleTimeout, time.Second)))
	n, _ := io.CopyN(io.Discard, c, 64<<10)
	ct.Bytes += n
	ct.Duration = time.Since(start)
	l.rec.RecordContact(ct)
}

// replyHTTP answers an HTTP request: 403 with a page naming the list and
// the reference <instance>-<hit_seq>, or 204.
func (l *Listener) replyHTTP(c net.Conn, ct *sinkhole.Contact) {
	seq, qname, list, ok := l.rec.LastHit(ct.Client.Addr(), hostOnly(ct.HTTP.Host))
	if ok {
		ct.HitSeq, ct.HitQName, ct.List = seq, qname, list
	}
	_ = c.SetWriteDeadline(time.Now().Add(l.cfg.IdleTimeout))
	if l.cfg.HTTPReply == ReplyEmpty {
		_, _ = c.Write([]byte("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
		return
	}
	body := blockPage(l.cfg.Instance, ct)
	head := "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n"
	if ct.HitSeq != 0 {
		head += "X-Sinkd-Reference: " + reference(l.cfg.Instance, ct.HitSeq) + "\r\n"
	}
	_, _ = c.Write([]byte(head + "\r\n" + body))
}

// reference is the page's Reference: <instance>-<hit_seq>.
func reference(instance string, seq uint64) string {
	return instance + "-" + strconv.FormatUint(seq, 10)
}

// hostOnly strips a port from a Host value.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}

// udpLoop records every datagram as a raw contact; nothing is answered.
func (l *Listener) udpLoop(c *net.UDPConn) {
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		l.connections.WithLabelValues("udp", l.portLabel(local.Port())).Inc()
		l.rec.RecordContact(&sinkhole.Contact{Time: time.Now(), Client: from, Proto: "udp", Sinkhole: local,
			Kind: "raw", Bytes: int64(n), Raw: slices.Clone(buf[:min(n, l.cfg.CaptureBytes)])})
	}
}
