package sinkhole

// Contact records: who connected to the sinkhole address (package
// listener), linked to the DNS hit that sent them there. DESIGN.md
// "Details ... Listener" lists the fields.

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// DefaultCorrelationWindow is how long a client's hits stay available for
// linking contacts (listener.correlation_window).
const DefaultCorrelationWindow = 10 * time.Minute

// Contact is one connection (or UDP datagram) to the sinkhole listener.
type Contact struct {
	Time     time.Time      // when it began
	Client   netip.AddrPort // who connected
	Proto    string         // "tcp" or "udp"
	Sinkhole netip.AddrPort // the address and port it was sent to (SO_ORIGINAL_DST when known)
	Kind     string         // "http", "tls" or "raw"
	Bytes    int64          // bytes received
	Duration time.Duration  // until the connection closed

	HTTP *ContactHTTP // kind http
	TLS  *ContactTLS  // kind tls
	Raw  []byte       // kind raw: the first capture_bytes

	// The DNS hit it is linked to. Zero HitSeq: the writer looks for one
	// (Log.LastHit) when it writes the record.
	HitSeq   uint64
	HitQName string
	List     string
}

// ContactHTTP is what an HTTP request's head said.
type ContactHTTP struct {
	Method, Host, Path, UserAgent string
}

// ContactTLS is what a TLS ClientHello said.
type ContactTLS struct {
	SNI     string
	ALPN    []string
	Version string // highest offered: "1.3", "1.2", ...
	JA4     string
}

// RecordContact queues c for the writer and returns at once; c belongs to
// the log afterwards. When the queue is full the contact is counted as
// lost (metric sinkd_evidence_lost_total{reason="queue"}).
func (l *Log) RecordContact(c *Contact) {
	if l.closed.Load() {
		return
	}
	select {
	case l.contacts <- c:
	default:
		l.m.lost.WithLabelValues("queue").Inc()
	}
}

// LastHit returns the hit to link a contact from client to: the most
// recent hit of that client within the correlation window whose qname is
// host or a parent domain of host (a contact with Host/SNI
// www.evil.example matches a hit on evil.example); failing that (or with
// host ""), the client's most recent hit within the window. ok is false
// when the client has none. Hits become visible once the writer has
// encoded them (within milliseconds of RecordHit).
func (l *Log) LastHit(client netip.Addr, host string) (seq uint64, qname, list string, ok bool) {
	e, ok := l.w.corr.lookup(client.Unmap().WithZone(""), evName(host), l.cfg.Now())
	return e.seq, e.qname, e.list, ok
}

// evCorrPerClient bounds the hits kept per client; evCorrClients bounds
// the clients of one generation (two are kept).
const (
	evCorrPerClient = 16
	evCorrClients   = 1 << 16
)

// evCorrHit is one remembered hit.
type evCorrHit struct {
	ts    time.Time
	seq   uint64
	qname string
	list  string
}

// evCorrClient holds a client's most recent hits, a ring.
type evCorrClient struct {
	hits [evCorrPerClient]evCorrHit
	n    int // how many are set
	next int // where the next goes
}

// evCorr is the correlation window: the writer adds hits, listeners look
// them up. Two generations of clients bound the memory; a client's hits
// are found in either.
type evCorr struct {
	window time.Duration
	mu     sync.Mutex
	cur    map[netip.Addr]*evCorrClient
	old    map[netip.Addr]*evCorrClient
	swept  time.Time // the last expire that ran
}

func newEvCorr(window time.Duration) *evCorr {
	if window <= 0 {
		window = DefaultCorrelationWindow
	}
	return &evCorr{window: window, cur: make(map[netip.Addr]*evCorrClient)}
}

// add remembers a hit just encoded with seq.
func (c *evCorr) add(client netip.Addr, h evCorrHit) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.cur[client]
	if cl == nil {
		if cl = c.old[client]; cl != nil {
			delete(c.old, client)
		} else {
			cl = new(evCorrClient)
		}
		if len(c.cur) >= evCorrClients {
			c.old, c.cur = c.cur, make(map[netip.Addr]*evCorrClient)
		}
		c.cur[client] = cl
	}
	cl.hits[cl.next] = h
	cl.next = (cl.next + 1) % evCorrPerClient
	if cl.n < evCorrPerClient {
		cl.n++
	}
}

// expire drops clients whose newest hit is older than the window, at most
// once a minute.
func (c *evCorr) expire(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.swept) < time.Minute {
		return
	}
	c.swept = now
	cut := now.Add(-c.window)
	for _, m := range []map[netip.Addr]*evCorrClient{c.cur, c.old} {
		for a, cl := range m {
			if cl.newest().ts.Before(cut) {
				delete(m, a)
			}
		}
	}
}

func (cl *evCorrClient) newest() evCorrHit {
	return cl.hits[(cl.next+evCorrPerClient-1)%evCorrPerClient]
}

func (c *evCorr) lookup(client netip.Addr, host string, now time.Time) (evCorrHit, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.cur[client]
	if cl == nil {
		if cl = c.old[client]; cl == nil {
			return evCorrHit{}, false
		}
	}
	cut := now.Add(-c.window)
	var any evCorrHit
	found := false
	for i := range cl.n { // newest first
		h := cl.hits[(cl.next-1-i+2*evCorrPerClient)%evCorrPerClient]
		if h.ts.Before(cut) {
			break
		}
		if host != "" && (host == h.qname || strings.HasSuffix(host, "."+h.qname)) {
			return h, true
		}
		if !found {
			any, found = h, true
		}
	}
	return any, found
}

// contact encodes one contact, linking it to a hit first, or counts it
// lost while the disk fails.
func (w *evWriter) contact(c *Contact) {
	if c.Time.IsZero() {
		c.Time = w.cfg.Now()
	}
	if c.HitSeq == 0 {
		host := ""
		switch {
		case c.HTTP != nil:
			host = c.HTTP.Host
		case c.TLS != nil:
			host = c.TLS.SNI
		}
		if h, ok := w.corr.lookup(evClientAddr(c.Client), evName(evHostOnly(host)), c.Time); ok {
			c.HitSeq, c.HitQName, c.List = h.seq, h.qname, h.list
		}
	}
	w.encodeLossy(&evRecord{kind: evContact, ts: c.Time, contact: c})
}

// evHostOnly strips a port from an HTTP Host value.
func evHostOnly(h string) string {
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().String()
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[:i], ":") {
		return h[:i]
	}
	return h
}

// appendContact appends a contact's members in the DESIGN.md order.
func (e *evEncoder) appendContact(buf []byte, c *Contact) []byte {
	buf = evAppendAddrPort(buf, "client", c.Client)
	if e.ident != nil {
		mac, host := e.ident.lookup(evClientAddr(c.Client))
		buf = evAppendStr(buf, "mac", mac)
		buf = evAppendStr(buf, "host", host)
	}
	buf = evAppendStr(buf, "proto", c.Proto)
	if c.Sinkhole.IsValid() {
		buf = evAppendAddrPort(buf, "sinkhole", c.Sinkhole)
	}
	buf = evAppendStr(buf, "kind", c.Kind)
	buf = evAppendInt(buf, "bytes", c.Bytes)
	buf = evAppendInt(buf, "duration_ms", c.Duration.Milliseconds())
	if c.HitSeq != 0 {
		buf = evAppendInt(buf, "hit_seq", int64(c.HitSeq))
	}
	buf = evAppendStr(buf, "hit_qname", c.HitQName)
	buf = evAppendStr(buf, "list", c.List)
	if h := c.HTTP; h != nil {
		buf = append(buf, `,"http":{"method":`...)
		buf = evAppendString(buf, h.Method)
		buf = evAppendStr(buf, "host", h.Host)
		buf = evAppendStr(buf, "path", h.Path)
		buf = evAppendStr(buf, "user_agent", h.UserAgent)
		buf = append(buf, '}')
	}
	if t := c.TLS; t != nil {
		buf = append(buf, `,"tls":{"sni":`...)
		buf = evAppendString(buf, t.SNI)
		buf = evAppendStrings(buf, "alpn", t.ALPN)
		buf = evAppendStr(buf, "version", t.Version)
		buf = evAppendStr(buf, "ja4", t.JA4)
		buf = append(buf, '}')
	}
	if len(c.Raw) > 0 {
		buf = append(buf, `,"raw_hex":"`...)
		buf = hex.AppendEncode(buf, c.Raw)
		buf = append(buf, '"')
	}
	return buf
}
