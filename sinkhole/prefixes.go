package sinkhole

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/gaissmai/bart"
)

// prefixSet is one source's compiled address and CIDR rules: a bart
// longest-prefix table whose value packs the prefix length (bits 0-7) and
// the rule's flags (bits 8-15: per-rule action and note bit, as for
// domains), so a lookup yields the matched prefix without a second search.
type prefixSet struct {
	t     bart.Table[uint16]
	n     int
	notes []prefixNote // sorted by prefix
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
// which must be unmapped and without zone.
func (s *prefixSet) lookup(addr netip.Addr) (bits int, flags uint8, ok bool) {
	v, ok := s.t.Lookup(addr)
	return int(v & 0xff), uint8(v >> 8), ok
}

func (s *prefixSet) note(p netip.Prefix) string {
	i, ok := slices.BinarySearchFunc(s.notes, p, func(n prefixNote, p netip.Prefix) int { return comparePrefix(n.p, p) })
	if ok {
		return s.notes[i].note
	}
	return ""
}

// action is the rule's own action, or def.
func prefixAction(flags uint8, def Action) Action {
	if a := Action(flags & flagActMask >> flagActShift); a != ActionNone {
		return a
	}
	return def
}

// renderPrefix writes an address rule as an address and a CIDR as a prefix.
func renderPrefix(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
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

type pendingPrefix struct {
	p     netip.Prefix
	flags uint8
	note  string
}

// prefixCounts are the address and CIDR rules, exact duplicates removed.
type prefixCounts struct{ ip, cidr int }

func buildPrefixes(pend []pendingPrefix) (*prefixSet, prefixCounts) {
	var c prefixCounts
	s := &prefixSet{}
	for _, pp := range pend {
		if _, dup := s.t.Get(pp.p); dup {
			continue
		}
		if pp.p.IsSingleIP() {
			c.ip++
		} else {
			c.cidr++
		}
		s.n++
		flags := pp.flags
		if pp.note != "" {
			flags |= flagNote
			s.notes = append(s.notes, prefixNote{pp.p, pp.note})
		}
		s.t.Insert(pp.p, uint16(pp.p.Bits())|uint16(flags)<<8)
	}
	slices.SortFunc(s.notes, func(a, b prefixNote) int { return comparePrefix(a.p, b.p) })
	s.notes = slices.Clip(s.notes)
	return s, c
}
