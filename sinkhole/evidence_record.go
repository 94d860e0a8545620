package sinkhole

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/miekg/dns"
)

// evKind is a record's type.
type evKind uint8

const (
	evHit evKind = iota
	evContact
	evStart
	evStop
	evReload
	evGap
	evPrune
	evSync // not a record: a request to sync and answer
	evKinds
)

// evTypeNames are the record types as written in the type field.
var evTypeNames = [evKinds]string{"hit", "contact", "start", "stop", "reload", "gap", "prune", "sync"}

// evZeroHash is the prev of the very first record.
const evZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// evTimeLayout is ts: RFC 3339, UTC, exactly 9 fraction digits, Z.
const evTimeLayout = "2006-01-02T15:04:05.000000000Z"

// evRecord is one record on its way to the writer. Which fields are set
// depends on kind.
type evRecord struct {
	kind    evKind
	ts      time.Time
	hit     *Hit
	contact *Contact
	reason  string         // stop, gap
	sources []ReloadSource // start, reload
	changed []ReloadChange // reload
	lost    int64          // gap
	from    time.Time      // gap
	until   time.Time      // gap
	segment string         // prune
	first   uint64         // prune
	last    uint64         // prune
	final   string         // prune

	done chan error // answered once the record is on disk (control records)
}

// evChain computes each line's hash from the previous one.
type evChain struct {
	h    hash.Hash
	sum  []byte
	seq  uint64   // the last record's seq
	prev [64]byte // the last record's hash, hex
}

func newEvChain(key []byte) *evChain {
	c := &evChain{sum: make([]byte, 0, sha256.Size)}
	if key != nil {
		c.h = hmac.New(sha256.New, key)
	} else {
		c.h = sha256.New()
	}
	copy(c.prev[:], evZeroHash)
	return c
}

// seal appends the hash to the line buf[start:], which ends with the prev
// member: hash = H(prev hex || line without `,"hash":"..."`).
func (c *evChain) seal(buf []byte, start int) []byte {
	c.h.Reset()
	c.h.Write(c.prev[:])
	c.h.Write(buf[start:])
	c.h.Write([]byte{'}'})
	c.sum = c.h.Sum(c.sum[:0])
	buf = append(buf, `,"hash":"`...)
	n := len(buf)
	buf = hex.AppendEncode(buf, c.sum)
	copy(c.prev[:], buf[n:])
	return append(buf, '"', '}', '\n')
}

// evChainName is the start record's chain field.
func evChainName(key []byte) string {
	if key != nil {
		return "hmac-sha256"
	}
	return "sha256"
}

// evEncoder renders records as JSON lines in the contract's field order.
type evEncoder struct {
	instance string
	chain    string
	version  string
	ident    *evIdent
	rr       evRenderer
}

// appendRecord appends r as one line (with its newline) and advances c.
func (e *evEncoder) appendRecord(buf []byte, c *evChain, r *evRecord) []byte {
	start := len(buf)
	seq := c.seq + 1
	buf = append(buf, `{"type":"`...)
	buf = append(buf, evTypeNames[r.kind]...)
	buf = append(buf, `","seq":`...)
	buf = strconv.AppendUint(buf, seq, 10)
	buf = append(buf, `,"ts":"`...)
	buf = evAppendTime(buf, r.ts)
	buf = append(buf, `","instance":`...)
	buf = evAppendString(buf, e.instance)
	switch r.kind {
	case evHit:
		buf = e.appendHit(buf, r.hit)
	case evContact:
		buf = e.appendContact(buf, r.contact)
	case evStart:
		buf = evAppendStr(buf, "version", e.version)
		buf = evAppendStr(buf, "chain", e.chain)
		buf = evAppendSources(buf, r.sources)
	case evReload:
		buf = evAppendSources(buf, r.sources)
		buf = append(buf, `,"changed":[`...)
		for i, ch := range r.changed {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, `{"list":`...)
			buf = evAppendString(buf, ch.List)
			buf = evAppendStr(buf, "old_sha256", ch.OldSHA256)
			buf = evAppendStr(buf, "new_sha256", ch.NewSHA256)
			buf = evAppendInt(buf, "added", int64(ch.Added))
			buf = evAppendInt(buf, "removed", int64(ch.Removed))
			buf = append(buf, '}')
		}
		buf = append(buf, ']')
	case evStop:
		buf = evAppendStr(buf, "reason", r.reason)
	case evGap:
		buf = evAppendInt(buf, "lost", r.lost)
		buf = append(buf, `,"from":"`...)
		buf = evAppendTime(buf, r.from)
		buf = append(buf, `","until":"`...)
		buf = evAppendTime(buf, r.until)
		buf = append(buf, '"')
		buf = evAppendStr(buf, "reason", r.reason)
	case evPrune:
		buf = evAppendStr(buf, "segment", r.segment)
		buf = evAppendInt(buf, "first_seq", int64(r.first))
		buf = evAppendInt(buf, "last_seq", int64(r.last))
		buf = evAppendStr(buf, "final_hash", r.final)
	}
	buf = append(buf, `,"prev":"`...)
	buf = append(buf, c.prev[:]...)
	buf = append(buf, '"')
	buf = c.seal(buf, start)
	c.seq = seq
	return buf
}

// appendHit appends a hit's members: the DESIGN.md field list in order,
// then category, rcode and note.
func (e *evEncoder) appendHit(buf []byte, h *Hit) []byte {
	buf = evAppendAddrPort(buf, "client", h.Client)
	buf = evAppendStr(buf, "proto", h.Proto)
	buf = evAppendStr(buf, "qname", evName(h.QName))
	buf = evAppendStr(buf, "qtype", evTypeString(h.QType))
	buf = evAppendStr(buf, "trigger", h.Trigger.String())
	buf = evAppendStr(buf, "match", evName(h.Match))
	buf = evAppendStr(buf, "rule", evLower(h.Rule))
	var category string
	if h.List != nil {
		buf = evAppendStr(buf, "list", h.List.Name)
		buf = evAppendStr(buf, "list_sha256", h.List.SHA256)
		category = h.List.Category
	}
	buf = evAppendStr(buf, "action", h.Action.String())
	buf = e.rr.appendRRs(buf, "answer", h.Answer, false)
	buf = e.rr.appendRRs(buf, "upstream", h.Upstream, true)
	if e.ident != nil {
		mac, host := e.ident.lookup(evClientAddr(h.Client))
		buf = evAppendStr(buf, "mac", mac)
		buf = evAppendStr(buf, "host", host)
	}
	buf = evAppendStr(buf, "category", category)
	if len(h.Answer) > 0 {
		buf = evAppendStr(buf, "rcode", evRcodeString(h.Rcode))
	}
	return evAppendStr(buf, "note", h.Note)
}

func evAppendSources(buf []byte, sources []ReloadSource) []byte {
	buf = append(buf, `,"sources":[`...)
	for i, s := range sources {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"list":`...)
		buf = evAppendString(buf, s.List)
		buf = evAppendStr(buf, "sha256", s.SHA256)
		buf = evAppendStr(buf, "status", s.Status)
		buf = evAppendInt(buf, "rules", int64(s.Rules))
		buf = append(buf, '}')
	}
	return append(buf, ']')
}

// evName is a name as records want it: lower-case, no final dot.
func evName(s string) string {
	if len(s) > 1 && s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	return evLower(s)
}

// evLower lower-cases ASCII letters, allocating only when there are any.
func evLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// evTypeString is a qtype's mnemonic, TYPEnnn when it has none.
func evTypeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}

func evRcodeString(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}

// evAppendTime appends t in UTC with nine fraction digits and Z (the
// layout evTimeLayout, without time.Format's layout parsing).
func evAppendTime(buf []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	h, mi, sec := t.Clock()
	if y < 0 || y > 9999 {
		return t.AppendFormat(buf, evTimeLayout)
	}
	buf = evAppendDigits(buf, y, 4)
	buf = append(buf, '-')
	buf = evAppendDigits(buf, int(mo), 2)
	buf = append(buf, '-')
	buf = evAppendDigits(buf, d, 2)
	buf = append(buf, 'T')
	buf = evAppendDigits(buf, h, 2)
	buf = append(buf, ':')
	buf = evAppendDigits(buf, mi, 2)
	buf = append(buf, ':')
	buf = evAppendDigits(buf, sec, 2)
	buf = append(buf, '.')
	buf = evAppendDigits(buf, t.Nanosecond(), 9)
	return append(buf, 'Z')
}

// evAppendDigits appends v, zero-padded to width digits.
func evAppendDigits(buf []byte, v, width int) []byte {
	var b [9]byte
	for i := width - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return append(buf, b[:width]...)
}

// evAppendStr appends ,"key":"val" unless val is empty (fields that do not
// apply are omitted).
func evAppendStr(buf []byte, key, val string) []byte {
	if val == "" {
		return buf
	}
	buf = append(buf, ',', '"')
	buf = append(buf, key...)
	buf = append(buf, '"', ':')
	return evAppendString(buf, val)
}

func evAppendInt(buf []byte, key string, v int64) []byte {
	buf = append(buf, ',', '"')
	buf = append(buf, key...)
	buf = append(buf, '"', ':')
	return strconv.AppendInt(buf, v, 10)
}

// evAppendAddrPort appends ,"key":"addr","key_port":port, the address as
// evClientAddr shows it.
func evAppendAddrPort(buf []byte, key string, ap netip.AddrPort) []byte {
	buf = append(buf, ',', '"')
	buf = append(buf, key...)
	buf = append(buf, `":"`...)
	buf = evClientAddr(ap).AppendTo(buf)
	buf = append(buf, '"', ',', '"')
	buf = append(buf, key...)
	buf = append(buf, `_port":`...)
	return strconv.AppendUint(buf, uint64(ap.Port()), 10)
}

// evAppendStrings appends ,"key":["a","b"] unless vals is empty.
func evAppendStrings(buf []byte, key string, vals []string) []byte {
	if len(vals) == 0 {
		return buf
	}
	buf = append(buf, ',', '"')
	buf = append(buf, key...)
	buf = append(buf, '"', ':', '[')
	for i, v := range vals {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = evAppendString(buf, v)
	}
	return append(buf, ']')
}

const evHex = "0123456789abcdef"

// evAppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as with encoding/json; nothing is HTML-escaped.
func evAppendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', evHex[c>>4], evHex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// evRenderer turns wire-format replies into zone-file presentation lines.
// Renderings are cached: upstream replies are cache entries shared by many
// hits, cached by identity (the cache keeps the bytes alive, so an address
// is never reused while it is a key); synthesized answers are small and
// repeat but for their ID, cached by content.
type evRenderer struct {
	byID      evGen[*byte, evRendered]
	byContent evGen[string, []string]
}

type evRendered struct {
	wire []byte
	rrs  []string
}

const (
	// evRenderCacheSize is the size of one generation of a render cache.
	evRenderCacheSize = 8192
	// evContentKeyMax is the longest answer cached by content.
	evContentKeyMax = 512
)

// evGen is a two-generation cache: when the current generation is full it
// becomes the old one, and entries found there move back. Recently used
// entries stay; the cache never holds more than twice its size.
type evGen[K comparable, V any] struct {
	cur, old map[K]V
}

func (c *evGen[K, V]) promote(k K) (V, bool) {
	v, ok := c.old[k]
	if ok {
		c.put(k, v)
	}
	return v, ok
}

func (c *evGen[K, V]) put(k K, v V) {
	if c.cur == nil || len(c.cur) >= evRenderCacheSize {
		c.old, c.cur = c.cur, make(map[K]V, evRenderCacheSize)
	}
	c.cur[k] = v
}

// appendRRs appends ,"key":["rr",...] for the answer section of wire
// (nothing when it is empty). Plain A, AAAA and CNAME answers are written
// straight from the wire; anything else goes through miekg/dns (cached).
func (d *evRenderer) appendRRs(buf []byte, key string, wire []byte, shared bool) []byte {
	if out, ok := evAppendFastRRs(buf, key, wire); ok {
		return out
	}
	return evAppendStrings(buf, key, d.render(wire, shared))
}

// evAppendFastRRs renders an answer section of only IN A, AAAA and CNAME
// records with plain names (letters, digits, '-', '_', '*') exactly as
// miekg/dns would (tabs as spaces, owner lower-case). ok is false, and buf
// unchanged, for anything else.
func evAppendFastRRs(buf []byte, key string, wire []byte) (out []byte, ok bool) {
	if len(wire) < 12 {
		return buf, false
	}
	qd := int(wire[4])<<8 | int(wire[5])
	an := int(wire[6])<<8 | int(wire[7])
	if an == 0 {
		return buf, true
	}
	off := 12
	for range qd {
		if off = evSkipName(wire, off); off < 0 || off+4 > len(wire) {
			return buf, false
		}
		off += 4
	}
	start := len(buf)
	buf = append(buf, ',', '"')
	buf = append(buf, key...)
	buf = append(buf, '"', ':', '[')
	for i := range an {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '"')
		var next int
		if buf, next = evAppendWireName(buf, wire, off, true); next < 0 || next+10 > len(wire) {
			return buf[:start], false
		}
		off = next
		typ := int(wire[off])<<8 | int(wire[off+1])
		class := int(wire[off+2])<<8 | int(wire[off+3])
		ttl := uint32(wire[off+4])<<24 | uint32(wire[off+5])<<16 | uint32(wire[off+6])<<8 | uint32(wire[off+7])
		rdlen := int(wire[off+8])<<8 | int(wire[off+9])
		off += 10
		if class != dns.ClassINET || off+rdlen > len(wire) {
			return buf[:start], false
		}
		rd := wire[off : off+rdlen]
		buf = append(buf, ' ')
		buf = strconv.AppendUint(buf, uint64(ttl), 10)
		switch {
		case typ == int(dns.TypeA) && rdlen == 4:
			buf = append(buf, " IN A "...)
			buf = netip.AddrFrom4([4]byte(rd)).AppendTo(buf)
		case typ == int(dns.TypeAAAA) && rdlen == 16:
			a := netip.AddrFrom16([16]byte(rd))
			if a.Is4In6() {
				return buf[:start], false
			}
			buf = append(buf, " IN AAAA "...)
			buf = a.AppendTo(buf)
		case typ == int(dns.TypeCNAME):
			buf = append(buf, " IN CNAME "...)
			var end int
			if buf, end = evAppendWireName(buf, wire, off, false); end != off+rdlen {
				return buf[:start], false
			}
		default:
			return buf[:start], false
		}
		buf = append(buf, '"')
		off += rdlen
	}
	return append(buf, ']'), true
}

// evSkipName returns the offset after the (possibly compressed) name at
// off, or -1.
func evSkipName(wire []byte, off int) int {
	for off < len(wire) {
		c := int(wire[off])
		switch {
		case c == 0:
			return off + 1
		case c&0xC0 == 0xC0:
			if off+2 > len(wire) {
				return -1
			}
			return off + 2
		case c&0xC0 != 0:
			return -1
		}
		off += 1 + c
	}
	return -1
}

// evAppendWireName appends the name at off in presentation format with its
// final dot (lower-case when lower), following compression pointers; it
// returns the offset after the name in place, or -1 for a name that is
// malformed or not plain.
func evAppendWireName(buf, wire []byte, off int, lower bool) ([]byte, int) {
	end, hops, labels, size := -1, 0, 0, 1
	for {
		if off >= len(wire) {
			return buf, -1
		}
		c := int(wire[off])
		switch {
		case c == 0:
			if end < 0 {
				end = off + 1
			}
			if labels == 0 {
				buf = append(buf, '.')
			}
			return buf, end
		case c&0xC0 == 0xC0:
			if off+2 > len(wire) || hops > 32 {
				return buf, -1
			}
			if end < 0 {
				end = off + 2
			}
			off = (c&0x3F)<<8 | int(wire[off+1])
			hops++
			continue
		case c&0xC0 != 0 || off+1+c > len(wire):
			return buf, -1
		}
		if size += 1 + c; size > 255 {
			return buf, -1
		}
		for _, b := range wire[off+1 : off+1+c] {
			switch {
			case 'a' <= b && b <= 'z', '0' <= b && b <= '9', b == '-', b == '_', b == '*':
			case 'A' <= b && b <= 'Z':
				if lower {
					b += 'a' - 'A'
				}
			default:
				return buf, -1
			}
			buf = append(buf, b)
		}
		buf = append(buf, '.')
		labels++
		off += 1 + c
	}
}

// render returns the answer section of wire as "name ttl class type rdata"
// lines, owner names lower-case. shared says wire is an immutable cache
// entry that other hits share.
func (d *evRenderer) render(wire []byte, shared bool) []string {
	if len(wire) <= 4 {
		return nil
	}
	byContent := !shared && len(wire) <= evContentKeyMax
	switch {
	case shared:
		e, ok := d.byID.cur[&wire[0]]
		if !ok {
			e, ok = d.byID.promote(&wire[0])
		}
		if ok && len(e.wire) == len(wire) {
			return e.rrs
		}
	case byContent: // the key skips ID and flags
		if rrs, ok := d.byContent.cur[string(wire[4:])]; ok {
			return rrs
		}
		if rrs, ok := d.byContent.promote(string(wire[4:])); ok {
			return rrs
		}
	}
	var m dns.Msg
	if err := m.Unpack(wire); err != nil && len(m.Answer) == 0 {
		return nil
	}
	rrs := make([]string, 0, len(m.Answer))
	for _, rr := range m.Answer {
		h := rr.Header()
		h.Name = evLower(h.Name)
		rrs = append(rrs, strings.ReplaceAll(rr.String(), "\t", " "))
	}
	switch {
	case shared:
		d.byID.put(&wire[0], evRendered{wire: wire, rrs: rrs})
	case byContent:
		d.byContent.put(string(wire[4:]), rrs)
	}
	return rrs
}

// evClientAddr is the client address as records show it.
func evClientAddr(ap netip.AddrPort) netip.Addr { return ap.Addr().Unmap().WithZone("") }
