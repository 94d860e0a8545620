package resolver

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"

	"github.com/sinkd/sinkd/sinkhole"
)

// The cache stores upstream answers unfiltered, in wire format, so that a
// cache hit is a copy and a few patches: no unpacking, no packing. Policy runs
// after the cache (DESIGN.md), so a reload needs no flush.

const (
	// staleWindow is how long past expiry an entry may still be served when
	// every upstream fails (RFC 8767 suggests 1 to 3 days).
	staleWindow = 24 * time.Hour
	// staleTTL is the TTL of stale answers (RFC 8767 section 4).
	staleTTL = 30
	// servfailTTL is how long a SERVFAIL is cached (DESIGN.md).
	servfailTTL = 5
	// noSOATTL caches negative answers that carry no SOA only briefly.
	noSOATTL = 5
	// prefetchHits is how often an entry must have been asked before it is
	// refreshed ahead of expiry.
	prefetchHits = 2
	// maxEntrySize leaves room for our OPT (with an EDE) and the TCP length
	// prefix within 65535 bytes.
	maxEntrySize = 65535 - 2 - optHeaderLen - 6 - 64
	// keyFlagDO and keyFlagCD are the flag byte at the end of a cache key.
	keyFlagDO = 1
	keyFlagCD = 2
)

// entry is one cached answer. Everything but the counters is immutable once
// the entry is in the cache.
type entry struct {
	key     []byte   // lower-case wire qname, qtype, qclass, flag byte
	msg     []byte   // packed reply, ID 0, no OPT
	ttlOffs []uint16 // offsets of every RR's TTL field in msg
	ttls    []uint32 // the TTL written at each offset (clamped)
	rcode   int
	stored  time.Time
	expires time.Time
	ttl     uint32 // entry lifetime in seconds, for prefetch
	answer  sinkhole.Answer

	hits        atomic.Uint32
	prefetching atomic.Bool
	failedAt    atomic.Int64 // unix ns of the last upstream failure while stale, 0 if none
}

// fresh reports whether e may be served as is at now.
func (e *entry) fresh(now time.Time) bool { return now.Before(e.expires) }

// needsPrefetch reports whether e is popular and in the last tenth of its life.
func (e *entry) needsPrefetch(now time.Time) bool {
	if e.ttl < 10 || e.hits.Load() < prefetchHits {
		return false
	}
	return e.expires.Sub(now) < time.Duration(e.ttl)*time.Second/10
}

// cache is an LRU of entries keyed by a hash of their key; the key bytes are
// compared on every hit, so a hash collision is a miss, never a wrong answer.
type cache struct {
	lru  *lru.Cache[uint64, *entry]
	seed maphash.Seed
	cfg  CacheConfig
}

func newCache(cfg CacheConfig) (*cache, error) {
	l, err := lru.New[uint64, *entry](cfg.Size)
	if err != nil {
		return nil, err
	}
	return &cache{lru: l, seed: maphash.MakeSeed(), cfg: cfg}, nil
}

// appendKey appends the cache key of q to dst.
func appendKey(dst []byte, q *query) []byte {
	dst = append(dst, q.qname...)
	dst = append(dst, byte(q.qtype>>8), byte(q.qtype), byte(q.qclass>>8), byte(q.qclass))
	var f byte
	if q.do {
		f |= keyFlagDO
	}
	if q.flags&flagCD != 0 {
		f |= keyFlagCD
	}
	return append(dst, f)
}

func (c *cache) hash(key []byte) uint64 { return maphash.Bytes(c.seed, key) }

// get returns the entry for key, fresh or stale, or nil.
func (c *cache) get(key []byte) *entry {
	e, ok := c.lru.Get(c.hash(key))
	if !ok || !bytes.Equal(e.key, key) {
		return nil
	}
	return e
}

func (c *cache) add(e *entry) { c.lru.Add(c.hash(e.key), e) }

func (c *cache) len() int { return c.lru.Len() }

// addServFail caches a SERVFAIL for q for servfailTTL seconds.
func (c *cache) addServFail(key []byte, q *query, now time.Time) {
	m := new(dns.Msg)
	m.Response = true
	m.Rcode = dns.RcodeServerFailure
	m.Question = []dns.Question{{Name: string(appendPresName(nil, q.qname)) + ".", Qtype: q.qtype, Qclass: q.qclass}}
	if e := c.newEntry(key, m, now); e != nil {
		c.add(e)
	}
}

// clampTTL applies cache.min_ttl and cache.max_ttl.
func (c *cache) clampTTL(ttl uint32) uint32 {
	return max(min(ttl, uint32(c.cfg.MaxTTL/time.Second)), uint32(c.cfg.MinTTL/time.Second))
}

// newEntry builds an entry from an upstream reply; one with ttl 0 (a TTL-0
// answer) is answered from but not cached. It returns nil when the reply
// cannot be used (rcodes other than NOERROR, NXDOMAIN, SERVFAIL; a message
// that does not pack or is too large). m is modified.
func (c *cache) newEntry(key []byte, m *dns.Msg, now time.Time) *entry {
	// Our OPT is added per client; the upstream's is not kept.
	extra := m.Extra[:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra

	var ttl uint32
	switch m.Rcode {
	case dns.RcodeServerFailure:
		ttl = servfailTTL
		m.Answer, m.Ns, m.Extra = nil, nil, nil
	case dns.RcodeNameError, dns.RcodeSuccess:
		if m.Rcode == dns.RcodeNameError || len(m.Answer) == 0 {
			ttl = negativeTTL(m)
		} else {
			ttl = minTTL(m)
		}
		ttl = c.clampTTL(ttl)
		for _, s := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range s {
				h := rr.Header()
				h.Ttl = c.clampTTL(h.Ttl) // monotonic: never below the entry's ttl
			}
		}
	default:
		return nil
	}
	m.Id = 0
	m.Compress = true
	msg, err := m.Pack()
	if err != nil || len(msg) > maxEntrySize {
		return nil
	}
	e := &entry{
		key:     bytes.Clone(key),
		msg:     msg,
		rcode:   m.Rcode,
		stored:  now,
		expires: now.Add(time.Duration(ttl) * time.Second),
		ttl:     ttl,
		answer:  extractAnswer(m),
	}
	if e.ttlOffs, e.ttls, err = ttlOffsets(msg); err != nil {
		return nil
	}
	return e
}

// negativeTTL is min(SOA TTL, SOA MINIMUM) of the authority SOA (RFC 2308
// section 5), which also becomes the SOA's TTL.
func negativeTTL(m *dns.Msg) uint32 {
	for _, rr := range m.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
			return soa.Hdr.Ttl
		}
	}
	return noSOATTL
}

// minTTL is the smallest TTL of the reply's records.
func minTTL(m *dns.Msg) uint32 {
	ttl := uint32(1<<31 - 1)
	for _, s := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range s {
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	return ttl
}

// ttlOffsets walks a packed message and returns where each RR's TTL is.
func ttlOffsets(msg []byte) ([]uint16, []uint32, error) {
	var q query
	if err := q.parseHeader(msg); err != nil {
		return nil, nil, err
	}
	off := headerLen
	var err error
	for i := 0; i < int(q.qdcount); i++ {
		if off, err = skipName(msg, off); err != nil {
			return nil, nil, err
		}
		off += 4
	}
	n := int(q.ancount) + int(q.nscount) + int(q.arcount)
	offs := make([]uint16, 0, n)
	ttls := make([]uint32, 0, n)
	for i := 0; i < n; i++ {
		noff, err := skipName(msg, off)
		if err != nil {
			return nil, nil, err
		}
		if noff+10 > len(msg) {
			return nil, nil, errShort
		}
		offs = append(offs, uint16(noff+4))
		ttls = append(ttls, binary.BigEndian.Uint32(msg[noff+4:]))
		if off, err = skipRR(msg, off); err != nil {
			return nil, nil, err
		}
	}
	return offs, ttls, nil
}

// extractAnswer collects what the policy checks in an answer: CNAME and
// DNAME targets and addresses, HTTPS/SVCB address hints included.
func extractAnswer(m *dns.Msg) sinkhole.Answer {
	var a sinkhole.Answer
	name := func(s string) []byte {
		return []byte(strings.TrimSuffix(dns.CanonicalName(s), "."))
	}
	addr := func(ip []byte) {
		if x, ok := netip.AddrFromSlice(ip); ok {
			a.Addrs = append(a.Addrs, x.Unmap())
		}
	}
	hints := func(kv []dns.SVCBKeyValue) {
		for _, v := range kv {
			switch h := v.(type) {
			case *dns.SVCBIPv4Hint:
				for _, ip := range h.Hint {
					addr(ip.To4())
				}
			case *dns.SVCBIPv6Hint:
				for _, ip := range h.Hint {
					addr(ip)
				}
			}
		}
	}
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.CNAME:
			a.Targets = append(a.Targets, name(r.Target))
		case *dns.DNAME:
			a.Targets = append(a.Targets, name(r.Target))
		case *dns.A:
			addr(r.A.To4())
		case *dns.AAAA:
			addr(r.AAAA)
		case *dns.HTTPS:
			hints(r.Value)
		case *dns.SVCB:
			hints(r.Value)
		}
	}
	return a
}

// appendEntry appends the reply to q from e: the stored message with q's ID,
// flags and question (letter case), TTLs counted down, and an OPT when q had
// one. stale answers get TTL 30 and EDE 3.
func appendEntry(b []byte, q *query, e *entry, now time.Time, stale bool) []byte {
	start := len(b)
	b = append(b, e.msg...)
	m := b[start:]
	binary.BigEndian.PutUint16(m[0:], q.id)
	flags := q.replyFlags(e.rcode)
	if (q.do || q.flags&flagAD != 0) && binary.BigEndian.Uint16(e.msg[2:])&flagAD != 0 {
		flags |= flagAD
	}
	binary.BigEndian.PutUint16(m[2:], flags)
	copy(m[headerLen:], q.question)
	elapsed := uint32(now.Sub(e.stored) / time.Second)
	for i, off := range e.ttlOffs {
		ttl := uint32(staleTTL)
		if !stale {
			ttl = e.ttls[i] - min(elapsed, e.ttls[i])
		}
		binary.BigEndian.PutUint32(m[off:], ttl)
	}
	if q.edns {
		ar := binary.BigEndian.Uint16(m[10:])
		binary.BigEndian.PutUint16(m[10:], ar+1)
		if stale {
			b = appendOPT(b, e.rcode, q.do, edeStale, "")
		} else {
			b = appendOPT(b, e.rcode, q.do, -1, "")
		}
	}
	return b
}

// truncate cuts the reply at b[start:] down to header, question and OPT,
// with TC set, so the client retries over TCP (RFC 1035 4.2.1, RFC 7766).
func truncate(b []byte, start int, q *query) []byte {
	rcode := int(b[start+3] & 0xF)
	var ar uint16
	if q.edns {
		ar = 1
	}
	b = appendHeader(b[:start], q.id, q.replyFlags(rcode)|flagTC, 1, 0, 0, ar)
	b = append(b, q.question...)
	if q.edns {
		b = appendOPT(b, rcode, q.do, -1, "")
	}
	return b
}
