package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sync/singleflight"

	"github.com/sinkd/sinkd/sinkhole"
)

// Upstream answers the questions the cache cannot (package upstream's Pool).
type Upstream interface {
	Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error)
	Ready() bool
}

// Server is the DNS front: it owns its UDP and TCP sockets and runs every
// query through the pipeline of handle.
type Server struct {
	cfg     Config
	log     *slog.Logger
	up      Upstream
	rec     sinkhole.Recorder
	cache   *cache
	limiter *rateLimiter
	flight  singleflight.Group
	m       *metrics
	now     func() time.Time
	policy  atomic.Pointer[sinkhole.Policy]

	mu    sync.Mutex
	udp   []*net.UDPConn
	tcp   []*net.TCPListener
	conns map[*net.TCPConn]struct{} // open TCP connections (listen.tcp_max_conns)
	// tcpPerClient counts open TCP connections per client address.
	tcpPerClient map[netip.Addr]int
	base         context.Context // slow-path work; cancelled when draining ends
	cancel       context.CancelFunc
	inflight     sync.WaitGroup // slow-path goroutines
	loops        sync.WaitGroup // socket loops
	slow         atomic.Int64   // queries waiting on upstream
}

// Option adjusts a Server (tests inject a clock).
type Option func(*Server)

// WithClock replaces time.Now.
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// New builds a server. It opens no socket and starts no goroutine: Listen
// and Serve do. rec may be nil.
func New(cfg Config, up Upstream, rec sinkhole.Recorder, reg prometheus.Registerer, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := newCache(cfg.Cache)
	if err != nil {
		return nil, fmt.Errorf("resolver: cache: %w", err)
	}
	s := &Server{cfg: cfg, log: log.With("component", "resolver"), up: up, rec: rec, cache: c, now: time.Now,
		conns: make(map[*net.TCPConn]struct{}), tcpPerClient: make(map[netip.Addr]int)}
	if cfg.Access.RateLimit > 0 {
		s.limiter = newRateLimiter(cfg.Access.RateLimit)
	}
	for _, o := range opts {
		o(s)
	}
	s.m = newMetrics(reg, func() float64 { return float64(c.len()) })
	c.scrubbed = s.m.scrubbed
	s.base, s.cancel = context.WithCancel(context.Background())
	s.policy.Store(sinkhole.NewPolicy(sinkhole.Settings{}, nil))
	return s, nil
}

// SetPolicy swaps in a new policy snapshot; queries already past their
// policy check finish against the old one.
func (s *Server) SetPolicy(p *sinkhole.Policy) { s.policy.Store(p) }

// Policy is the snapshot in force.
func (s *Server) Policy() *sinkhole.Policy { return s.policy.Load() }

// Ready reports whether an upstream has answered.
func (s *Server) Ready() bool { return s.up.Ready() }

// Listen opens a UDP socket and a TCP listener on every listen address.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.cfg.Listen {
		ap := netip.MustParseAddrPort(a) // checked by Validate
		uc, tl, err := listenPair(ap)
		// Port 0: the kernel picks the UDP port, and TCP may already use it
		// (another program's connection): pick again.
		for try := 0; ap.Port() == 0 && errors.Is(err, syscall.EADDRINUSE) && try < 20; try++ {
			uc, tl, err = listenPair(ap)
		}
		if err != nil {
			s.closeLocked()
			return fmt.Errorf("resolver: listen %s: %w", a, err)
		}
		s.udp = append(s.udp, uc)
		s.tcp = append(s.tcp, tl)
	}
	return nil
}

// listenPair opens the UDP socket and the TCP listener of one address, on
// the same port. One address family per socket: "0.0.0.0" and "[::]" may
// both be listed, as in BIND's listen-on and listen-on-v6.
func listenPair(ap netip.AddrPort) (*net.UDPConn, *net.TCPListener, error) {
	udpNet, tcpNet := "udp4", "tcp4"
	if ap.Addr().Is6() {
		udpNet, tcpNet = "udp6", "tcp6"
	}
	uc, err := net.ListenUDP(udpNet, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, nil, fmt.Errorf("udp: %w", err)
	}
	if ap.Addr().IsUnspecified() {
		if err := enablePktinfo(uc); err != nil {
			_ = uc.Close()
			return nil, nil, fmt.Errorf("udp packet info: %w", err)
		}
	}
	setRecvBuffer(uc, udpRecvBuffer)
	tap := netip.AddrPortFrom(ap.Addr(), uc.LocalAddr().(*net.UDPAddr).AddrPort().Port())
	tl, err := net.ListenTCP(tcpNet, net.TCPAddrFromAddrPort(tap))
	if err != nil {
		_ = uc.Close()
		return nil, nil, fmt.Errorf("tcp %s: %w", tap, err)
	}
	return uc, tl, nil
}

// Addrs are the bound addresses, one per listen address (UDP and TCP share
// the port).
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.AddrPort, 0, len(s.udp))
	for _, u := range s.udp {
		out = append(out, u.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	return out
}

func (s *Server) closeLocked() {
	for _, u := range s.udp {
		_ = u.Close()
	}
	for _, t := range s.tcp {
		_ = t.Close()
	}
	s.udp, s.tcp = nil, nil
}

// Serve answers queries on the sockets of Listen until ctx is done, then
// stops reading, lets queries in flight finish (at most DrainTimeout) and
// returns.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if len(s.udp) == 0 {
		s.mu.Unlock()
		return errors.New("resolver: Serve before Listen")
	}
	readers := max(1, runtime.GOMAXPROCS(0))
	for _, u := range s.udp {
		for range readers {
			s.loops.Add(1)
			go s.serveUDP(u)
		}
	}
	for _, t := range s.tcp {
		s.loops.Add(1)
		go s.serveTCP(t)
	}
	s.mu.Unlock()

	<-ctx.Done()
	s.mu.Lock()
	s.closeLocked()
	for c := range s.conns {
		_ = c.CloseRead() // stop reading for good; answers in flight still go out
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.loops.Wait(); s.inflight.Wait(); close(done) }()
	t := time.NewTimer(s.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("drain timeout: queries still in flight are abandoned", "timeout", s.cfg.DrainTimeout)
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close() // a client that does not read its answers
		}
		s.mu.Unlock()
		<-done
	}
	s.cancel()
	return nil
}

// maxSlow bounds the queries waiting on upstream at once; beyond it a miss
// gets SERVFAIL at once, so a random-subdomain flood costs no goroutines.
// tcpPipeline bounds one TCP connection's queries in flight.
const (
	maxSlow     = 10000
	tcpPipeline = 64
)

// acquireSlow takes a slot for a query that waits on upstream.
func (s *Server) acquireSlow() bool {
	if s.slow.Add(1) > maxSlow {
		s.slow.Add(-1)
		s.m.overload.Inc()
		return false
	}
	return true
}

func (s *Server) releaseSlow() { s.slow.Add(-1) }

// busy writes the SERVFAIL for a cache miss refused a slot by acquireSlow,
// with EDE 0 "server busy" when the query had EDNS; a log rule's hit is
// still recorded, as on every other SERVFAIL.
func (s *Server) busy(out []byte, r *request) []byte {
	return s.servFail(out, r, &r.qv, edeOther, "server busy", s.now())
}

// udpRecvBuffer is the UDP socket receive buffer we ask for: about 10 ms
// of queries at 100k/s plus headroom, so bursts wait instead of being dropped.
const udpRecvBuffer = 4 << 20

// udpBatch is how many datagrams one recvmmsg/sendmmsg call moves.
const udpBatch = 16

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share: batched
// reads and writes (recvmmsg/sendmmsg on Linux, one at a time elsewhere).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// serveUDP is one reader of a UDP socket. It reads the datagrams waiting in
// one system call, answers cache hits and policy hits in place, and sends
// those replies in one system call; misses go to a goroutine of their own.
// On a wildcard socket each reply is sent from the address its query came to.
func (s *Server) serveUDP(c *net.UDPConn) {
	defer s.loops.Done()
	local := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	wildcard, v6 := local.IsUnspecified(), local.Is6()
	var bc batchConn = ipv4.NewPacketConn(c)
	if v6 {
		bc = ipv6.NewPacketConn(c)
	}
	var (
		rms  = make([]ipv4.Message, udpBatch)
		wms  = make([]ipv4.Message, 0, udpBatch)
		outs [udpBatch][]byte
		wbuf [udpBatch][1][]byte
		oobs [udpBatch][]byte
		r    request
	)
	for i := range rms {
		rms[i].Buffers = [][]byte{make([]byte, 65535)}
		outs[i] = make([]byte, 0, 65535)
		if wildcard {
			rms[i].OOB = make([]byte, oobSize)
			oobs[i] = make([]byte, 0, oobSize)
		}
	}
	for {
		n, err := bc.ReadBatch(rms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		wms = wms[:0]
		for i := range n {
			m := &rms[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			from := ua.AddrPort()
			var src netip.Addr
			if wildcard {
				src, _ = pktDst(m.OOB[:m.NN])
			}
			msg := m.Buffers[0][:m.N]
			reply, st := s.handle(s.base, outs[i][:0], msg, from, protoUDP, false, false, &r)
			if st == statusSlow {
				if s.acquireSlow() {
					msg := append([]byte(nil), msg...)
					admitted := r.admitted
					s.inflight.Add(1)
					go func() {
						defer s.inflight.Done()
						defer s.releaseSlow()
						var r request
						reply, st := s.handle(s.base, nil, msg, from, protoUDP, true, admitted, &r)
						if st == statusReply {
							s.writeUDP(c, reply, src, v6, from)
						}
					}()
					continue
				}
				reply, st = s.busy(outs[i][:0], &r), statusReply
			}
			if st != statusReply {
				continue
			}
			k := len(wms)
			wbuf[k][0] = reply
			w := ipv4.Message{Buffers: wbuf[k][:], Addr: ua}
			if src.IsValid() {
				w.OOB = appendPktSrc(oobs[k][:0], src, v6)
			}
			wms = append(wms, w)
		}
		for len(wms) > 0 {
			sent, err := bc.WriteBatch(wms, 0)
			if errors.Is(err, net.ErrClosed) {
				break
			}
			wms = wms[max(sent, 1):] // a datagram that cannot be sent is dropped, like a lost packet
		}
	}
}

// writeUDP sends a reply, from src when it is known (wildcard sockets).
func (s *Server) writeUDP(c *net.UDPConn, reply []byte, src netip.Addr, v6 bool, to netip.AddrPort) {
	var oob []byte
	if src.IsValid() {
		oob = appendPktSrc(nil, src, v6)
	}
	_, _, _ = c.WriteMsgUDPAddrPort(reply, oob, to)
}

// serveTCP accepts connections up to listen.tcp_max_conns.
func (s *Server) serveTCP(l *net.TCPListener) {
	defer s.loops.Done()
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		client := tcpClientKey(c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
		s.mu.Lock()
		if s.udp == nil { // shutting down
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		if len(s.conns) >= s.cfg.TCPMaxConns {
			s.mu.Unlock()
			s.m.tcpReject.Inc()
			_ = c.Close()
			continue
		}
		if n := s.tcpPerClient[client]; s.cfg.TCPMaxConnsPerClient > 0 && n >= s.cfg.TCPMaxConnsPerClient {
			s.mu.Unlock()
			s.m.tcpRejectClient.Inc()
			_ = c.Close()
			continue
		}
		s.tcpPerClient[client]++
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.m.tcpConns.Inc()
		s.loops.Add(1)
		go s.serveConn(c, client)
	}
}

// tcpClientKey is what listen.tcp_max_conns_per_client counts by: an IPv4
// address, or the /64 of an IPv6 one (a host gets a whole /64 to pick from).
func tcpClientKey(a netip.Addr) netip.Addr {
	if a = a.Unmap(); a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a
}

// serveConn answers the queries of one TCP connection, pipelined (RFC 7766):
// queries are read as they come and answered as they are ready, possibly out
// of order; the connection closes after tcp_idle_timeout without a query.
// client is the connection's key in tcpPerClient.
func (s *Server) serveConn(c *net.TCPConn, client netip.Addr) {
	defer s.loops.Done()
	var (
		wmu    sync.Mutex
		broken bool // a write failed: later replies are not sent
		conns  sync.WaitGroup
	)
	from := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	// A client outside access.allow gets its REFUSED, then the connection
	// closes: it cannot hold a slot of the caps by asking again and again.
	refused := !contains(s.cfg.Access.Allow, from.Addr().Unmap())
	defer func() {
		conns.Wait()
		_ = c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		if s.tcpPerClient[client] <= 1 {
			delete(s.tcpPerClient, client)
		} else {
			s.tcpPerClient[client]--
		}
		s.mu.Unlock()
		s.m.tcpConns.Dec()
	}()
	// A client that does not read its answers is closed after one write
	// waited tcp_idle_timeout: the replies queued behind it are dropped at
	// once instead of each waiting out a timeout of its own, and the
	// queries it sent meanwhile are not read (CloseRead would still let
	// the reader drain the socket buffer, asking upstream for each).
	write := func(reply []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		if broken {
			return
		}
		_ = c.SetWriteDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
		if _, err := c.Write(reply); err != nil {
			broken = true
			_ = c.Close()
		}
	}
	pending := make(chan struct{}, tcpPipeline)
	var lenBuf [2]byte
	buf := make([]byte, 512)
	out := make([]byte, 2, 4096)
	var r request
	for {
		_ = c.SetReadDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if n > cap(buf) {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		reply, st := s.handle(s.base, out[:2], buf[:n], from, protoTCP, false, false, &r)
		if st == statusSlow { // never for a refused client: its REFUSED comes first
			// At most tcpPipeline per connection: the reader waits, and
			// holds no slot of maxSlow while it does.
			pending <- struct{}{}
			if s.acquireSlow() {
				msg := append([]byte(nil), buf[:n]...)
				admitted := r.admitted
				conns.Add(1)
				s.inflight.Add(1)
				go func() {
					defer s.inflight.Done()
					defer conns.Done()
					defer func() { <-pending; s.releaseSlow() }()
					var r request
					reply, st := s.handle(s.base, make([]byte, 2, 512), msg, from, protoTCP, true, admitted, &r)
					if st == statusReply {
						binary.BigEndian.PutUint16(reply, uint16(len(reply)-2))
						write(reply)
					}
				}()
				continue
			}
			<-pending
			reply, st = s.busy(out[:2], &r), statusReply
		}
		if st == statusReply {
			binary.BigEndian.PutUint16(reply, uint16(len(reply)-2))
			write(reply)
			out = reply[:2]
		}
		if refused { // one message, answered or not
			return
		}
	}
}
