package sinkhole

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestPrefixRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		prefix      string
		first, last string
	}{
		{"ipv4 /24", "203.0.113.0/24", "203.0.113.0", "203.0.113.255"},
		{"ipv4 /32", "203.0.113.7/32", "203.0.113.7", "203.0.113.7"},
		{"ipv4 /0", "0.0.0.0/0", "0.0.0.0", "255.255.255.255"},
		{"ipv4 /1", "128.0.0.0/1", "128.0.0.0", "255.255.255.255"},
		{"ipv6 /48", "2001:db8:bad::/48", "2001:db8:bad::", "2001:db8:bad:ffff:ffff:ffff:ffff:ffff"},
		{"ipv6 /64", "2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff"},
		{"ipv6 /65", "2001:db8::/65", "2001:db8::", "2001:db8::7fff:ffff:ffff:ffff"},
		{"ipv6 /128", "2001:db8::1/128", "2001:db8::1", "2001:db8::1"},
		{"ipv6 /0", "::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			first, last := prefixRange(netip.MustParsePrefix(tt.prefix))
			if want := addrKey(netip.MustParseAddr(tt.first)); first != want {
				t.Errorf("first = %x, want %x", first, want)
			}
			if want := addrKey(netip.MustParseAddr(tt.last)); last != want {
				t.Errorf("last = %x, want %x", last, want)
			}
		})
	}
}

// TestPrefixSetDifferential compares the range arrays with a linear scan
// for the longest prefix over nested random prefixes of both families, at
// addresses on and next to every prefix's bounds.
func TestPrefixSetDifferential(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	randAddr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			b[0] = 0x20 // one region, so prefixes nest
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{byte(r.IntN(4)), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
	}
	rounds := 8
	if testing.Short() {
		rounds = 2
	}
	for round := range rounds {
		var prefixes []netip.Prefix
		b := NewBuilder(&Source{Name: "ips.txt"})
		for range 50 + r.IntN(2000) {
			v6 := r.IntN(3) == 0
			var p netip.Prefix
			if len(prefixes) > 0 && r.IntN(2) == 0 {
				// Inside an earlier prefix of the same family, if any.
				base := prefixes[r.IntN(len(prefixes))]
				v6 = base.Addr().Is6()
				a := randAddr(v6)
				bits := base.Bits() + r.IntN(a.BitLen()-base.Bits()+1)
				// Copy base's bits into a.
				ab, bb := a.AsSlice(), base.Addr().AsSlice()
				for i := range base.Bits() {
					m := byte(0x80 >> (i % 8))
					ab[i/8] = ab[i/8]&^m | bb[i/8]&m
				}
				a, _ = netip.AddrFromSlice(ab)
				p = netip.PrefixFrom(a, bits).Masked()
			} else {
				a := randAddr(v6)
				p = netip.PrefixFrom(a, r.IntN(a.BitLen()+1)/2+a.BitLen()/2).Masked()
			}
			prefixes = append(prefixes, p)
			b.AddPrefix(p, "")
		}
		// The ends of the address space.
		for _, x := range [][]string{{"0.0.0.0/0", "::/0"}, {"255.255.255.255/32", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "0.0.0.0/32", "::/128"}}[min(round, 2)%2] {
			b.AddPrefix(netip.MustParsePrefix(x), "")
			prefixes = append(prefixes, netip.MustParsePrefix(x))
		}
		set := b.Build().ip
		ref := func(a netip.Addr) (int, bool) {
			best := -1
			for _, p := range prefixes {
				if p.Contains(a) && p.Bits() > best {
					best = p.Bits()
				}
			}
			return best, best >= 0
		}
		check := func(a netip.Addr) {
			t.Helper()
			bits, _, ok := set.lookup(a)
			wantBits, wantOK := ref(a)
			if ok != wantOK || ok && bits != wantBits {
				t.Fatalf("round %d: lookup(%s) = /%d %v, want /%d %v", round, a, bits, ok, wantBits, wantOK)
			}
		}
		for _, p := range prefixes {
			first, last := p.Addr(), lastAddr(p)
			check(first)
			check(last)
			if prev := first.Prev(); prev.IsValid() {
				check(prev)
			}
			if next := last.Next(); next.IsValid() {
				check(next)
			}
		}
		for range 2000 {
			check(randAddr(r.IntN(3) == 0))
		}
		// IPv6 outside the region all prefixes share (the index skips it).
		for _, a := range []string{"::", "::1", "1fff:ffff::", "2100::", "3000::1", "ffff::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
			check(netip.MustParseAddr(a))
		}
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
