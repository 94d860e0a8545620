package upstream

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A query that gives up on a connection that keeps answering others
// leaves nothing behind: its ID is forgotten, its late reply is dropped
// (not parked for nobody), and the connection is kept.
func TestStreamForgetsAbandonedQueries(t *testing.T) {
	t.Parallel()
	seen := make(chan int, 8) // query numbers, as the fake reads them
	conns := make(chan int, 8)
	var held *dns.Msg // touched only by the fake's one connection
	addr := startStreamFake(t, func(conn, n int, q *dns.Msg) ([]*dns.Msg, bool) {
		conns <- conn
		seen <- n
		switch n {
		case 0: // answered only after the next-but-one query
			held = reply(q, "192.0.2.1")
			return nil, false
		case 1:
			return []*dns.Msg{reply(q, "192.0.2.2")}, false
		default:
			return []*dns.Msg{held, reply(q, "192.0.2.3")}, false
		}
	})
	st := newStream(addr, tcpDialer(&net.Dialer{}, addr), time.Second)
	t.Cleanup(st.close)
	pack := func(name string) []byte {
		b, err := question(name, 0).Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	abandoned := make(chan error, 1)
	go func() {
		_, err := st.exchange(ctx, pack("abandoned.example."))
		abandoned <- err
	}()
	<-seen
	// Another query answered after the first was sent: the connection is
	// not a black hole, so the first one's timeout must not drop it.
	if m, err := st.exchange(t.Context(), pack("answered.example.")); err != nil || firstA(m) != "192.0.2.2" {
		t.Fatalf("second query: %v %v", m, err)
	}
	<-seen
	if err := <-abandoned; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("abandoned query: %v, want DeadlineExceeded", err)
	}
	st.mu.Lock()
	c := st.cur
	st.mu.Unlock()
	pending := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending)
	}
	if n := pending(); n != 0 {
		t.Errorf("%d queries pending after the abandoned one returned, want 0", n)
	}
	// The late reply to the abandoned query arrives first, then this one's.
	if m, err := st.exchange(t.Context(), pack("third.example.")); err != nil || firstA(m) != "192.0.2.3" {
		t.Fatalf("third query: %v %v", m, err)
	}
	st.mu.Lock()
	same := st.cur == c
	st.mu.Unlock()
	if c.isDead() || !same {
		t.Fatal("connection dropped though it kept answering")
	}
	if n := pending(); n != 0 {
		t.Errorf("%d queries pending at the end, want 0", n)
	}
	close(conns)
	for conn := range conns {
		if conn != 0 {
			t.Errorf("queries went over connection %d, want all over the first", conn)
		}
	}
}
