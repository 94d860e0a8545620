package upstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// errConnClosed is the error of queries pending on a connection that was
// closed under them without a reason of its own.
var errConnClosed = errors.New("connection closed")

// errStalled closes a connection that let a query's deadline pass without
// delivering any reply since the query was written.
var errStalled = errors.New("connection stalled")

// streamTransport carries queries over one long-lived TCP or TLS
// connection per upstream, pipelined (RFC 7766 s6.2.1): each query gets an
// ID unique on the connection, one reader goroutine hands replies to their
// waiters. A dead connection is replaced on the next query; a query whose
// write or read fails on a reused connection is retried once on a new one
// (the server may have closed it while idle).
//
// Dials run in a goroutine of the transport, bounded by dialTimeout and not
// by the query that started them: a query that gives up (its share of the
// time is short) leaves the connection being set up for the next one.
type streamTransport struct {
	addr        string
	dial        func(ctx context.Context) (net.Conn, error)
	dialTimeout time.Duration

	ctx    context.Context // done when closed; parent of dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // dials and read loops

	mu      sync.Mutex
	closed  bool
	cur     *streamConn // nil or possibly dead
	dialing *dialCall   // nil unless a dial runs
}

// dialCall is one dial in progress; done is closed when c/err are set.
type dialCall struct {
	done chan struct{}
	c    *streamConn
	err  error
}

func newStream(addr string, dial func(context.Context) (net.Conn, error), dialTimeout time.Duration) *streamTransport {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamTransport{addr: addr, dial: dial, dialTimeout: dialTimeout, ctx: ctx, cancel: cancel}
}

// tcpDialer dials plain TCP.
func tcpDialer(d *net.Dialer, addr string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

// tlsDialer dials TCP and completes a TLS handshake with cfg.
func tlsDialer(d *net.Dialer, addr string, cfg *tls.Config) func(context.Context) (net.Conn, error) {
	td := &tls.Dialer{NetDialer: d, Config: cfg}
	return func(ctx context.Context) (net.Conn, error) { return td.DialContext(ctx, "tcp", addr) }
}

func (t *streamTransport) exchange(ctx context.Context, query []byte) (*dns.Msg, error) {
	for attempt := 0; ; attempt++ {
		c, fresh, err := t.conn(ctx)
		if err != nil {
			return nil, err
		}
		m, err := c.exchange(ctx, query)
		if err == nil || fresh || attempt > 0 || ctx.Err() != nil || !errors.Is(err, errConnDied) {
			return m, err
		}
	}
}

// conn returns a live connection, dialling (or waiting for the dial in
// progress) if needed; fresh reports that no query has used it before.
func (t *streamTransport) conn(ctx context.Context) (c *streamConn, fresh bool, err error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, false, errConnClosed
	}
	if t.cur != nil && !t.cur.isDead() {
		c := t.cur
		t.mu.Unlock()
		return c, !c.used.Swap(true), nil
	}
	call := t.dialing
	if call == nil {
		call = &dialCall{done: make(chan struct{})}
		t.dialing = call
		t.wg.Add(1)
		go t.runDial(call)
	}
	t.mu.Unlock()

	select {
	case <-call.done:
		if call.err != nil {
			return nil, false, call.err
		}
		return call.c, !call.c.used.Swap(true), nil
	case <-ctx.Done():
		return nil, false, context.Cause(ctx)
	}
}

// runDial dials, installs the connection and starts its reader.
func (t *streamTransport) runDial(call *dialCall) {
	defer t.wg.Done()
	ctx, cancel := context.WithTimeout(t.ctx, t.dialTimeout)
	nc, err := t.dial(ctx)
	cancel()

	t.mu.Lock()
	defer t.mu.Unlock()
	t.dialing = nil
	if err == nil && t.closed {
		_ = nc.Close()
		err = errConnClosed
	}
	if err != nil {
		call.err = fmt.Errorf("dial %s: %w", t.addr, err)
		close(call.done)
		return
	}
	c := &streamConn{nc: nc, pending: make(map[uint16]*pendingQuery), dead: make(chan struct{})}
	c.lastRead.Store(time.Now().UnixNano())
	t.cur = c
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		c.readLoop()
	}()
	call.c = c
	close(call.done)
}

func (t *streamTransport) close() {
	t.mu.Lock()
	t.closed = true
	c := t.cur
	t.cur = nil
	t.mu.Unlock()
	t.cancel()
	if c != nil {
		c.kill(errConnClosed)
	}
	t.wg.Wait()
}

// errConnDied marks errors that came from the connection rather than the
// query, so the query may be retried on a new connection.
var errConnDied = errors.New("connection died")

// streamConn is one TCP or TLS connection with its pipelined queries.
type streamConn struct {
	nc       net.Conn
	used     atomic.Bool  // some query took this connection
	lastRead atomic.Int64 // UnixNano of the last reply read

	wmu sync.Mutex // serializes writes

	mu      sync.Mutex
	pending map[uint16]*pendingQuery // by wire ID
	dead    chan struct{}            // closed by kill
	err     error                    // why; set before dead is closed
}

// pendingQuery is a query waiting on a connection.
type pendingQuery struct {
	query []byte      // as written, with its wire ID: replies are checked against it
	reply chan []byte // buffered (1); receives the one reply that answers query
}

func (c *streamConn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// kill closes the connection once; pending queries see err.
func (c *streamConn) kill(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = fmt.Errorf("%w: %w", errConnDied, err)
	close(c.dead)
	_ = c.nc.Close()
}

// readLoop reads length-prefixed replies and hands each to the query
// waiting for its ID when it answers that query's question; replies nobody
// waits for (late, unknown ID) or with another question are dropped, and
// the query keeps waiting (until its deadline) for its answer.
func (c *streamConn) readLoop() {
	r := bufio.NewReader(c.nc)
	var lenBuf [2]byte
	for {
		if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
			c.kill(err)
			return
		}
		n := binary.BigEndian.Uint16(lenBuf[:])
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			c.kill(err)
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		if n < 2 {
			continue
		}
		id := binary.BigEndian.Uint16(msg)
		c.mu.Lock()
		p := c.pending[id]
		if p != nil && checkReply(p.query, msg) == nil {
			delete(c.pending, id) // one reply per query: the send cannot block
		} else {
			p = nil
		}
		c.mu.Unlock()
		if p != nil {
			p.reply <- msg
		}
	}
}

// register gives query (a message after its length prefix) an ID not in
// use on the connection and adds it to the pending queries.
func (c *streamConn) register(query []byte) (uint16, *pendingQuery, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, nil, c.err
	}
	if len(c.pending) >= 1<<15 {
		return 0, nil, fmt.Errorf("%w: too many queries in flight", errConnDied)
	}
	for {
		id := randomID()
		if _, busy := c.pending[id]; !busy {
			setID(query, id)
			p := &pendingQuery{query: query, reply: make(chan []byte, 1)}
			c.pending[id] = p
			return id, p, nil
		}
	}
}

func (c *streamConn) unregister(id uint16) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *streamConn) exchange(ctx context.Context, query []byte) (*dns.Msg, error) {
	if len(query) > maxMsgLen {
		return nil, errors.New("query too long")
	}
	b := make([]byte, 2+len(query))
	binary.BigEndian.PutUint16(b, uint16(len(query)))
	copy(b[2:], query)
	q := b[2:]
	id, p, err := c.register(q)
	if err != nil {
		return nil, err
	}

	sent := time.Now().UnixNano()
	c.wmu.Lock()
	dl, _ := ctx.Deadline()
	_ = c.nc.SetWriteDeadline(dl)
	_, err = c.nc.Write(b) // one write: length and message in one segment
	c.wmu.Unlock()
	if err != nil {
		// A partial write leaves the stream out of step: drop it.
		c.kill(err)
		c.unregister(id)
		return nil, ctxErr(ctx, fmt.Errorf("%w: %w", errConnDied, err))
	}

	select {
	case reply := <-p.reply:
		m, err := unpackReply(q, reply)
		if err != nil {
			// Our ID and question, then bytes that do not parse: the
			// server is broken or the stream out of step (a short
			// length prefix), and what follows cannot be trusted.
			err = fmt.Errorf("bad reply: %w", err)
			c.kill(err)
			return nil, fmt.Errorf("%w: %w", errConnDied, err)
		}
		return m, nil
	case <-c.dead:
		c.unregister(id)
		return nil, c.err
	case <-ctx.Done():
		c.unregister(id)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && c.lastRead.Load() < sent {
			// Nothing came back since the query went out: the
			// connection may be a black hole; start over next time.
			c.kill(errStalled)
		}
		return nil, context.Cause(ctx)
	}
}
