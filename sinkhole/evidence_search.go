package sinkhole

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// HitQuery selects records of the evidence log (`sinkd hits`,
// /api/v1/hits). Zero fields select everything.
type HitQuery struct {
	Type    string       // "hit" (also ""), "contact" or "all"
	Client  netip.Prefix // the client address or network
	MAC     string       // the client's link-layer address
	Name    string       // qname (of a contact: hit_qname): the name and its subdomains
	List    string       // list name
	Trigger string       // qname, cname, ip, client
	Since   time.Time    // ts >= Since
	Until   time.Time    // ts < Until
	Limit   int          // only the newest Limit matches (in log order)
}

// Query errors.
var (
	// ErrBadQuery is wrapped by every invalid HitQuery field.
	ErrBadQuery = errors.New("sinkhole: bad hit query")
)

// Validate normalizes q (lower-case names and MAC) and reports the first
// invalid field.
func (q *HitQuery) Validate() error {
	switch q.Type {
	case "":
		q.Type = "hit"
	case "hit", "contact", "all":
	default:
		return fmt.Errorf("%w: type %q: want hit, contact or all", ErrBadQuery, q.Type)
	}
	if q.MAC != "" {
		if q.MAC = evMAC(q.MAC); q.MAC == "" {
			return fmt.Errorf("%w: mac: not a link-layer address", ErrBadQuery)
		}
	}
	q.Name = evName(strings.TrimSpace(q.Name))
	switch q.Trigger {
	case "", "qname", "cname", "ip", "client":
	default:
		return fmt.Errorf("%w: trigger %q: want qname, cname, ip or client", ErrBadQuery, q.Trigger)
	}
	if q.Limit < 0 {
		return fmt.Errorf("%w: limit %d", ErrBadQuery, q.Limit)
	}
	if q.Client.IsValid() {
		q.Client = netip.PrefixFrom(q.Client.Addr().Unmap(), q.Client.Bits()-evUnmapBits(q.Client.Addr())).Masked()
	}
	return nil
}

func evUnmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// ParseClient parses an -client/?client= value: an address or a CIDR.
func ParseClient(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%w: client %q: %w", ErrBadQuery, s, err)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: client %q: want an address or CIDR", ErrBadQuery, s)
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseTime parses a -since/-until value: RFC 3339 or a duration back from
// now ("24h", "7d", "1d12h").
func ParseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := evParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%w: time %q: want RFC 3339 (2025-01-02T15:04:05Z) or a duration (24h, 7d)", ErrBadQuery, s)
	}
	return now.Add(-d), nil
}

func evParseDuration(s string) (time.Duration, error) {
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, err
		}
		days, s = time.Duration(n)*24*time.Hour, s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	return days + d, err
}

// evQuery is a HitQuery prepared for matching raw lines.
type evQuery struct {
	HitQuery
	typ      []byte // nil: any type
	clientEq []byte // `"client":"ADDR"` for a single-address query
	nameB    []byte
	dotName  []byte
	macB     []byte
	listB    []byte
	triggerB []byte
	since    []byte // formatted like ts
	until    []byte
}

func newEvQuery(q HitQuery) evQuery {
	e := evQuery{HitQuery: q}
	if q.Type != "all" {
		e.typ = []byte(q.Type)
	}
	if q.Client.IsValid() && q.Client.IsSingleIP() {
		e.clientEq = []byte(`"client":"` + q.Client.Addr().String() + `"`)
	}
	if q.Name != "" {
		e.nameB, e.dotName = []byte(q.Name), []byte("."+q.Name)
	}
	e.macB, e.listB, e.triggerB = evBytes(q.MAC), evBytes(q.List), evBytes(q.Trigger)
	if !q.Since.IsZero() {
		e.since = evAppendTime(nil, q.Since)
	}
	if !q.Until.IsZero() {
		e.until = evAppendTime(nil, q.Until)
	}
	return e
}

// evBytes is nil for "".
func evBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// match reports whether a record line matches. f is scratch space.
func (q *evQuery) match(line []byte, f *evFields) bool {
	if q.typ != nil && !(bytes.HasPrefix(line, []byte(evPrefixType)) && bytes.HasPrefix(line[len(evPrefixType):], q.typ) &&
		len(line) > len(evPrefixType)+len(q.typ) && line[len(evPrefixType)+len(q.typ)] == '"') {
		return false
	}
	if q.clientEq != nil && !bytes.Contains(line, q.clientEq) {
		return false
	}
	if q.nameB != nil && !bytes.Contains(line, q.nameB) {
		return false
	}
	if !f.scan(line) {
		return false
	}
	if q.since != nil || q.until != nil {
		ts := f.get("ts")
		if q.since != nil && bytes.Compare(ts, q.since) < 0 || q.until != nil && bytes.Compare(ts, q.until) >= 0 {
			return false
		}
	}
	if q.Client.IsValid() {
		a, err := netip.ParseAddr(string(f.get("client")))
		if err != nil || !q.Client.Contains(a.Unmap()) {
			return false
		}
	}
	if q.macB != nil && !bytes.Equal(f.get("mac"), q.macB) {
		return false
	}
	if q.listB != nil && !bytes.Equal(f.str("list"), q.listB) {
		return false
	}
	if q.triggerB != nil && !bytes.Equal(f.get("trigger"), q.triggerB) {
		return false
	}
	if q.nameB != nil {
		n := f.str("qname")
		if n == nil {
			n = f.str("hit_qname")
		}
		if !bytes.Equal(n, q.nameB) && !bytes.HasSuffix(n, q.dotName) {
			return false
		}
	}
	return true
}

// evFields holds the top-level members of one record line.
type evFields struct {
	f   []evField
	tmp []byte
}

type evField struct {
	key, val []byte // val: a string's contents (still escaped), or raw JSON
	esc      bool   // val is a string with escapes
}

// scan splits a JSON object line into its top-level members. It reports
// false for anything that is not one well-formed object.
func (fs *evFields) scan(b []byte) bool {
	fs.f = fs.f[:0]
	i := evWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = evWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return evWS(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		kend := evStrEnd(b, i+1)
		if kend < 0 {
			return false
		}
		key := b[i+1 : kend]
		i = evWS(b, kend+1)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = evWS(b, i+1)
		if i >= len(b) {
			return false
		}
		var fl evField
		fl.key = key
		switch b[i] {
		case '"':
			end := evStrEnd(b, i+1)
			if end < 0 {
				return false
			}
			fl.val = b[i+1 : end]
			fl.esc = bytes.IndexByte(fl.val, '\\') >= 0
			i = end + 1
		case '[', '{':
			end := evSkipNested(b, i)
			if end < 0 {
				return false
			}
			fl.val = b[i:end]
			i = end
		default:
			j := i
			for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ' ' && b[j] != '\t' {
				j++
			}
			if j == i {
				return false
			}
			fl.val = b[i:j]
			i = j
		}
		fs.f = append(fs.f, fl)
		i = evWS(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			return evWS(b, i+1) == len(b)
		}
		if b[i] != ',' {
			return false
		}
		i = evWS(b, i+1)
	}
}

// get returns a member's raw value ("" and nil when absent).
func (fs *evFields) get(key string) []byte {
	for i := range fs.f {
		if string(fs.f[i].key) == key {
			return fs.f[i].val
		}
	}
	return nil
}

// str returns a string member unescaped.
func (fs *evFields) str(key string) []byte {
	for i := range fs.f {
		if string(fs.f[i].key) != key {
			continue
		}
		if !fs.f[i].esc {
			return fs.f[i].val
		}
		var s string
		fs.tmp = append(append(append(fs.tmp[:0], '"'), fs.f[i].val...), '"')
		if json.Unmarshal(fs.tmp, &s) != nil {
			return nil
		}
		return []byte(s)
	}
	return nil
}

func evWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// evStrEnd returns the index of the quote closing a string whose contents
// start at i, or -1.
func evStrEnd(b []byte, i int) int {
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		j += i
		k := j - 1
		for k >= i && b[k] == '\\' {
			k--
		}
		if (j-1-k)%2 == 0 {
			return j
		}
		i = j + 1
	}
}

// evSkipNested returns the index just past the array or object at b[i].
func evSkipNested(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			end := evStrEnd(b, i+1)
			if end < 0 {
				return -1
			}
			i = end
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				return i + 1
			}
			if depth < 0 {
				return -1
			}
		}
		i++
	}
	return -1
}

// evChunk is a batch of matching lines of one segment, in order.
type evChunk struct {
	data    []byte // lines, each with its newline
	lastSeq uint64 // the last record read so far in the segment
	err     error
}

const evChunkSize = 1 << 20

// evSearch is one search over a log directory.
type evSearch struct {
	dir     string
	q       evQuery
	lastSeq uint64 // of the last record read in the newest segment searched
}

// SearchLog calls fn with every record in dir that matches q, in log order;
// with q.Limit, only the newest q.Limit. The line (without newline) is
// valid only during the call. Segments are read in parallel; segments that
// cannot hold a record of q's time range are skipped. A trailing incomplete
// line of the newest segment (being written) is skipped.
func SearchLog(ctx context.Context, dir string, q HitQuery, fn func(line []byte) error) error {
	if err := q.Validate(); err != nil {
		return err
	}
	s := &evSearch{dir: dir, q: newEvQuery(q)}
	_, err := s.run(ctx, fn)
	return err
}

// evSlack is how far a record's ts may stray before its segment's name
// (hits are stamped when asked, written a little later).
const evSlack = time.Minute

// run searches and returns the highest seq emitted.
func (s *evSearch) run(ctx context.Context, fn func(line []byte) error) (uint64, error) {
	all, _, err := evListSegments(s.dir)
	if err != nil {
		return 0, err
	}
	var segs []evSeg
	for i, seg := range all {
		if !s.q.Until.IsZero() && !seg.start.Before(s.q.Until.Add(evSlack)) {
			continue
		}
		if !s.q.Since.IsZero() && i+1 < len(all) {
			if info, ok := evSegLast(seg); ok && info.lastTS.Add(evSlack).Before(s.q.Since) {
				continue
			}
		}
		segs = append(segs, seg)
	}
	results := make([]chan evChunk, len(segs))
	for i := range results {
		results[i] = make(chan evChunk, 4)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := min(runtime.GOMAXPROCS(0), len(segs))
	sem := make(chan struct{}, workers+1)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				i := int(next.Add(1) - 1)
				if i >= len(segs) {
					return
				}
				s.scanSegment(ctx, segs[i], i == len(segs)-1, results[i])
			}
		}()
	}
	defer wg.Wait()

	var ring *evRing
	if s.q.Limit > 0 {
		ring = &evRing{max: s.q.Limit}
	}
	var emitted uint64
	emit := func(line []byte) error {
		if l, err := evParseLine(line); err == nil {
			emitted = max(emitted, l.seq)
		}
		if ring != nil {
			ring.add(line)
			return nil
		}
		return fn(line)
	}
	for i := range segs {
		for c := range results[i] {
			if c.err != nil {
				return emitted, c.err
			}
			for line := range bytes.Lines(c.data) {
				if err := emit(line[:len(line)-1]); err != nil {
					return emitted, err
				}
			}
			if i == len(segs)-1 {
				s.lastSeq = c.lastSeq
			}
		}
		<-sem
	}
	if ring != nil {
		for _, line := range ring.lines() {
			if err := fn(line); err != nil {
				return emitted, err
			}
		}
	}
	return emitted, nil
}

// scanSegment sends the matching lines of one segment to out, then closes it.
func (s *evSearch) scanSegment(ctx context.Context, seg evSeg, newest bool, out chan<- evChunk) {
	defer close(out)
	send := func(c evChunk) bool {
		select {
		case out <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	r, err := evOpen(seg)
	if err != nil {
		if newest && errors.Is(err, os.ErrNotExist) {
			return // compressed meanwhile; the .gz is newer than this search
		}
		send(evChunk{err: err})
		return
	}
	defer r.Close()
	lines := newEvLines(r, 1<<20)
	var f evFields
	var c evChunk
	for {
		line, complete, ok := lines.next()
		if !ok {
			break
		}
		if !complete {
			break // being written
		}
		if s.q.match(line, &f) {
			c.data = append(c.data, line...)
			c.data = append(c.data, '\n')
		}
		if newest {
			if l, err := evParseLine(line); err == nil {
				c.lastSeq = l.seq
			}
		}
		if len(c.data) >= evChunkSize {
			if !send(c) {
				return
			}
			c = evChunk{lastSeq: c.lastSeq}
		}
		if lines.n&4095 == 0 && ctx.Err() != nil {
			return
		}
	}
	if lines.err != nil {
		c.err = fmt.Errorf("sinkhole: evidence: %s:%d: %w", seg.path, lines.n+1, lines.err)
	}
	send(c)
}

// evRing keeps the newest lines added.
type evRing struct {
	max  int
	buf  [][]byte
	next int
	full bool
}

func (r *evRing) add(line []byte) {
	if len(r.buf) < r.max {
		r.buf = append(r.buf, append([]byte(nil), line...))
		return
	}
	r.buf[r.next] = append(r.buf[r.next][:0], line...)
	r.next = (r.next + 1) % r.max
	r.full = true
}

func (r *evRing) lines() [][]byte {
	if !r.full {
		return r.buf
	}
	return append(append([][]byte(nil), r.buf[r.next:]...), r.buf[:r.next]...)
}

// FollowLog is SearchLog, then waits for new records and hands on those
// that match, polling the newest segment every poll, until ctx is done
// (which is not an error).
func FollowLog(ctx context.Context, dir string, q HitQuery, poll time.Duration, fn func(line []byte) error) error {
	if err := q.Validate(); err != nil {
		return err
	}
	var floor uint64
	if segs, _, err := evListSegments(dir); err == nil && len(segs) > 0 {
		if info, ok := evSegLast(segs[len(segs)-1]); ok {
			floor = info.lastSeq
		}
	}
	s := &evSearch{dir: dir, q: newEvQuery(q)}
	emitted, err := s.run(ctx, fn)
	if err != nil {
		return err
	}
	t := &evTailer{dir: dir, q: newEvQuery(q), floor: max(floor, emitted, s.lastSeq)}
	return t.run(ctx, poll, fn)
}

// evTailer reads records appended to the newest segment, across rotations.
type evTailer struct {
	dir      string
	q        evQuery
	floor    uint64 // records up to this seq are done
	cur      string // path of the segment being read; "" before the first
	curFirst uint64
	f        *os.File
	pending  []byte
	fields   evFields
}

func (t *evTailer) run(ctx context.Context, poll time.Duration, fn func([]byte) error) error {
	defer func() {
		if t.f != nil {
			_ = t.f.Close()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		if err := t.poll(fn); err != nil {
			return err
		}
		timer.Reset(poll)
	}
}

// poll reads what is new: the rest of the current segment, then any newer
// segments.
func (t *evTailer) poll(fn func([]byte) error) error {
	for {
		if t.f != nil {
			if err := t.readFile(fn); err != nil {
				return err
			}
		}
		segs, _, err := evListSegments(t.dir)
		if err != nil {
			return err
		}
		var next *evSeg
		if t.cur == "" { // start in the segment holding floor+1
			for i := range segs {
				if segs[i].first <= t.floor+1 || next == nil {
					next = &segs[i]
				}
			}
		} else {
			for i := range segs {
				if segs[i].first > t.curFirst {
					next = &segs[i]
					break
				}
			}
		}
		if next == nil {
			return nil
		}
		if t.f != nil { // the rest, written before the rotation
			if err := t.readFile(fn); err != nil {
				return err
			}
			_ = t.f.Close()
			t.f = nil
		}
		t.pending, t.cur, t.curFirst = nil, next.path, next.first
		if !next.gz {
			f, err := os.Open(next.path)
			if err == nil {
				t.f = f
				continue
			}
			if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			next.path, next.gz = next.path+".gz", true // compressed meanwhile
		}
		if err := t.readClosed(*next, fn); err != nil {
			return err
		}
	}
}

func (t *evTailer) readFile(fn func([]byte) error) error {
	buf := make([]byte, 256<<10)
	for {
		n, err := t.f.Read(buf)
		t.pending = append(t.pending, buf[:n]...)
		for {
			nl := bytes.IndexByte(t.pending, '\n')
			if nl < 0 {
				break
			}
			if err := t.line(t.pending[:nl], fn); err != nil {
				return err
			}
			t.pending = t.pending[nl+1:]
		}
		if n == 0 || err != nil {
			t.pending = append([]byte(nil), t.pending...)
			return nil
		}
	}
}

func (t *evTailer) readClosed(s evSeg, fn func([]byte) error) error {
	r, err := evOpen(s)
	if err != nil {
		return err
	}
	defer r.Close()
	lines := newEvLines(r, 256<<10)
	for {
		line, complete, ok := lines.next()
		if !ok || !complete {
			return nil
		}
		if err := t.line(line, fn); err != nil {
			return err
		}
	}
}

func (t *evTailer) line(line []byte, fn func([]byte) error) error {
	l, err := evParseLine(line)
	if err != nil || l.seq <= t.floor {
		return nil
	}
	t.floor = l.seq
	if t.q.match(line, &t.fields) {
		return fn(line)
	}
	return nil
}
