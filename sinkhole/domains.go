package sinkhole

import (
	"math/bits"
	"sort"
)

// matchMode is what a domain rule covers. List files only use modeTree;
// RPZ (later) uses modeExact for `name` and modeBelow for `*.name`.
type matchMode uint8

const (
	modeTree  matchMode = iota // the name and every name below it
	modeExact                  // the name only
	modeBelow                  // names below it only
)

// A domain rule is a record in one byte arena:
//
//	len(1) flags(1) name(len)
//
// flags: bits 0-1 the Syntax, bits 2-3 the matchMode, bits 4-6 a per-rule
// Action (0: the source's), bit 7 set when the rule has a note. A rule is
// known by its record's offset; nothing points into the arena.
const (
	flagSyntax    = 0x03
	flagModeShift = 2
	flagModeMask  = 0x03 << flagModeShift
	flagActShift  = 4
	flagActMask   = 0x07 << flagActShift
	flagNote      = 0x80
	recHeader     = 2
	maxNameLen    = 255 // a record's length byte; DNS names stop at 253
)

func makeFlags(syn Syntax, mode matchMode, act Action) uint8 {
	return uint8(syn)&flagSyntax | uint8(mode)<<flagModeShift&flagModeMask | uint8(act)<<flagActShift&flagActMask
}

// The index is an open-addressing table in the manner of Swiss tables:
// groups of 8 slots, one control word per group holding a 7-bit tag of each
// slot's hash (0x80: empty), and a uint32 arena offset per slot. A lookup
// reads one control word, compares all 8 tags at once, and touches the
// arena only for tag matches (1 in 128 occupied slots by chance). Tables
// are filled to at most 80% and never deleted from.
const (
	ctrlEmpty = 0x80
	ctrlLSB   = 0x0101010101010101
	ctrlMSB   = 0x8080808080808080
	maxLoad   = 0.8
)

// domainSet is one source's compiled domain rules.
type domainSet struct {
	arena  []byte
	ctrl   []uint64
	offs   []uint32
	groups uint64
	n      int

	// labels has bit k set when some rule has k labels (k >= 63: bit 63),
	// so lookups skip parent suffixes no rule can match.
	labels uint64

	// noteOffs (ascending) and notes hold the inline comments of the few
	// rules that have one.
	noteOffs []uint32
	notes    []string
}

func labelBit(labels int) uint64 { return 1 << min(labels, 63) }

// group returns the first group to probe for hash h.
func (d *domainSet) group(h uint64) uint64 {
	hi, _ := bits.Mul64(h, d.groups)
	return hi
}

// matchTags returns the control bytes of c equal to tag, as their high
// bits. It may report false positives (never on empty slots); callers
// compare the names.
func matchTags(c, tag uint64) uint64 {
	x := c ^ tag*ctrlLSB
	return (x - ctrlLSB) &^ x & ctrlMSB
}

// find looks up name with hash h; whole says whether name is the whole
// queried name (not a parent suffix of it). It returns the rule's offset.
func (d *domainSet) find(h uint64, name []byte, whole bool) (uint32, bool) {
	if d.groups == 0 {
		return 0, false
	}
	g := d.group(h)
	tag := h & 0x7f
	for {
		c := d.ctrl[g]
		for m := matchTags(c, tag); m != 0; m &= m - 1 {
			off := d.offs[g*8+uint64(bits.TrailingZeros64(m)>>3)]
			if string(d.nameBytes(off)) == string(name) && d.modeOK(off, whole) {
				return off, true
			}
		}
		if c&ctrlMSB != 0 {
			return 0, false
		}
		if g++; g == d.groups {
			g = 0
		}
	}
}

// nameBytes returns the name of the rule at off (aliasing the arena).
func (d *domainSet) nameBytes(off uint32) []byte {
	n := uint32(d.arena[off])
	return d.arena[off+recHeader : off+recHeader+n]
}

func (d *domainSet) flags(off uint32) uint8 { return d.arena[off+1] }

func (d *domainSet) modeOK(off uint32, whole bool) bool {
	switch matchMode(d.flags(off) & flagModeMask >> flagModeShift) {
	case modeExact:
		return whole
	case modeBelow:
		return !whole
	}
	return true
}

// action is the rule's own action, or def.
func (d *domainSet) action(off uint32, def Action) Action {
	if a := Action(d.flags(off) & flagActMask >> flagActShift); a != ActionNone {
		return a
	}
	return def
}

func (d *domainSet) note(off uint32) string {
	if d.flags(off)&flagNote == 0 {
		return ""
	}
	i := sort.Search(len(d.noteOffs), func(i int) bool { return d.noteOffs[i] >= off })
	if i < len(d.noteOffs) && d.noteOffs[i] == off {
		return d.notes[i]
	}
	return ""
}

// render writes the rule at off in its list's syntax.
func (d *domainSet) render(off uint32) string {
	name := string(d.nameBytes(off))
	switch Syntax(d.flags(off) & flagSyntax) {
	case SyntaxWildcard:
		return "*." + name
	case SyntaxAdblock:
		return "||" + name + "^"
	case SyntaxAdblockImportant:
		return "||" + name + "^$important"
	}
	return name
}

// pendingDomains collects domain rules for buildDomains: records in arena
// order, the offset of each, and the notes by record number.
type pendingDomains struct {
	arena []byte
	recs  []uint32
	notes []pendingNote
}

type pendingNote struct {
	rec  uint32
	note string
}

func (p *pendingDomains) add(name string, flags uint8, note string) {
	if len(name) == 0 || len(name) > maxNameLen {
		return
	}
	if note != "" {
		flags |= flagNote
		p.notes = append(p.notes, pendingNote{uint32(len(p.recs)), note})
	}
	p.recs = append(p.recs, uint32(len(p.arena)))
	p.arena = append(p.arena, byte(len(name)), flags)
	p.arena = append(p.arena, name...)
}

// syntaxCounts are the rules counted per syntax, exact duplicates removed.
type syntaxCounts [4]int

// buildDomains compiles the pending rules. Rules with the same name and
// mode share one record (the first one's syntax, action and note); each
// distinct (name, syntax) is still counted.
func buildDomains(p *pendingDomains) (*domainSet, syntaxCounts) {
	var counts syntaxCounts
	n := len(p.recs)
	d := &domainSet{}
	if n == 0 {
		return d, counts
	}
	d.groups = uint64(float64(n)/(8*maxLoad)) + 1
	d.ctrl = make([]uint64, d.groups)
	for i := range d.ctrl {
		d.ctrl[i] = ctrlMSB // all empty
	}
	// While building, slots hold record numbers; seen has one bit per syntax
	// counted for a kept record; dup marks records merged into another.
	d.offs = make([]uint32, d.groups*8)
	seen := make([]uint8, n)
	dup := make([]bool, n)
	ndup := 0
	arena := p.arena
	for i, off := range p.recs {
		ln := uint32(arena[off])
		name := arena[off+recHeader : off+recHeader+ln]
		flags := arena[off+1]
		h, labels := hashName(name)
		d.labels |= labelBit(labels)
		g := d.group(h)
		tag := h & 0x7f
		for {
			c := d.ctrl[g]
			found := false
			for m := matchTags(c, tag); m != 0; m &= m - 1 {
				j := d.offs[g*8+uint64(bits.TrailingZeros64(m)>>3)]
				o := p.recs[j]
				if arena[o] == arena[off] && (arena[o+1]^flags)&flagModeMask == 0 &&
					string(arena[o+recHeader:o+recHeader+ln]) == string(name) {
					if bit := uint8(1) << (flags & flagSyntax); seen[j]&bit == 0 {
						seen[j] |= bit
						counts[flags&flagSyntax]++
					}
					dup[i] = true
					ndup++
					found = true
					break
				}
			}
			if found {
				break
			}
			if e := c & ctrlMSB; e != 0 {
				k := bits.TrailingZeros64(e) >> 3
				d.ctrl[g] = c&^(0xff<<(8*k)) | tag<<(8*k)
				d.offs[g*8+uint64(k)] = uint32(i)
				seen[i] = uint8(1) << (flags & flagSyntax)
				counts[flags&flagSyntax]++
				break
			}
			if g++; g == d.groups {
				g = 0
			}
		}
	}
	d.n = n - ndup

	// Compact the kept records into an arena of exactly their size, in
	// input order, and turn record numbers into offsets.
	size := 0
	for i, off := range p.recs {
		if !dup[i] {
			size += recHeader + int(arena[off])
		}
	}
	d.arena = make([]byte, 0, size)
	for i, off := range p.recs {
		if dup[i] {
			continue
		}
		p.recs[i] = uint32(len(d.arena))
		d.arena = append(d.arena, arena[off:off+recHeader+uint32(arena[off])]...)
	}
	for g, c := range d.ctrl {
		for k := range 8 {
			if c>>(8*k)&ctrlEmpty == 0 {
				s := g*8 + k
				d.offs[s] = p.recs[d.offs[s]]
			}
		}
	}
	for _, pn := range p.notes {
		if dup[pn.rec] {
			continue
		}
		d.noteOffs = append(d.noteOffs, p.recs[pn.rec])
		d.notes = append(d.notes, pn.note)
	}
	return d, counts
}
