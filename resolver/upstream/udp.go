package upstream

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// transport carries one query to one upstream.
type transport interface {
	// exchange sends query (a packed message with one question; the
	// transport copies it and chooses the ID on the wire) and returns the
	// reply, checked against the query, with the wire ID.
	exchange(ctx context.Context, query []byte) (*dns.Msg, error)
	// close releases connections and stops the transport's goroutines.
	close()
}

// udpTransport sends each query from a fresh connected socket (random
// source port chosen by the kernel) with a random ID, and reads until the
// deadline past anything that is not the reply: wrong ID, wrong question,
// unparsable.
type udpTransport struct {
	addr   string
	dialer *net.Dialer
	bufs   *sync.Pool // *[]byte of maxUDPReply+1
}

func newUDP(addr string, d *net.Dialer, bufs *sync.Pool) *udpTransport {
	return &udpTransport{addr: addr, dialer: d, bufs: bufs}
}

// longAgo is a deadline in the past, to interrupt blocked reads.
var longAgo = time.Unix(1, 0)

func (u *udpTransport) exchange(ctx context.Context, query []byte) (*dns.Msg, error) {
	conn, err := u.dialer.DialContext(ctx, "udp", u.addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(longAgo) })
	defer stop()

	q := append([]byte(nil), query...)
	setID(q, randomID())
	if _, err := conn.Write(q); err != nil {
		return nil, ctxErr(ctx, err)
	}
	bp := u.bufs.Get().(*[]byte)
	defer u.bufs.Put(bp)
	buf := *bp
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, ctxErr(ctx, err)
		}
		if n > maxUDPReply {
			// Longer than any reply to our EDNS size should be: the
			// kernel cut it. If it answers q, ask over TCP as for TC.
			if checkReply(q, buf[:n]) == nil {
				return truncatedReply(q)
			}
			continue
		}
		// Anything but the answer to q is ignored: a spoofer has to
		// win the race with the right ID and question, and garbage
		// cannot end the wait early.
		m, err := unpackReply(q, buf[:n])
		if err != nil {
			continue
		}
		return m, nil
	}
}

// maxUDPReply is the longest UDP reply read whole: sinkd advertises 1232
// bytes upstream, and some servers send up to 4096 anyway. A waiting
// query holds a buffer one byte longer (not 64 KiB), so that a longer
// datagram, which the kernel cuts to fit, shows as n > maxUDPReply.
const maxUDPReply = 4096

// truncatedReply is the reply to q with TC set and no records: what a
// datagram too long to read stands for, so the pool asks over TCP.
func truncatedReply(q []byte) (*dns.Msg, error) {
	m := new(dns.Msg)
	if err := m.Unpack(q); err != nil {
		return nil, err
	}
	m.Response, m.Truncated = true, true
	m.Answer, m.Ns, m.Extra = nil, nil, nil
	return m, nil
}

func (u *udpTransport) close() {}

// ctxErr prefers the context's error when ctx is done, so that a read
// interrupted by cancellation or the deadline is reported as such.
func ctxErr(ctx context.Context, err error) error {
	if cerr := expired(ctx); cerr != nil {
		return cerr
	}
	return err
}

// expired returns ctx's cause when it is done, or DeadlineExceeded when
// its deadline has passed but its timer has not fired yet (a socket
// deadline set to the same instant can fire first).
func expired(ctx context.Context) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
