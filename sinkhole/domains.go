package sinkhole

import (
	"math/bits"
	"slices"
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
// slot's hash (0x80: empty), next to the 8 slots' uint32 arena offsets. A
// lookup reads one control word, compares all 8 tags at once, and touches
// the arena only for tag matches (1 in 128 occupied slots by chance), so a
// miss costs about one cache line and a hit two. Tables are filled to at
// most 80% and never deleted from: 6.25 bytes a rule.
const (
	ctrlEmpty = 0x80
	ctrlLSB   = 0x0101010101010101
	ctrlMSB   = 0x8080808080808080
	maxLoad   = 0.8
	markerOff = ^uint32(0)
	maxArena  = int64(markerOff) // arena offsets stay below markerOff
)

type group struct {
	ctrl uint64
	offs [8]uint32
}

// domainSet is one source's compiled domain rules.
type domainSet struct {
	arena []byte
	// tab holds the rules' offsets and markers: slots (offset markerOff)
	// holding only the hash of a parent of some rule (2 labels or more),
	// so that a lookup walking up from the top-level domain stops at the
	// first suffix that is neither a rule nor a parent of one, usually
	// after one or two probes.
	tab    []group
	groups uint64 // len(tab), at least 1
	n      int    // rules

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
// queried name (not a parent suffix of it). It returns the rule's offset
// if there is one, and whether the set may hold rules below name: a
// marker with name's tag is in its probe sequence. Markers are not
// verified (they hold no name), so more may be true in vain, never false
// in vain.
func (d *domainSet) find(h uint64, name []byte, whole bool) (off uint32, found, more bool) {
	g := d.group(h)
	tag := h & 0x7f
	for {
		gr := &d.tab[g]
		c := gr.ctrl
		for m := matchTags(c, tag); m != 0; m &= m - 1 {
			o := gr.offs[bits.TrailingZeros64(m)>>3&7]
			if o == markerOff {
				more = true
			} else if !found && string(d.nameBytes(o)) == string(name) && d.modeOK(o, whole) {
				off, found = o, true
			}
		}
		if c&ctrlMSB != 0 {
			return off, found, more
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
func (d *domainSet) appendRule(dst []byte, off uint32) []byte {
	name := d.nameBytes(off)
	switch Syntax(d.flags(off) & flagSyntax) {
	case SyntaxWildcard:
		return append(append(dst, "*."...), name...)
	case SyntaxAdblock:
		return append(append(append(dst, "||"...), name...), '^')
	case SyntaxAdblockImportant:
		return append(append(append(dst, "||"...), name...), "^$important"...)
	}
	return append(dst, name...)
}

// pendingDomains collects domain rules for buildDomains: records as in
// the arena, in chunks (no record straddles two) so that collecting
// millions never copies what was collected, and the notes by record number.
type pendingDomains struct {
	chunks [][]byte
	size   int // bytes in all chunks
	n      int // records
	notes  []pendingNote
}

type pendingNote struct {
	rec  int
	note string
}

const (
	firstChunk = 4 << 10
	maxChunk   = 1 << 20
)

func (p *pendingDomains) add(name string, flags uint8, note string) {
	if len(name) == 0 || len(name) > maxNameLen {
		return
	}
	if note != "" {
		flags |= flagNote
		p.notes = append(p.notes, pendingNote{p.n, note})
	}
	need := recHeader + len(name)
	if int64(p.size+need) >= maxArena {
		return // offsets are uint32: about 180 million names per list
	}
	k := len(p.chunks) - 1
	if k < 0 || cap(p.chunks[k])-len(p.chunks[k]) < need {
		size := firstChunk
		if k >= 0 {
			size = min(2*cap(p.chunks[k]), maxChunk)
		}
		p.chunks = append(p.chunks, make([]byte, 0, size))
		k++
	}
	c := append(p.chunks[k], byte(len(name)), flags)
	p.chunks[k] = append(c, name...)
	p.size += need
	p.n++
}

// syntaxCounts are the rules counted per syntax, exact duplicates removed.
type syntaxCounts [4]int

// buildDomains compiles the pending rules. Rules with the same name and
// mode share one record (the first one's syntax, action and note); each
// distinct (name, syntax) is still counted.
func buildDomains(p *pendingDomains) (*domainSet, syntaxCounts) {
	var counts syntaxCounts
	d := &domainSet{}
	if p.n == 0 {
		return d, counts
	}
	// Pass 1: hash every name and collect its parents (of 2 labels or more)
	// as hashes, for the markers.
	hashes := make([]uint64, 0, p.n)
	depths := make([]uint8, 0, p.n)
	var parents hashSet
	var chain []uint64
	for _, chunk := range p.chunks {
		for i := 0; i < len(chunk); {
			name := chunk[i+recHeader : i+recHeader+int(chunk[i])]
			i += recHeader + len(name)
			chain = hashChain(name, chain[:0])
			hashes = append(hashes, chain[len(chain)-1])
			depths = append(depths, uint8(min(len(chain), 255)))
			for k := 1; k < len(chain)-1; k++ {
				parents.add(chain[k])
			}
		}
	}

	// Pass 2: the rules, then a marker for each parent.
	d.groups = uint64(float64(p.n+parents.n)/(8*maxLoad)) + 1
	d.tab = make([]group, d.groups)
	for i := range d.tab {
		d.tab[i].ctrl = ctrlMSB // all empty
	}
	// seen has a bit for each syntax counted for the rule in a slot.
	seen := make([]uint8, d.groups*8)
	d.arena = make([]byte, 0, p.size)
	rec, nextNote := 0, 0
	for ci, chunk := range p.chunks {
		for i := 0; i < len(chunk); rec++ {
			r := chunk[i : i+recHeader+int(chunk[i])]
			i += len(r)
			var note string
			if r[1]&flagNote != 0 {
				note = p.notes[nextNote].note
				nextNote++
			}
			if d.insert(r, hashes[rec], int(depths[rec]), seen, &counts) && note != "" {
				d.noteOffs = append(d.noteOffs, uint32(len(d.arena)-len(r)))
				d.notes = append(d.notes, note)
			}
		}
		p.chunks[ci] = nil // the GC may take it while the rest is built
	}
	parents.each(d.insertMarker)
	if waste := cap(d.arena) - len(d.arena); waste > len(d.arena)/16 {
		d.arena = append([]byte(nil), d.arena...)
	}
	d.noteOffs, d.notes = slices.Clip(d.noteOffs), slices.Clip(d.notes)
	return d, counts
}

// insert adds the record rec, whose name has hash h, unless a rule with the
// same name and mode is there, counting its syntax unless already counted
// for that rule. It reports whether rec was added (at the arena's end).
func (d *domainSet) insert(rec []byte, h uint64, labels int, seen []uint8, counts *syntaxCounts) bool {
	name, flags := rec[recHeader:], rec[1]
	g := d.group(h)
	tag := h & 0x7f
	bit := uint8(1) << (flags & flagSyntax)
	for {
		gr := &d.tab[g]
		c := gr.ctrl
		for m := matchTags(c, tag); m != 0; m &= m - 1 {
			k := bits.TrailingZeros64(m) >> 3
			o := gr.offs[k]
			if o != markerOff && string(d.nameBytes(o)) == string(name) && (d.flags(o)^flags)&flagModeMask == 0 {
				if s := &seen[g*8+uint64(k)]; *s&bit == 0 {
					*s |= bit
					counts[flags&flagSyntax]++
				}
				return false
			}
		}
		if e := c & ctrlMSB; e != 0 {
			k := bits.TrailingZeros64(e) >> 3
			gr.ctrl = c&^(0xff<<(8*k)) | tag<<(8*k)
			gr.offs[k] = uint32(len(d.arena))
			seen[g*8+uint64(k)] = bit
			counts[flags&flagSyntax]++
			d.arena = append(d.arena, rec...)
			d.labels |= labelBit(labels)
			d.n++
			return true
		}
		if g++; g == d.groups {
			g = 0
		}
	}
}

// insertMarker adds a marker slot for the parent name with hash h.
func (d *domainSet) insertMarker(h uint64) {
	g := d.group(h)
	tag := h & 0x7f
	for {
		gr := &d.tab[g]
		if e := gr.ctrl & ctrlMSB; e != 0 {
			k := bits.TrailingZeros64(e) >> 3
			gr.ctrl = gr.ctrl&^(0xff<<(8*k)) | tag<<(8*k)
			gr.offs[k] = markerOff
			return
		}
		if g++; g == d.groups {
			g = 0
		}
	}
}

// hashSet is a set of 64-bit hashes (open addressing, build time only).
type hashSet struct {
	slots   []uint64 // 0: empty
	n       int
	hasZero bool
}

func (s *hashSet) add(h uint64) {
	if h == 0 {
		if !s.hasZero {
			s.hasZero = true
			s.n++
		}
		return
	}
	if 4*(s.n+1) > 3*len(s.slots) {
		s.grow()
	}
	mask := uint64(len(s.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case 0:
			s.slots[i] = h
			s.n++
			return
		case h:
			return
		}
	}
}

func (s *hashSet) grow() {
	old := s.slots
	s.slots = make([]uint64, max(2*len(old), 1024))
	s.n = 0
	if s.hasZero {
		s.n = 1
	}
	for _, h := range old {
		if h != 0 {
			s.add(h)
		}
	}
}

func (s *hashSet) each(f func(uint64)) {
	if s.hasZero {
		f(0)
	}
	for _, h := range s.slots {
		if h != 0 {
			f(h)
		}
	}
}
