package sinkhole

import (
	"bytes"
	"testing"
)

// refHashName is hashName written plainly: split at dots, feed each label
// as right-aligned 8-byte chunks assembled byte by byte, the last one (0 to
// 7 bytes, at the label's start) with the final keys.
func refHashName(name []byte) (hs []uint64, starts []int) {
	h := uint64(hashSeed)
	e := len(name)
	for {
		s := bytes.LastIndexByte(name[:e], '.') + 1
		label := name[s:e]
		for len(label) >= 8 {
			var w uint64
			for i := len(label) - 1; i >= len(label)-8; i-- {
				w = w<<8 | uint64(label[i])
			}
			h = hashMix(h^hashK1, w^hashK2)
			label = label[:len(label)-8]
		}
		var w uint64
		for i := len(label) - 1; i >= 0; i-- {
			w = w<<8 | uint64(label[i])
		}
		h = hashMix(h^hashK3, w^hashK4)
		hs, starts = append(hs, h), append(starts, s)
		if s == 0 {
			return hs, starts
		}
		e = s - 1
	}
}

func TestHashLabelAt(t *testing.T) {
	t.Parallel()
	names := []string{"", ".", "..", "a", "a.", ".a", "a..b", "abcdefgh", "abcdefg.", ".bcdefgh", "abcdefghi",
		"a.cdefghijklmnop", "abcdefghijklmno.", "abcdefghijklmnop", "abcdefghijklmnopq", "a.b.c.d.e.f.g.h.i",
		"\xae\xaeabc\x2e\xaexyzwvuts", "..........", "abcdefghijklmnopqrstuvwxyz.example",
		"cdn.n1.edge-01.static.docs-prize.de", "x.verylonglabelname-0123456789.example", "1234567.12345678.123456789",
		"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f", "abcdefghijklmnopqrstuvwxyz.abcdefghijklmnopqrstuvwxyz.0123456789"}
	for _, name := range names {
		wantH, wantS := refHashName([]byte(name))
		h := uint64(hashSeed)
		e := len(name)
		for k := 0; ; k++ {
			var s int
			h, s = hashLabelAt(h, []byte(name), e)
			if k >= len(wantS) || s != wantS[k] || h != wantH[k] {
				t.Errorf("%q label %d: start %d hash %#x, want %v %#x", name, k, s, h, wantS, wantH)
				break
			}
			if s == 0 {
				if k != len(wantS)-1 {
					t.Errorf("%q: %d labels, want %d", name, k+1, len(wantS))
				}
				break
			}
			e = s - 1
		}
		// The same name at the end of a longer buffer reads words across
		// the boundary; the hash must not change.
		buf := append([]byte("zzzzzzzz.."), name...)
		if h0, _ := hashName([]byte(name)); len(name) > 0 {
			var h1 uint64 = hashSeed
			e, s := len(buf), 0
			for s != 10 && e >= 10 {
				h1, s = hashLabelAt(h1, buf, e)
				e = s - 1
			}
			if s == 10 && h1 != h0 {
				t.Errorf("%q: hash depends on the bytes before the name", name)
			}
		}
	}
}

// TestHashLabelsDistinct checks that moving a dot changes the hash (labels
// are delimited, not just concatenated).
func TestHashLabelsDistinct(t *testing.T) {
	t.Parallel()
	seen := map[uint64]string{}
	for _, name := range []string{"abcdefghij", "ab.cdefghij", "abcdefgh.ij", "a.bcdefghij", "abcdefghij.", ".abcdefghij",
		"aaaaaaaaa", "aaaaaaaaaa", "aaaaaaaa.a", "a.aaaaaaaa", "aaaaaaaa", "a", "aa"} {
		h, _ := hashName([]byte(name))
		if other, ok := seen[h]; ok {
			t.Errorf("%q and %q hash alike", name, other)
		}
		seen[h] = name
	}
}

func BenchmarkHashName(b *testing.B) {
	name := []byte("cdn.n1.edge-01.static.docs-prize.de")
	b.ReportAllocs()
	for b.Loop() {
		hashName(name)
	}
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
