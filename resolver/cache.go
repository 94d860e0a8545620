package resolver

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sinkd/sinkd/sinkhole"
)

// The cache stores upstream answers unfiltered by policy, in wire format, so
// that a cache hit is a copy and a few patches: no unpacking, no packing.
// Policy runs after the cache (DESIGN.md), so a reload needs no flush. What
// is stored is scrubbed first: records that are not part of the answer to
// the question asked (cache poisoning) are neither stored nor served.

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
	// scrubbed counts the records scrub removed from upstream replies; nil
	// counts nothing.
	scrubbed prometheus.Counter
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

// splitKey returns the parts of a cache key made by appendKey.
func splitKey(key []byte) (qname []byte, qtype, qclass uint16, flags byte) {
	n := len(key) - 5
	return key[:n], binary.BigEndian.Uint16(key[n:]), binary.BigEndian.Uint16(key[n+2:]), key[n+4]
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
//
// Every reply to a client that needed upstream is served from the entry
// built here, the first one included, so what scrub removes is neither
// cached nor served, and the policy checks what is served.
func (c *cache) newEntry(key []byte, m *dns.Msg, now time.Time) *entry {
	qname, qtype, qclass, _ := splitKey(key)
	// The question is ours, not the upstream's: appendEntry writes the
	// client's question over it, which must be exactly as long.
	name, _, nerr := dns.UnpackDomainName(qname, 0)
	if nerr != nil {
		return nil
	}
	m.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: qclass}}

	// Our OPT is added per client; the upstream's is not kept.
	extra := m.Extra[:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra

	ttl, ok := c.prepare(m, qname)
	if !ok {
		return nil
	}
	m.Id = 0
	m.Compress = true
	msg, err := m.Pack()
	if err != nil {
		return nil
	}
	if new(dns.Msg).Unpack(msg) != nil {
		// miekg unpacks some malformed records leniently (an SOA whose
		// RDATA ends after its first name) and packs them into bytes it
		// cannot unpack: served, they would be a malformed reply. Drop
		// them and try once more.
		n := len(m.Answer) + len(m.Ns) + len(m.Extra)
		m.Answer, m.Ns, m.Extra = packable(m.Answer), packable(m.Ns), packable(m.Extra)
		if c.scrubbed != nil {
			c.scrubbed.Add(float64(n - len(m.Answer) - len(m.Ns) - len(m.Extra)))
		}
		if ttl, ok = c.prepare(m, qname); !ok {
			return nil
		}
		if msg, err = m.Pack(); err != nil || new(dns.Msg).Unpack(msg) != nil {
			return nil
		}
	}
	if len(msg) > maxEntrySize {
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

// prepare scrubs m and clamps its TTLs, and returns the entry's TTL; false
// means an rcode that is not cached.
func (c *cache) prepare(m *dns.Msg, qname []byte) (uint32, bool) {
	var ttl uint32
	switch m.Rcode {
	case dns.RcodeServerFailure:
		ttl = servfailTTL
		m.Answer, m.Ns, m.Extra = nil, nil, nil
	case dns.RcodeNameError, dns.RcodeSuccess:
		if n := scrub(m, qname); n > 0 && c.scrubbed != nil {
			c.scrubbed.Add(float64(n))
		}
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
		return 0, false
	}
	return ttl, true
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
	b = q.appendError(b[:start], int(b[start+3]&0xF), true)
	b[start+2] |= flagTC >> 8
	return b
}

// maxChain bounds the CNAME/DNAME chain scrub follows (a hostile reply of
// thousands of CNAMEs costs a bounded walk); records past it are dropped.
const maxChain = 32

// scrub removes from the upstream reply m to qname (lower-case wire name)
// every record that is not part of its answer, as Unbound's scrubber does
// for a forwarder, and returns how many it removed. A reply may otherwise
// carry records for names nobody asked about (an additional
// "bank.example A 6.6.6.6" in the reply for evil.example), which the cache
// would hand to every client that asks for evil.example.
//
//   - Answer: the chain from qname: records owned by qname and by each
//     CNAME target in turn (at a chain name, only the CNAME that continues
//     the chain), and a DNAME owned by an ancestor of a chain name, with
//     its RRSIGs (the chain continues at the synthesized name).
//   - Authority: SOA, NS and DS records and their RRSIGs owned by an
//     ancestor-or-self of the chain's last name; NSEC and NSEC3 records
//     and their RRSIGs at or below a zone of the reply (the owner of an
//     SOA or NS kept, or the signer of an RRSIG kept in the answer).
//   - Additional: records at or below the deepest SOA or NS owner kept in
//     authority (not the root, unless the last name is the root), else at
//     or below the last name.
//
// Records of a class other than IN go too.
func scrub(m *dns.Msg, qname []byte) int {
	before := len(m.Answer) + len(m.Ns) + len(m.Extra)
	// One buffer for every name's wire form: most names are short.
	nb := names{buf: make([]byte, 0, 32*before+maxNameLen+1)}
	m.Answer, m.Ns, m.Extra = onlyIN(m.Answer), onlyIN(m.Ns), onlyIN(m.Extra)

	// Answer: follow the chain from qname.
	owners := make([][]byte, len(m.Answer))
	for i, rr := range m.Answer {
		owners[i] = nb.wire(rr.Header().Name)
	}
	chain := [][]byte{qname}
	var loop []byte // where the last chain name points back into the chain
	dnames := make([]bool, len(m.Answer))
	for cur := qname; len(chain) < maxChain; {
		var next []byte
		for i, rr := range m.Answer {
			d, ok := rr.(*dns.DNAME)
			if ok && owners[i] != nil && len(owners[i]) < len(cur) && isSubdomain(cur, owners[i]) {
				if next = synthesize(cur, owners[i], nb.wire(d.Target)); next != nil {
					dnames[i] = true
					break
				}
			}
		}
		if next == nil {
			for i, rr := range m.Answer {
				if c, ok := rr.(*dns.CNAME); ok && bytes.Equal(owners[i], cur) {
					next = nb.wire(c.Target)
					break
				}
			}
		}
		if next == nil || chainIndex(chain, next) >= 0 {
			loop = next
			break
		}
		chain = append(chain, next)
		cur = next
	}
	last := chain[len(chain)-1]
	var zones [][]byte // apexes the reply speaks for
	keep := make([]bool, len(m.Answer))
	for i, rr := range m.Answer {
		switch k := chainIndex(chain, owners[i]); {
		case owners[i] == nil:
		case k >= 0:
			// At a chain name, only the CNAME that goes on (or closes a loop).
			if c, ok := rr.(*dns.CNAME); ok {
				next := loop
				if k+1 < len(chain) {
					next = chain[k+1]
				}
				keep[i] = next != nil && bytes.Equal(nb.wire(c.Target), next)
			} else {
				keep[i] = true
			}
		case dnames[i]:
			keep[i] = true
		}
	}
	for i, rr := range m.Answer { // the signatures of the DNAMEs kept
		if sig, ok := rr.(*dns.RRSIG); ok && !keep[i] && sig.TypeCovered == dns.TypeDNAME {
			for j := range m.Answer {
				if dnames[j] && bytes.Equal(owners[j], owners[i]) {
					keep[i] = true
					break
				}
			}
		}
	}
	answer := m.Answer[:0]
	for i, rr := range m.Answer {
		if !keep[i] {
			continue
		}
		answer = append(answer, rr)
		if sig, ok := rr.(*dns.RRSIG); ok {
			if z := nb.wire(sig.SignerName); z != nil && isSubdomain(owners[i], z) {
				zones = append(zones, z)
			}
		}
	}
	m.Answer = answer

	// Authority: the zone of the chain's end, then the proofs of
	// nonexistence of the zones the reply speaks for.
	var cut []byte
	nsOwners := make([][]byte, len(m.Ns))
	nsKeep := make([]bool, len(m.Ns))
	for i, rr := range m.Ns {
		h := rr.Header()
		if nsOwners[i] = nb.wire(h.Name); nsOwners[i] == nil {
			continue
		}
		switch coveredType(rr) {
		case dns.TypeSOA, dns.TypeNS, dns.TypeDS:
			nsKeep[i] = isSubdomain(last, nsOwners[i])
			if nsKeep[i] && (h.Rrtype == dns.TypeSOA || h.Rrtype == dns.TypeNS) {
				zones = append(zones, nsOwners[i])
				if len(nsOwners[i]) > len(cut) {
					cut = nsOwners[i]
				}
			}
		}
	}
	ns := m.Ns[:0]
	for i, rr := range m.Ns {
		if t := coveredType(rr); (t == dns.TypeNSEC || t == dns.TypeNSEC3) && nsOwners[i] != nil {
			for _, z := range zones {
				if isSubdomain(nsOwners[i], z) {
					nsKeep[i] = true
					break
				}
			}
		}
		if nsKeep[i] {
			ns = append(ns, rr)
		}
	}
	m.Ns = ns

	// Additional: glue and data of the zone, never of another name.
	if len(cut) <= 1 && len(last) > 1 {
		cut = nil // an upward referral to the root is no zone of the answer
	}
	if cut == nil {
		cut = last
	}
	extra := m.Extra[:0]
	for _, rr := range m.Extra {
		if owner := nb.wire(rr.Header().Name); owner != nil && isSubdomain(owner, cut) {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	return before - len(m.Answer) - len(m.Ns) - len(m.Extra)
}

// packable returns the records of rrs that unpack again once packed, in
// place.
func packable(rrs []dns.RR) []dns.RR {
	out := rrs[:0]
	for _, rr := range rrs {
		b := make([]byte, dns.Len(rr)+1)
		n, err := dns.PackRR(rr, b, 0, nil, false)
		if err != nil {
			continue
		}
		if _, _, err := dns.UnpackRR(b[:n], 0); err != nil {
			continue
		}
		out = append(out, rr)
	}
	return out
}

// onlyIN returns the records of rrs of class IN, in place.
func onlyIN(rrs []dns.RR) []dns.RR {
	return slices.DeleteFunc(rrs, func(rr dns.RR) bool { return rr.Header().Class != dns.ClassINET })
}

// coveredType is rr's type, or for an RRSIG the type it covers.
func coveredType(rr dns.RR) uint16 {
	if sig, ok := rr.(*dns.RRSIG); ok {
		return sig.TypeCovered
	}
	return rr.Header().Rrtype
}

// names holds wire names in one buffer that grows; a name returned stays
// valid (and unchanged) when it does.
type names struct{ buf []byte }

// wire appends name in lower-case wire format and returns it, or nil if
// it is not a valid name.
func (nb *names) wire(name string) []byte {
	start := len(nb.buf)
	nb.buf = slices.Grow(nb.buf, maxNameLen+1)
	n, err := dns.PackDomainName(dns.Fqdn(name), nb.buf[start:start+maxNameLen+1], 0, nil, false)
	if err != nil {
		return nil
	}
	nb.buf = nb.buf[:start+n]
	w := nb.buf[start : start+n : start+n]
	for i, c := range w {
		if 'A' <= c && c <= 'Z' { // length bytes are below 64
			w[i] = c + 'a' - 'A'
		}
	}
	return w
}

// isSubdomain reports whether the wire name child is parent or below it,
// label by label (an escaped dot inside a label is no boundary).
func isSubdomain(child, parent []byte) bool {
	for i := 0; i < len(child); i += int(child[i]) + 1 {
		if len(child)-i == len(parent) {
			return bytes.Equal(child[i:], parent)
		}
		if child[i] == 0 {
			break
		}
	}
	return false
}

// synthesize is the CNAME target a DNAME from owner to target makes of
// name (RFC 6672 section 2.2), or nil if it would be too long.
func synthesize(name, owner, target []byte) []byte {
	if target == nil {
		return nil
	}
	prefix := name[:len(name)-len(owner)]
	if len(prefix)+len(target) > maxNameLen {
		return nil
	}
	return append(bytes.Clone(prefix), target...)
}

// chainIndex is the position of name in chain, or -1.
func chainIndex(chain [][]byte, name []byte) int {
	for i, c := range chain {
		if bytes.Equal(c, name) {
			return i
		}
	}
	return -1
}
