package sinkhole

import (
	"encoding/binary"
	"math/bits"
)

// Names are hashed label by label from the right, so that one pass over a
// query name yields the hash of every parent suffix in turn:
// h(example) -> h(evil.example) -> h(www.evil.example). The step is a
// folded 64x64->128 multiply (as in wyhash); a label is fed in 8-byte
// little-endian chunks, its length first.
//
// The keys are fixed, so compiled layouts are reproducible. Provoking long
// probe sequences takes a list crafted for these keys; a list's author
// already controls what that list blocks, and the cost is bounded by the
// table's load factor for every other list.
const (
	hashSeed = 0x2d358dccaa6c78a5
	hashK1   = 0xa0761d6478bd642f
	hashK2   = 0xe7037ed1a0b428db
)

func hashStep(h, x uint64) uint64 {
	hi, lo := bits.Mul64(h^hashK1, x^hashK2)
	return hi ^ lo
}

// hashLabel folds the label name[s:e] into h, the hash of the labels to its
// right (hashSeed for the last label).
func hashLabel(h uint64, name []byte, s, e int) uint64 {
	h ^= uint64(e-s) << 56
	for e-s > 8 {
		h = hashStep(h, binary.LittleEndian.Uint64(name[s:]))
		s += 8
	}
	return hashStep(h, loadTail(name, s, e))
}

// loadTail returns name[s:e] (at most 8 bytes) as a little-endian number,
// zero-extended, reading whole words where the slice allows it.
func loadTail(name []byte, s, e int) uint64 {
	n := uint(e-s) * 8
	if s+8 <= len(name) {
		return binary.LittleEndian.Uint64(name[s:]) & (1<<n - 1) // n == 64: 1<<n is 0, the mask all ones
	}
	if e >= 8 {
		return binary.LittleEndian.Uint64(name[e-8:]) >> (64 - n)
	}
	var x uint64
	for i := e - 1; i >= s; i-- {
		x = x<<8 | uint64(name[i])
	}
	return x
}

// lastDot returns the index of the last '.' in b, or -1.
func lastDot(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '.' {
			return i
		}
	}
	return -1
}

// hashName returns the hash of a whole name and its number of labels.
func hashName(name []byte) (h uint64, labels int) {
	h = hashSeed
	e := len(name)
	for {
		s := lastDot(name[:e]) + 1
		h = hashLabel(h, name, s, e)
		labels++
		if s == 0 {
			return h, labels
		}
		e = s - 1
	}
}
