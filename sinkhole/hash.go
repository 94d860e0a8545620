package sinkhole

import (
	"encoding/binary"
	"math/bits"
)

// Names are hashed label by label from the right, so that one pass over a
// query name yields the hash of every parent suffix in turn:
// h(example) -> h(evil.example) -> h(www.evil.example). The pass reads the
// name eight bytes at a time, right to left; each word serves both to find
// the label's dot and as hash input. A label is fed as right-aligned 8-byte
// chunks (the last one, at the label's start, zero-extended), each through
// a folded 64x64->128 multiply as in wyhash; the label's last chunk uses
// other keys, which marks where labels end.
//
// The keys are fixed, so compiled layouts are reproducible. Provoking long
// probe sequences takes a list crafted for these keys; a list's author
// already controls what that list blocks, and the cost stays bounded for
// every other list.
const (
	hashSeed = 0x2d358dccaa6c78a5
	hashK1   = 0xa0761d6478bd642f
	hashK2   = 0xe7037ed1a0b428db
	hashK3   = 0x8ebc6af09c88c6e3
	hashK4   = 0x589965cc75374cc3
)

func hashMix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hashLabelAt folds the label that ends before e into h. It returns the new
// hash and the label's start s: name[s:e] is the label, and s is 0 or
// follows a '.'.
func hashLabelAt(h uint64, name []byte, e int) (uint64, int) {
	for {
		// w holds name[e-8:e], byte e-1 on top; for e < 8, the e bytes of
		// the name's start on top, zeros below and a virtual dot just
		// below the start.
		var w, m uint64
		base := e - 8
		switch {
		case base >= 0:
			w = binary.LittleEndian.Uint64(name[base:])
			m = dotBytes(w)
		default:
			if len(name) >= 8 {
				w = binary.LittleEndian.Uint64(name) << (8 * uint(-base))
			} else {
				for i := e - 1; i >= 0; i-- {
					w = w<<8 | uint64(name[i])
				}
				w <<= 8 * uint(-base)
			}
			m = dotBytes(w) | 0x80<<(8*uint(-base-1))
		}
		if m == 0 { // all eight bytes belong to the label
			h = hashMix(h^hashK1, w^hashK2)
			e = base
			continue
		}
		i := (63 - bits.LeadingZeros64(m)) >> 3 // the last dot's byte
		return hashMix(h^hashK3, w>>(8*uint(i+1))^hashK4), base + i + 1
	}
}

// dotBytes returns the bytes of w equal to '.' as their high bits, exactly
// (no false positives, unlike the cheaper has-zero-byte test).
func dotBytes(w uint64) uint64 {
	const lo7, dots = 0x7f7f7f7f7f7f7f7f, 0x2e2e2e2e2e2e2e2e
	x := w ^ dots
	return ^((x&lo7 + lo7) | x | lo7)
}

// hashName returns the hash of a whole name and its number of labels.
func hashName(name []byte) (h uint64, labels int) {
	h = hashSeed
	e := len(name)
	for {
		var s int
		h, s = hashLabelAt(h, name, e)
		labels++
		if s == 0 {
			return h, labels
		}
		e = s - 1
	}
}

// maxMaskName is the longest name dotMask can map.
const maxMaskName = 64

// dotMask returns a mask with bit i set where name[i] is '.', for names of
// at most 64 bytes. Its words are independent loads, so the CPU reads them
// in parallel; walking the labels then needs no memory at all.
func dotMask(name []byte) uint64 {
	n := len(name)
	var mask uint64
	i := 0
	for ; i+8 <= n; i += 8 {
		mask |= gatherHigh(dotBytes(binary.LittleEndian.Uint64(name[i:]))) << uint(i)
	}
	switch {
	case i == n:
	case n >= 8:
		mask |= gatherHigh(dotBytes(binary.LittleEndian.Uint64(name[n-8:]))) << uint(n-8)
	default:
		for ; i < n; i++ {
			if name[i] == '.' {
				mask |= 1 << uint(i)
			}
		}
	}
	return mask
}

// gatherHigh packs the high bit of each byte of m (other bits zero) into
// the low 8 bits: byte j's bit becomes bit j. The multiply places each bit
// at 56+j without carries.
func gatherHigh(m uint64) uint64 {
	return (m >> 7) * 0x0102040810204080 >> 56
}

// hashLabelMask is hashLabelAt for a name of at most 64 bytes whose dots
// are in mask (see dotMask). Both give the same hash and start.
func hashLabelMask(h uint64, name []byte, mask uint64, e int) (uint64, int) {
	s := 64 - bits.LeadingZeros64(mask&(1<<uint(e)-1)) // after the last dot before e, or 0
	for e-s >= 8 {
		h = hashMix(h^hashK1, binary.LittleEndian.Uint64(name[e-8:])^hashK2)
		e -= 8
	}
	k := uint(e-s) * 8 // the last chunk: name[s:e], 0 to 7 bytes
	var w uint64
	switch {
	case e >= 8:
		w = binary.LittleEndian.Uint64(name[e-8:]) >> (64 - k)
	case len(name) >= 8:
		w = binary.LittleEndian.Uint64(name) << (64 - 8*uint(e)) >> (64 - k)
	default:
		for i := e - 1; i >= s; i-- {
			w = w<<8 | uint64(name[i])
		}
	}
	return hashMix(h^hashK3, w^hashK4), s
}

// hashChain appends to dst the hash of every suffix of name, shortest
// first: dst[k-1] is the hash of the last k labels.
func hashChain(name []byte, dst []uint64) []uint64 {
	h := uint64(hashSeed)
	e := len(name)
	for {
		var s int
		h, s = hashLabelAt(h, name, e)
		dst = append(dst, h)
		if s == 0 {
			return dst
		}
		e = s - 1
	}
}
