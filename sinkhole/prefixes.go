package sinkhole

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
)

// prefixSet is one source's compiled address and CIDR rules, per family
// a sorted array of disjoint address ranges: nested prefixes are cut so
// that each range carries the longest prefix covering it. A lookup finds
// the range starting at or before the address (a bucket index on the top
// bits, then a short scan) and checks its end: about two cache lines and
// no pointers (a bart trie, tried first, chases 3 to 6 nodes).
type prefixSet struct {
	v4    rangeSet4
	v6    rangeSet6
	n     int
	notes []prefixNote // sorted by prefix
}

// u128 is an address as a 128-bit number, IPv4 ones left-aligned (the 32
// bits on top), so that prefixes of both families are ranges alike.
type u128 struct{ hi, lo uint64 }

func (a u128) cmp(b u128) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func addrKey(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{hi: uint64(binary.BigEndian.Uint32(b[:])) << 32}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// prefixRange returns the first and last address of p (masked) as keys.
func prefixRange(p netip.Prefix) (first, last u128) {
	first, n := addrKey(p.Addr()), p.Bits()
	if p.Addr().Is4() {
		return first, u128{hi: first.hi | (1<<(32-n)-1)<<32}
	}
	if n <= 64 { // ^0 >> 64 is 0
		return first, u128{first.hi | ^uint64(0)>>n, ^uint64(0)}
	}
	return first, u128{first.hi, first.lo | ^uint64(0)>>(n-64)}
}

// rangeRule is a prefix as a range of keys, or a piece of one.
type rangeRule struct {
	first, last u128
	val         uint16 // prefix length | flags<<8
}

// cutRanges cuts nested prefixes (sorted by first address, shorter first)
// into disjoint ranges, each with the value of the innermost prefix
// covering it. one is the distance between two addresses (1<<96 for
// left-aligned IPv4 keys).
func cutRanges(rules []rangeRule, one u128) []rangeRule {
	var out []rangeRule
	// stack holds the prefixes open at cur, innermost on top; cur is the
	// first address not yet emitted (done: past the last address).
	var stack []rangeRule
	var cur u128
	done := false
	pop := func(limit u128, all bool) {
		for len(stack) > 0 {
			top := stack[len(stack)-1]
			if !all && top.last.cmp(limit) >= 0 {
				return
			}
			if !done && cur.cmp(top.last) <= 0 {
				out = append(out, rangeRule{cur, top.last, top.val})
				cur, done = add(top.last, one)
			}
			stack = stack[:len(stack)-1]
		}
	}
	for _, p := range rules {
		pop(p.first, false)
		if len(stack) > 0 && cur.cmp(p.first) < 0 {
			out = append(out, rangeRule{cur, sub(p.first, one), stack[len(stack)-1].val})
		}
		cur, done = p.first, false
		stack = append(stack, p)
	}
	pop(u128{}, true)
	return out
}

// indexBits is the number of top key bits that index n ranges so that a
// bucket holds about perBucket of them.
func indexBits(n, perBucket int) uint {
	return uint(min(max(bits.Len(uint(n/perBucket)), 1), 16))
}

// range4 is a range of IPv4 addresses.
type range4 struct {
	first, last uint32
	val         uint16
}

// rangeSet4 is a sorted array of disjoint IPv4 ranges and an index: the
// ranges starting in bucket b (the address's top bits) are index[b] to
// index[b+1].
type rangeSet4 struct {
	r     []range4
	index []uint32
	shift uint
}

func newRangeSet4(cut []rangeRule) rangeSet4 {
	var s rangeSet4
	if len(cut) == 0 {
		return s
	}
	s.r = make([]range4, len(cut))
	for i, c := range cut {
		s.r[i] = range4{uint32(c.first.hi >> 32), uint32(c.last.hi >> 32), c.val}
	}
	b := indexBits(len(cut), 4)
	s.shift = 32 - b
	s.index = make([]uint32, 1<<b+1)
	j := 0
	for k := range s.index {
		for j < len(s.r) && s.r[j].first>>s.shift < uint32(k) {
			j++
		}
		s.index[k] = uint32(j)
	}
	return s
}

// lookup returns the value of the range holding a.
func (s *rangeSet4) lookup(a uint32) (uint16, bool) {
	if len(s.r) == 0 {
		return 0, false
	}
	b := a >> s.shift
	i, hi := int(s.index[b]), int(s.index[b+1])
	// The last range starting at or before a: in this bucket, or the last
	// one of an earlier bucket (a large prefix reaching into this one).
	if hi-i > 8 {
		for i < hi {
			m := int(uint(i+hi) >> 1)
			if s.r[m].first <= a {
				i = m + 1
			} else {
				hi = m
			}
		}
	} else {
		for i < hi && s.r[i].first <= a {
			i++
		}
	}
	if i--; i < 0 || s.r[i].last < a {
		return 0, false
	}
	return s.r[i].val, true
}

// range6 is a range of IPv6 addresses.
type range6 struct {
	first, last u128
	val         uint16
}

// rangeSet6 is rangeSet4 for IPv6. Its index skips the leading bits all
// range starts share (IPv6 lists mostly live in 2000::/3), so the buckets
// spread.
type rangeSet6 struct {
	r      []range6
	index  []uint32
	shift  uint   // of the key, after skipping
	skip   uint   // leading bits all starts share, 1 to 63
	common uint64 // those bits
}

func newRangeSet6(cut []rangeRule) rangeSet6 {
	var s rangeSet6
	if len(cut) == 0 {
		return s
	}
	s.r = make([]range6, len(cut))
	for i, c := range cut {
		s.r[i] = range6(c)
	}
	// Sorted starts: the first and the last share what all share.
	s.skip = uint(min(max(bits.LeadingZeros64(s.r[0].first.hi^s.r[len(s.r)-1].first.hi), 1), 63))
	s.common = s.r[0].first.hi >> (64 - s.skip)
	b := indexBits(len(cut), 1)
	s.shift = 64 - b
	s.index = make([]uint32, 1<<b+1)
	j := 0
	for k := range s.index {
		for j < len(s.r) && s.r[j].first.hi<<s.skip>>s.shift < uint64(k) {
			j++
		}
		s.index[k] = uint32(j)
	}
	return s
}

func (s *rangeSet6) lookup(a u128) (uint16, bool) {
	if len(s.r) == 0 {
		return 0, false
	}
	var b uint64
	switch top := a.hi >> (64 - s.skip); {
	case top < s.common:
		return 0, false // below every range
	case top > s.common:
		b = uint64(len(s.index) - 2) // above every start: the last bucket
	default:
		b = a.hi << s.skip >> s.shift
	}
	i, hi := int(s.index[b]), int(s.index[b+1])
	if hi-i > 8 {
		for i < hi {
			m := int(uint(i+hi) >> 1)
			if !a.less(s.r[m].first) {
				i = m + 1
			} else {
				hi = m
			}
		}
	} else {
		for i < hi && !a.less(s.r[i].first) {
			i++
		}
	}
	if i--; i < 0 || s.r[i].last.less(a) {
		return 0, false
	}
	return s.r[i].val, true
}

type prefixNote struct {
	p    netip.Prefix
	note string
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// lookup returns the longest listed prefix's length and flags for addr,
// which must be unmapped.
func (s *prefixSet) lookup(addr netip.Addr) (bits int, flags uint8, ok bool) {
	var v uint16
	if addr.Is4() {
		b := addr.As4()
		v, ok = s.v4.lookup(binary.BigEndian.Uint32(b[:]))
	} else {
		v, ok = s.v6.lookup(addrKey(addr))
	}
	return int(v & 0xff), uint8(v >> 8), ok
}

func (s *prefixSet) note(p netip.Prefix) string {
	i, ok := slices.BinarySearchFunc(s.notes, p, func(n prefixNote, p netip.Prefix) int { return comparePrefix(n.p, p) })
	if ok {
		return s.notes[i].note
	}
	return ""
}

// prefixAction is the rule's own action, or def.
func prefixAction(flags uint8, def Action) Action {
	if a := Action(flags & flagActMask >> flagActShift); a != ActionNone {
		return a
	}
	return def
}

// appendPrefix writes an address rule as an address and a CIDR as a prefix.
func appendPrefix(dst []byte, p netip.Prefix) []byte {
	if p.IsSingleIP() {
		return p.Addr().AppendTo(dst)
	}
	return p.AppendTo(dst)
}

// canonPrefix masks p and turns an IPv4-mapped IPv6 prefix into IPv4, as
// lookups unmap addresses first. ok is false for an invalid prefix.
func canonPrefix(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return p, false
	}
	a := p.Addr().WithZone("")
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked(), true
	}
	return netip.PrefixFrom(a, p.Bits()).Masked(), true
}

// pendingPrefix is an address or CIDR rule as collected: no pointers, so
// collecting millions does not burden the GC.
type pendingPrefix struct {
	first u128
	seq   uint32 // input order: the first of equal prefixes stays
	note  int32  // index into the notes, -1: none
	bits  uint8
	v6    bool
	flags uint8
}

func comparePending(a, b pendingPrefix) int {
	switch {
	case a.v6 != b.v6:
		if a.v6 {
			return 1
		}
		return -1
	case a.first != b.first:
		return a.first.cmp(b.first)
	case a.bits != b.bits:
		return cmp.Compare(a.bits, b.bits)
	}
	return cmp.Compare(a.seq, b.seq)
}

func (pp *pendingPrefix) prefix() netip.Prefix {
	var a netip.Addr
	if pp.v6 {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], pp.first.hi)
		binary.BigEndian.PutUint64(b[8:], pp.first.lo)
		a = netip.AddrFrom16(b)
	} else {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(pp.first.hi>>32))
		a = netip.AddrFrom4(b)
	}
	return netip.PrefixFrom(a, int(pp.bits))
}

// prefixCounts are the address and CIDR rules, exact duplicates removed.
type prefixCounts struct{ ip, cidr int }

func buildPrefixes(pend []pendingPrefix, notes []string) (*prefixSet, prefixCounts) {
	var c prefixCounts
	s := &prefixSet{}
	// By first address, shorter prefixes first, then input order; of equal
	// prefixes the first stays.
	slices.SortFunc(pend, comparePending)
	pend = slices.CompactFunc(pend, func(a, b pendingPrefix) bool {
		return a.v6 == b.v6 && a.first == b.first && a.bits == b.bits
	})
	var v4, v6 []rangeRule
	for i := range pend {
		pp := &pend[i]
		if pp.bits == 32 && !pp.v6 || pp.bits == 128 {
			c.ip++
		} else {
			c.cidr++
		}
		flags := pp.flags
		if pp.note >= 0 {
			flags |= flagNote
			s.notes = append(s.notes, prefixNote{pp.prefix(), notes[pp.note]})
		}
		p := pp.prefix()
		first, last := prefixRange(p)
		r := rangeRule{first, last, uint16(pp.bits) | uint16(flags)<<8}
		if pp.v6 {
			v6 = append(v6, r)
		} else {
			v4 = append(v4, r)
		}
	}
	s.n = len(pend)
	s.v4 = newRangeSet4(cutRanges(v4, u128{hi: 1 << 32}))
	s.v6 = newRangeSet6(cutRanges(v6, u128{lo: 1}))
	s.notes = slices.Clip(s.notes)
	return s, c
}

// add returns a+b and whether it overflowed.
func add(a, b u128) (u128, bool) {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	hi, c := bits.Add64(a.hi, b.hi, c)
	return u128{hi, lo}, c != 0
}

func sub(a, b u128) u128 {
	lo, c := bits.Sub64(a.lo, b.lo, 0)
	hi, _ := bits.Sub64(a.hi, b.hi, c)
	return u128{hi, lo}
}
