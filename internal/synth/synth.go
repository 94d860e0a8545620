// Package synth generates deterministic synthetic block lists for
// benchmarks and load tests: domain names shaped like the ones in real
// malware and scam lists, and IPv4/IPv6 addresses and prefixes.
//
// The same seed always yields the same sequence, on every platform and Go
// release: the generator is a self-contained SplitMix64, not math/rand.
// Names within one generator are distinct, and so are prefixes.
package synth

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
)

// rng is SplitMix64: tiny, fast, and fixed forever.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a number in [0, n).
func (r *rng) intn(n int) int { return int((r.next() >> 32) * uint64(n) >> 32) }

// weighted picks an index by integer weights.
func (r *rng) weighted(w []int, total int) int {
	x := r.intn(total)
	for i, v := range w {
		if x < v {
			return i
		}
		x -= v
	}
	return len(w) - 1
}

type choice struct {
	s string
	w int
}

func sum(cs []choice) ([]int, int) {
	w := make([]int, len(cs))
	t := 0
	for i, c := range cs {
		w[i] = c.w
		t += c.w
	}
	return w, t
}

// Top-level suffixes with weights roughly like those of public malware and
// scam lists (.com dominates; cheap new gTLDs and a few ccTLDs follow).
var tlds = []choice{
	{"com", 420}, {"net", 50}, {"org", 30}, {"ru", 30}, {"info", 25}, {"xyz", 25},
	{"top", 30}, {"online", 15}, {"site", 15}, {"shop", 15}, {"store", 10},
	{"io", 10}, {"de", 12}, {"cn", 15}, {"br", 6}, {"in", 8}, {"co.uk", 12},
	{"com.br", 8}, {"club", 8}, {"live", 8}, {"icu", 10}, {"vip", 6}, {"cc", 8},
	{"tk", 8}, {"pw", 5}, {"biz", 8}, {"us", 6}, {"fr", 6}, {"it", 5}, {"nl", 6},
	{"pl", 5}, {"me", 6}, {"co", 8}, {"za", 4}, {"ir", 3}, {"vn", 4}, {"ga", 4},
	{"ml", 4}, {"cf", 3}, {"gq", 3}, {"app", 5}, {"dev", 3}, {"cloud", 4},
	{"click", 5}, {"link", 5}, {"work", 4}, {"win", 3}, {"bid", 3}, {"su", 3},
	{"ua", 3}, {"kz", 2}, {"com.au", 3}, {"co.za", 2}, {"com.cn", 3},
	{"duckdns.org", 4}, {"ngrok.io", 2}, {"web.app", 2}, {"000webhostapp.com", 3},
}

// Host labels in front of the registered name.
var hosts = []choice{
	{"www", 30}, {"mail", 6}, {"login", 6}, {"secure", 5}, {"account", 4},
	{"cdn", 4}, {"api", 4}, {"app", 4}, {"m", 4}, {"portal", 3}, {"update", 3},
	{"verify", 3}, {"auth", 3}, {"my", 3}, {"online", 2}, {"web", 2}, {"static", 2},
	{"download", 2}, {"dl", 2}, {"files", 2}, {"ns1", 1}, {"smtp", 1}, {"webmail", 2},
}

var syllables = []string{
	"ba", "be", "bi", "bo", "bu", "ca", "ce", "co", "cu", "da", "de", "di", "do",
	"fa", "fe", "fi", "fo", "ga", "ge", "go", "ha", "he", "hi", "ho", "ja", "jo",
	"ka", "ke", "ki", "ko", "la", "le", "li", "lo", "lu", "ma", "me", "mi", "mo",
	"mu", "na", "ne", "ni", "no", "nu", "pa", "pe", "pi", "po", "ra", "re", "ri",
	"ro", "ru", "sa", "se", "si", "so", "su", "ta", "te", "ti", "to", "tu", "va",
	"ve", "vi", "vo", "wa", "we", "xa", "ya", "yo", "za", "ze", "zo", "an", "ar",
	"en", "er", "in", "on", "or", "un", "ex", "al", "el", "il", "st", "tr", "pr",
	"sh", "ch", "th", "ck", "ng", "nt", "rd", "ll", "ss",
}

var words = []string{
	"secure", "login", "bank", "pay", "paypal", "apple", "amazon", "microsoft",
	"office", "update", "verify", "account", "support", "service", "online",
	"wallet", "crypto", "coin", "free", "prize", "gift", "deal", "shop", "store",
	"cloud", "mail", "track", "parcel", "post", "delivery", "invoice", "docs",
	"share", "drive", "file", "cdn", "static", "host", "net", "web", "app",
	"game", "bet", "casino", "loan", "credit", "help", "desk", "team", "global",
	"best", "top", "new", "my", "auth", "id", "sign", "portal", "center", "info",
}

const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
const hexdigits = "0123456789abcdef"

// Domains generates distinct domain names.
type Domains struct {
	r          rng
	tw, hw     []int
	tt, ht     int
	seen       set64
	buf        []byte
	maxRetries int
}

// NewDomains returns a generator of distinct domain names for seed.
func NewDomains(seed uint64) *Domains {
	g := &Domains{r: rng{s: seed}, maxRetries: 1000}
	g.tw, g.tt = sum(tlds)
	g.hw, g.ht = sum(hosts)
	return g
}

// Append appends the next name (lower-case, no final dot, 2 to 5 labels) to
// dst.
func (g *Domains) Append(dst []byte) []byte {
	for range g.maxRetries {
		g.buf = g.name(g.buf[:0])
		if g.seen.add(hash64(g.buf)) {
			return append(dst, g.buf...)
		}
	}
	panic("synth: name space exhausted") // unreachable for any sensible count
}

// Next returns the next name as a string.
func (g *Domains) Next() string { return string(g.Append(nil)) }

func (g *Domains) name(b []byte) []byte {
	r := &g.r
	// Labels in front of the registered name: 0 (about 55%), 1 (30%), 2 (15%).
	front := 0
	switch x := r.intn(100); {
	case x >= 85:
		front = 2
	case x >= 55:
		front = 1
	}
	for i := range front {
		b = g.host(b, i == 0 && front == 2)
		b = append(b, '.')
	}
	b = g.registered(b)
	b = append(b, '.')
	return append(b, tlds[r.weighted(g.tw, g.tt)].s...)
}

// host appends a label in front of the registered name: a common host
// name, a word, or a random or hex token (as phishing kits and DGAs use).
func (g *Domains) host(b []byte, outer bool) []byte {
	r := &g.r
	switch x := r.intn(100); {
	case x < 45 && !outer:
		return append(b, hosts[r.weighted(g.hw, g.ht)].s...)
	case x < 70:
		return g.syllables(b, 2+r.intn(3))
	case x < 88:
		return g.token(b, alnum, 4+r.intn(10))
	default:
		return g.token(b, hexdigits, 8+r.intn(4)*8)
	}
}

// registered appends the label right of the public suffix: words,
// syllables, digits and hyphens in the proportions of real lists.
func (g *Domains) registered(b []byte) []byte {
	r := &g.r
	switch x := r.intn(100); {
	case x < 30:
		b = append(b, words[r.intn(len(words))]...)
		if r.intn(2) == 0 {
			b = append(b, '-')
		}
		b = append(b, words[r.intn(len(words))]...)
		if r.intn(3) == 0 {
			b = strconv.AppendInt(b, int64(r.intn(1000)), 10)
		}
	case x < 65:
		b = g.syllables(b, 2+r.intn(4))
		if r.intn(4) == 0 {
			b = strconv.AppendInt(b, int64(r.intn(100)), 10)
		}
	case x < 85:
		b = append(b, words[r.intn(len(words))]...)
		b = g.syllables(b, 1+r.intn(3))
	default:
		b = g.token(b, alnum, 6+r.intn(12))
	}
	return b
}

func (g *Domains) syllables(b []byte, n int) []byte {
	for range n {
		b = append(b, syllables[g.r.intn(len(syllables))]...)
	}
	return b
}

func (g *Domains) token(b []byte, alphabet string, n int) []byte {
	for range n {
		b = append(b, alphabet[g.r.intn(len(alphabet))])
	}
	return b
}

// DomainList returns n distinct names for seed.
func DomainList(seed uint64, n int) []string {
	g := NewDomains(seed)
	out := make([]string, n)
	for i := range out {
		out[i] = g.Next()
	}
	return out
}

// Prefixes generates distinct addresses and prefixes: about 70% single
// IPv4 addresses, 15% IPv4 CIDRs (mostly /24), 10% single IPv6 addresses
// and 5% IPv6 CIDRs (mostly /48 to /64), all masked.
type Prefixes struct {
	r    rng
	seen set64
}

// NewPrefixes returns a generator of distinct prefixes for seed.
func NewPrefixes(seed uint64) *Prefixes { return &Prefixes{r: rng{s: seed ^ 0x5eed1b5}} }

// Next returns the next prefix; a single address is a full-length prefix.
func (g *Prefixes) Next() netip.Prefix {
	for {
		p := g.prefix()
		a := p.Addr().As16()
		k := hash64(append(a[:], byte(p.Bits()), byte(p.Addr().BitLen())))
		if g.seen.add(k) {
			return p
		}
	}
}

// IPv4 CIDR lengths as in DROP-style and firehol lists: mostly /24 and
// /22, few large blocks (a handful of /8s would cover most of the space).
var v4bits = []int{16, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}
var v4bitsW = []int{1, 2, 3, 5, 6, 12, 10, 40, 2, 2, 2, 3, 3, 2, 1}
var v6bits = []int{29, 32, 36, 40, 44, 48, 56, 60, 64}
var v6bitsW = []int{1, 6, 2, 3, 3, 20, 10, 3, 20}

func (g *Prefixes) prefix() netip.Prefix {
	r := &g.r
	x := r.intn(100)
	if x < 85 {
		v := uint32(r.next())
		// Keep clear of 0/8 and the multicast and reserved space above 224/3.
		v = (v%(223<<24-1<<24) + 1<<24)
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		bits := 32
		if x >= 70 {
			bits = v4bits[r.weighted(v4bitsW, total(v4bitsW))]
		}
		return netip.PrefixFrom(a, bits).Masked()
	}
	var b [16]byte
	hi, lo := r.next(), r.next()
	for i := range 8 {
		b[i] = byte(hi >> (56 - 8*i))
		b[8+i] = byte(lo >> (56 - 8*i))
	}
	b[0] = 0x20 | b[0]&0x0f // 2000::/4-ish, global unicast like real feeds
	b[1] |= 0x01
	a := netip.AddrFrom16(b)
	bits := 128
	if x >= 95 {
		bits = v6bits[r.weighted(v6bitsW, total(v6bitsW))]
	}
	return netip.PrefixFrom(a, bits).Masked()
}

func total(w []int) int {
	t := 0
	for _, v := range w {
		t += v
	}
	return t
}

// PrefixList returns n distinct prefixes for seed.
func PrefixList(seed uint64, n int) []netip.Prefix {
	g := NewPrefixes(seed)
	out := make([]netip.Prefix, n)
	for i := range out {
		out[i] = g.Next()
	}
	return out
}

// WriteList writes a plain list file: a comment header, then domains names
// and ips addresses/prefixes, one rule per line (addresses without /32 or
// /128).
func WriteList(w io.Writer, seed uint64, domains, ips int) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	fmt.Fprintf(bw, "# synthetic list: seed=%d domains=%d ips=%d\n", seed, domains, ips)
	g := NewDomains(seed)
	var line []byte
	for range domains {
		line = g.Append(line[:0])
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("synth: write: %w", err)
		}
	}
	pg := NewPrefixes(seed)
	for range ips {
		p := pg.Next()
		if p.IsSingleIP() {
			line = p.Addr().AppendTo(line[:0])
		} else {
			line = p.AppendTo(line[:0])
		}
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("synth: write: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("synth: write: %w", err)
	}
	return nil
}

// hash64 is FNV-1a followed by a finalizer; used only to detect repeats.
func hash64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h | 1 // 0 marks an empty slot
}

// set64 is an open-addressing set of non-zero 64-bit keys.
type set64 struct {
	slots []uint64
	n     int
}

// add inserts k and reports whether it was new.
func (s *set64) add(k uint64) bool {
	if 4*(s.n+1) > 3*len(s.slots) {
		s.grow()
	}
	mask := uint64(len(s.slots) - 1)
	for i := k & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case 0:
			s.slots[i] = k
			s.n++
			return true
		case k:
			return false
		}
	}
}

func (s *set64) grow() {
	old := s.slots
	n := 2 * len(old)
	if n == 0 {
		n = 1024
	}
	s.slots = make([]uint64, n)
	s.n = 0
	for _, k := range old {
		if k != 0 {
			s.add(k)
		}
	}
}
