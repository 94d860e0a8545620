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
