package resolver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"
	"unsafe"

	"github.com/miekg/dns"

	"github.com/sinkd/sinkd/sinkhole"
)

// status says what the caller of handle does with its result.
type status uint8

const (
	statusReply status = iota // send the reply
	statusNone                // send nothing
	statusSlow                // needs upstream: call again with slow allowed, off the reader
)

// request is one query on its way through the pipeline.
type request struct {
	q        query
	client   netip.AddrPort
	proto    proto
	admitted bool // ACL and rate limit already passed (second, slow pass)
	// qv is the query name's verdict, set by step 3 of handle: a
	// statusSlow query refused a slot for upstream still needs it.
	qv     sinkhole.Verdict
	key    [maxNameLen + 5]byte
	keyLen int
}

// Handle is the one wire-level entry point: it answers the query msg from
// client and returns out with the reply appended (out unchanged: no reply).
// It may wait for upstream; the UDP and TCP loops use the split form instead
// so that cache hits never wait behind misses.
func (s *Server) Handle(ctx context.Context, out, msg []byte, client netip.AddrPort, tcp bool) []byte {
	var r request
	p := protoUDP
	if tcp {
		p = protoTCP
	}
	out, _ = s.handle(ctx, out, msg, client, p, true, false, &r)
	return out
}

// handle runs the query pipeline. Each step says why it sits where it does.
// With slow false it never waits on the network: it returns statusSlow
// instead, and the caller runs it again on a goroutine of its own.
func (s *Server) handle(ctx context.Context, out, msg []byte, client netip.AddrPort, p proto, slow, admitted bool, r *request) ([]byte, status) {
	start := len(out)
	r.admitted = admitted
	now := s.now()
	q := &r.q
	r.client, r.proto = netip.AddrPortFrom(client.Addr().Unmap(), client.Port()), p
	addr := r.client.Addr()

	// 1. Parse. Garbage and responses get no reply at all: answering them
	// would make us a reflector.
	if q.parseHeader(msg) != nil || q.flags&flagQR != 0 {
		s.count(p, 0, rcodeNone, now)
		return out, statusNone
	}
	if q.opcode != 0 {
		return s.reply(q.appendError(out, rcodeNotImp, false), start, q, p, now)
	}
	if q.qdcount != 1 || q.parseQuestion(msg) != nil || q.badOPT {
		q.edns, q.question = false, nil
		return s.reply(q.appendError(out, rcodeFormErr, false), start, q, p, now)
	}
	if q.edns && q.ednsVer != 0 {
		return s.reply(q.appendError(out, rcodeBadVers, true), start, q, p, now)
	}
	if q.qclass != classIN {
		return s.reply(q.appendError(out, rcodeNotImp, true), start, q, p, now)
	}

	// 2. Access before any work: not an open resolver, and a flood from one
	// client costs a map lookup, not an upstream query.
	if !r.admitted {
		if !contains(s.cfg.Access.Allow, addr) {
			s.m.refused.Inc()
			return s.reply(q.appendError(out, rcodeRefused, true), start, q, p, now)
		}
		if s.limiter != nil && !contains(s.cfg.Access.RateLimitExempt, addr) && !s.limiter.allow(addr, now) {
			s.m.limited.Inc()
			s.count(p, q.qtype, rcodeNone, now)
			return out, statusNone
		}
		r.admitted = true
	}

	// 3. The query name against the policy before the cache or upstream: a
	// blocked name is never asked upstream.
	pol := s.policy.Load()
	r.qv = pol.CheckQuery(addr, q.presName())
	qv := &r.qv
	if qv.Blocks() {
		out = s.block(out, r, pol, qv, nil, now)
		return s.reply(out, start, q, p, now)
	}

	// 4. ANY gets the minimal answer of RFC 8482, never an upstream dump.
	if q.qtype == typeANY {
		out = appendHeader(out, q.id, q.replyFlags(rcodeSuccess), 1, 1, 0, 0)
		out = append(out, q.question...)
		out = append(out, 0xC0, headerLen, 0, typeHINFO, 0, classIN, 0, 0, 0x0E, 0x10, 0, 9, 7)
		out = append(out, "RFC8482"...)
		out = append(out, 0)
		if q.edns {
			binary.BigEndian.PutUint16(out[start+10:], 1)
			out = appendOPT(out, 0, q.do, -1, "")
		}
		if qv.Hit() && !qv.Allowed { // a log rule: answered normally, still recorded
			s.record(r, qv, out[start:], nil, now)
		}
		return s.reply(out, start, q, p, now)
	}

	// 5. The cache holds unfiltered upstream answers; the answer's names and
	// addresses are checked on every use, so a reload needs no flush.
	r.keyLen = len(appendKey(r.key[:0], q))
	key := r.key[:r.keyLen]
	e := s.cache.get(key)
	if e != nil && e.fresh(now) && e.rcode == rcodeServFail {
		// A failure remembered for servfailTTL: say it is one (RFC 8914 13).
		if !slow {
			s.m.hits.Inc()
		}
		out = s.servFail(out, r, qv, edeCachedError, "", now)
		return s.reply(out, start, q, p, now)
	}
	if e != nil && !e.fresh(now) && s.recentlyFailed(e, now) {
		// RFC 8767's failure recheck: upstream failed for this name moments
		// ago; answer stale at once instead of waiting out another timeout.
		s.m.stale.Inc()
		out = s.answer(out, r, pol, qv, e, now, true)
		return s.reply(out, start, q, p, now)
	}
	if e != nil && e.fresh(now) {
		if !slow {
			s.m.hits.Inc()
			e.hits.Add(1)
			if s.cfg.Cache.Prefetch && e.needsPrefetch(now) && e.prefetching.CompareAndSwap(false, true) {
				s.prefetch(e)
			}
		}
		out = s.answer(out, r, pol, qv, e, now, false)
		return s.reply(out, start, q, p, now)
	}
	if !slow {
		return out, statusSlow
	}

	// 6. Upstream, with identical queries in flight coalesced.
	s.m.misses.Inc()
	e, err := s.resolve(ctx, key)
	if err != nil {
		// A SERVFAIL entry is never an answer to fall back on: served
		// stale, it would hide the upstream for staleRecheck, not 5 s.
		if st := s.cache.get(key); st != nil && st.rcode != rcodeServFail {
			switch {
			case st.fresh(now): // stored meanwhile (a prefetch, another flight)
				out = s.answer(out, r, pol, qv, st, now, false)
				return s.reply(out, start, q, p, now)
			case s.cfg.Cache.ServeStale && now.Sub(st.expires) < staleWindow:
				st.failedAt.Store(now.UnixNano())
				s.m.stale.Inc()
				out = s.answer(out, r, pol, qv, st, now, true)
				return s.reply(out, start, q, p, now)
			}
		}
		// Remember the failure briefly so a dead upstream is not asked again
		// for every retry of every client.
		s.cache.addServFail(key, q, now)
		code, text := servFailReason(err)
		out = s.servFail(out, r, qv, code, text, now)
		return s.reply(out, start, q, p, now)
	}
	out = s.answer(out, r, pol, qv, e, now, false)
	return s.reply(out, start, q, p, now)
}

// staleRecheck is how long after an upstream failure a stale entry is
// served without asking upstream again (RFC 8767 section 5 suggests 30 s).
const staleRecheck = 30 * time.Second

// recentlyFailed reports whether e may be served stale without asking
// upstream: stale answers are on, e is an answer (not a SERVFAIL) within
// the stale window, and upstream failed for it less than staleRecheck ago.
func (s *Server) recentlyFailed(e *entry, now time.Time) bool {
	f := e.failedAt.Load()
	return s.cfg.Cache.ServeStale && f != 0 && e.rcode != rcodeServFail &&
		now.Sub(e.expires) < staleWindow && now.UnixNano()-f < int64(staleRecheck)
}

// EDE info-codes of SERVFAIL replies (RFC 8914). Their texts are a closed
// set (servFailReason): nothing of the upstream's error, its address
// included, reaches clients.
const (
	edeOther       = 0  // "Other": an upstream answer we cannot relay
	edeCachedError = 13 // "Cached Error": a SERVFAIL remembered for servfailTTL
	edeNoReachable = 22 // "No Reachable Authority": no upstream answered usefully
)

// servFailReason is the EDE code and text of a SERVFAIL for an upstream
// failure err.
func servFailReason(err error) (code int, text string) {
	switch {
	case errors.Is(err, errUncacheable):
		return edeOther, "upstream answer unusable"
	case errors.Is(err, context.DeadlineExceeded):
		return edeNoReachable, "upstream timed out"
	default: // errors, SERVFAIL, REFUSED, broken replies
		return edeNoReachable, "upstream failed"
	}
}

// servFail writes a SERVFAIL with the question and, when the query had
// EDNS, EDE code and text; a log rule's hit is still recorded.
func (s *Server) servFail(out []byte, r *request, qv *sinkhole.Verdict, code int, text string, now time.Time) []byte {
	start := len(out)
	out = r.q.appendErrorEDE(out, rcodeServFail, true, code, text)
	if qv.Hit() && !qv.Allowed {
		s.record(r, qv, out[start:], nil, now)
	}
	return out
}

// answer writes the reply from a cache entry, unless the answer's CNAME
// targets or addresses are listed (and the query name is not allowlisted).
func (s *Server) answer(out []byte, r *request, pol *sinkhole.Policy, qv *sinkhole.Verdict, e *entry, now time.Time, stale bool) []byte {
	logv := qv
	if !qv.Allowed {
		av := pol.CheckAnswer(r.client.Addr(), &e.answer)
		if av.Blocks() {
			return s.block(out, r, pol, &av, e, now)
		}
		if !qv.Hit() && av.Hit() {
			logv = &av
		}
	}
	start := len(out)
	out = appendEntry(out, &r.q, e, now, stale)
	if logv.Hit() && !logv.Allowed {
		s.record(r, logv, out[start:], e, now)
	}
	return out
}

// block writes the synthesized answer of a blocking verdict and records the
// hit; e is the withheld upstream answer for cname and ip triggers.
func (s *Server) block(out []byte, r *request, pol *sinkhole.Policy, v *sinkhole.Verdict, e *entry, now time.Time) []byte {
	q := &r.q
	sq := sinkhole.Query{
		ID: q.id, RD: q.flags&flagRD != 0, CD: q.flags&flagCD != 0,
		Question: q.question, QType: q.qtype, EDNS: q.edns, DO: q.do,
	}
	start := len(out)
	out = pol.AppendReply(out, &sq, v)
	s.record(r, v, out[start:], e, now)
	return out
}

// record hands a hit to the recorder. It runs only on hits; the hit's
// variable parts (names, rule, reply) share one allocation.
func (s *Server) record(r *request, v *sinkhole.Verdict, reply []byte, e *entry, now time.Time) {
	s.m.policyHit(v.Trigger, v.Action)
	if s.rec == nil {
		return
	}
	qname := r.q.presName()
	var scratch [512]byte
	b := append(scratch[:0], qname...)
	nq := len(b)
	switch {
	case v.Trigger == sinkhole.TriggerIP || v.Trigger == sinkhole.TriggerClient:
		b = v.Addr.AppendTo(b)
	case v.Name != nil && v.Trigger != sinkhole.TriggerQName:
		b = append(b, v.Name...)
	}
	nm := len(b)
	b = v.AppendRule(b)
	nr := len(b)
	b = append(b, reply...)
	// One allocation; never written again, so the strings may alias it.
	buf := bytes.Clone(b)
	str := unsafe.String(unsafe.SliceData(buf), nr)
	h := &sinkhole.Hit{
		Time:    now,
		Client:  r.client,
		Proto:   r.proto.String(),
		QName:   str[:nq],
		Match:   str[nq:nm],
		QType:   r.q.qtype,
		Trigger: v.Trigger,
		Rule:    str[nm:nr],
		Note:    v.Note(),
		List:    v.Source,
		Action:  v.Action,
	}
	if nm == nq { // the qname itself matched
		h.Match = h.QName
	}
	if len(reply) >= headerLen {
		h.Answer = buf[nr:len(buf):len(buf)]
		h.Rcode = int(reply[3] & 0xF)
	}
	if e != nil && v.Blocks() {
		h.Upstream = e.msg // immutable
	}
	s.rec.RecordHit(h)
}

// reply finishes a reply: UDP truncation, metrics.
func (s *Server) reply(out []byte, start int, q *query, p proto, began time.Time) ([]byte, status) {
	if len(out) == start {
		s.count(p, q.qtype, rcodeNone, began)
		return out, statusNone // drop action
	}
	if p == protoUDP && len(out)-start > q.udpLimit() {
		out = truncate(out, start, q)
	}
	s.count(p, q.qtype, int(out[start+3]&0xF), began)
	return out, statusReply
}

func (s *Server) count(p proto, qtype uint16, rcode int, began time.Time) {
	s.m.queries[p][qtypeIndex(qtype)][rcodeIndex(rcode)].Inc()
	s.m.duration[p].Observe(s.now().Sub(began).Seconds())
}

// resolve asks upstream the question of the cache key (coalescing identical
// queries in flight) and caches the answer.
func (s *Server) resolve(ctx context.Context, key []byte) (*entry, error) {
	v, err, shared := s.flight.Do(string(key), func() (any, error) {
		return s.exchange(ctx, key)
	})
	if shared {
		s.m.coalesced.Inc()
	}
	if err != nil {
		return nil, err
	}
	return v.(*entry), nil
}

// errUncacheable means the upstream reply cannot be used (an rcode other
// than NOERROR, NXDOMAIN or SERVFAIL, or a message too large to serve):
// treated like a failure.
var errUncacheable = errors.New("resolver: upstream answer not cacheable")

// exchange asks upstream the question of the cache key and stores the
// answer.
func (s *Server) exchange(ctx context.Context, key []byte) (*entry, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	qname, qtype, qclass, flags := splitKey(key)
	m := new(dns.Msg)
	m.Id = dns.Id()
	m.RecursionDesired = true
	m.CheckingDisabled = flags&keyFlagCD != 0
	name := string(appendPresName(make([]byte, 0, len(qname)+8), qname)) + "."
	m.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: qclass}}
	m.SetEdns0(ednsSize, flags&keyFlagDO != 0)
	reply, err := s.up.Exchange(ctx, m)
	if err != nil {
		return nil, err
	}
	e := s.cache.newEntry(key, reply, s.now())
	if e == nil {
		return nil, errUncacheable
	}
	if e.ttl > 0 {
		s.cache.add(e)
	}
	return e, nil
}

// prefetch refreshes e in the background.
func (s *Server) prefetch(e *entry) {
	s.m.prefetch.Inc()
	s.inflight.Add(1)
	go func() {
		defer s.inflight.Done()
		_, _, _ = s.flight.Do(string(e.key), func() (any, error) {
			return s.exchange(s.base, e.key)
		})
	}()
}
