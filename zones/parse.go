package zones

import (
	"bytes"
	"net/netip"
	"strings"

	"github.com/sinkd/sinkd/sinkhole"
)

// format is the set of line formats seen in a file.
type format uint8

// Line formats, in the order Source.Format names them.
const (
	fmtDomain   format = 1 << iota // evil.example
	fmtHosts                       // 0.0.0.0 evil.example
	fmtAdblock                     // ||evil.example^
	fmtWildcard                    // *.evil.example
	fmtIP                          // 192.0.2.1
	fmtCIDR                        // 192.0.2.0/24
)

// String joins the names of the formats in f with "+", in a fixed order
// ("domain+hosts+adblock+wildcard+ip+cidr"); "" when f is empty.
func (f format) String() string {
	names := [...]string{"domain", "hosts", "adblock", "wildcard", "ip", "cidr"}
	var b strings.Builder
	for i, n := range names {
		if f&(1<<i) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('+')
		}
		b.WriteString(n)
	}
	return b.String()
}

// sink receives the rules of a list as they are parsed. name is lower-case
// and validated; it aliases the parser's buffer and is only valid during the
// call.
type sink interface {
	domain(name []byte, syn sinkhole.Syntax, note string)
	prefix(p netip.Prefix, note string)
}

// Reasons a line is skipped. They are constants so that a skipped line
// costs no allocation; the text is only built for the first few.
const (
	whyAdblock      = "unsupported adblock rule"
	whyURL          = "URL, not a name"
	whyTrailing     = "unexpected text after rule"
	whyCIDR         = "invalid CIDR"
	whyAddr         = "invalid address"
	whyZone         = "address with zone"
	whyWildcardAddr = "wildcard of an address"
	whyHostAddr     = "address as host name"
	whyEmpty        = "empty name"
	whyNameLong     = "name too long"
	whyEmptyLabel   = "empty label"
	whyLabelLong    = "label too long"
	whyNonASCII     = "non-ASCII name (use punycode xn--)"
	whyChar         = "invalid character in name"
	whySingle       = "single label"
	whyNumericTLD   = "numeric top-level label"
	whyLineLong     = "line too long"
)

// lineResult is what one line yields.
type lineResult struct {
	f     format // the line's format; 0 for blank, comment and skipped lines
	rules int    // rules handed to the sink
	why   string // non-empty: the line is skipped, for this reason
	tok   []byte // the text the reason is about; aliases the line
}

// parseLine parses one list line (without its line break) and hands its
// rules to s. It lower-cases the names of its rules in place in line;
// a skipped line is left as it was, for its error message.
//
// Blank lines and lines starting with '#', ';' or '!' are comments. '#' or
// ';' after white space starts an inline comment, which becomes the note of
// the line's rules. A line is all or nothing: when one name of a hosts line
// is invalid, the whole line is skipped.
func parseLine(line []byte, s sink) lineResult {
	line = trimSpace(line)
	if len(line) == 0 {
		return lineResult{}
	}
	switch line[0] {
	case '#', ';', '!':
		return lineResult{}
	}
	body, note := cutComment(line)
	first, rest := nextField(body)
	if len(rest) == 0 {
		return parseToken(first, note, s)
	}
	if looksAddr(first) {
		if _, ok := parseAddr(first); ok {
			// A hosts line: its address is never a rule.
			return parseHosts(rest, note, s)
		}
	}
	if !looksAddr(first) && adblockish(first) {
		return lineResult{why: whyAdblock, tok: body}
	}
	return lineResult{why: whyTrailing, tok: body}
}

// parseToken parses a line of one field: an address, a CIDR, a wildcard, an
// adblock rule or a plain name.
func parseToken(tok, note []byte, s sink) lineResult {
	// The common case first: a plain name. A valid name is nothing else: no
	// address (its top-level label is not all digits, it holds no ':' or
	// '/') and no other syntax.
	name, why := checkName(tok)
	if why == "" {
		s.domain(name, sinkhole.SyntaxPlain, noteString(note))
		return lineResult{f: fmtDomain, rules: 1}
	}
	if looksAddr(tok) {
		if r, ok := parseAddrToken(tok, note, s, fmtIP); ok {
			return r
		}
		// Not an address: "1.2.3" or "1.2.3.4.5" are not names either,
		// for the reason checkName gave.
	}
	switch {
	case bytes.HasPrefix(tok, []byte("*.")):
		name := tok[2:]
		if isIPv4(name) {
			return lineResult{why: whyWildcardAddr, tok: tok}
		}
		name, why := checkName(name)
		if why != "" {
			if adblockish(tok[2:]) {
				why = whyAdblock
			}
			return lineResult{why: why, tok: tok}
		}
		s.domain(name, sinkhole.SyntaxWildcard, noteString(note))
		return lineResult{f: fmtWildcard, rules: 1}
	case bytes.HasPrefix(tok, []byte("||")):
		return parseAdblock(tok, note, s)
	case isURL(tok):
		return lineResult{why: whyURL, tok: tok}
	case adblockish(tok):
		return lineResult{why: whyAdblock, tok: tok}
	}
	return lineResult{why: why, tok: tok}
}

// parseAddrToken parses an address or CIDR. ok is false when tok is
// neither and should be tried as a name. Addresses are unmapped; CIDRs with
// host bits set are masked (203.0.113.7/24 is 203.0.113.0/24), as
// firewalls loading the same lists do.
func parseAddrToken(tok, note []byte, s sink, f format) (lineResult, bool) {
	if i := bytes.IndexByte(tok, '/'); i >= 0 {
		p, ok := parsePrefix(tok)
		if !ok || p.Addr().Zone() != "" {
			if _, ok := parseAddr(tok[:i]); ok {
				return lineResult{why: whyCIDR, tok: tok}, true
			}
			return lineResult{}, false
		}
		if f == fmtIP {
			f = fmtCIDR
		}
		s.prefix(unmapPrefix(p).Masked(), noteString(note))
		return lineResult{f: f, rules: 1}, true
	}
	a, ok := parseAddr(tok)
	if !ok {
		colons := bytes.IndexByte(tok, ':') >= 0
		if colons && hexColons(tok) || !colons && bytes.Count(tok, []byte(".")) == 3 {
			// Shaped like an IPv6 or dotted-quad IPv4 address.
			return lineResult{why: whyAddr, tok: tok}, true
		}
		return lineResult{}, false
	}
	if a.Zone() != "" {
		return lineResult{why: whyZone, tok: tok}, true
	}
	a = a.Unmap()
	s.prefix(netip.PrefixFrom(a, a.BitLen()), noteString(note))
	return lineResult{f: f, rules: 1}, true
}

// parseAddr is netip.ParseAddr for bytes, without allocating for IPv4.
func parseAddr(b []byte) (netip.Addr, bool) {
	if a, ok := parseIPv4(b); ok {
		return a, true
	}
	if bytes.IndexByte(b, ':') < 0 {
		return netip.Addr{}, false // IPv4 is all parseIPv4 takes
	}
	a, err := netip.ParseAddr(string(b))
	return a, err == nil
}

// parsePrefix is netip.ParsePrefix for bytes holding a '/', without
// allocating for IPv4.
func parsePrefix(b []byte) (netip.Prefix, bool) {
	i := bytes.IndexByte(b, '/')
	a, ok := parseIPv4(b[:i])
	if !ok {
		p, err := netip.ParsePrefix(string(b))
		return p, err == nil
	}
	bits := b[i+1:]
	if len(bits) == 0 || len(bits) > 2 || len(bits) == 2 && bits[0] == '0' {
		return netip.Prefix{}, false
	}
	n := 0
	for _, c := range bits {
		if c < '0' || c > '9' {
			return netip.Prefix{}, false
		}
		n = n*10 + int(c-'0')
	}
	if n > 32 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, n), true
}

// parseIPv4 parses a dotted-quad IPv4 address as netip.ParseAddr does:
// four decimal octets up to 255, no leading zeros.
func parseIPv4(b []byte) (netip.Addr, bool) {
	var ip [4]byte
	n, val, digits := 0, 0, 0
	for i := 0; i <= len(b); i++ {
		if i == len(b) || b[i] == '.' {
			if digits == 0 || n == 4 {
				return netip.Addr{}, false
			}
			ip[n] = byte(val)
			n, val, digits = n+1, 0, 0
			continue
		}
		c := b[i]
		if c < '0' || c > '9' || digits > 0 && val == 0 {
			return netip.Addr{}, false
		}
		val = val*10 + int(c-'0')
		digits++
		if val > 255 {
			return netip.Addr{}, false
		}
	}
	if n != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(ip), true
}

// parseAdblock parses a token starting with "||". Only ||name^ and
// ||name^$important are rules; ||192.0.2.1^ is an address rule (AdGuard
// matches it against answer addresses).
func parseAdblock(tok, note []byte, s sink) lineResult {
	syn := sinkhole.SyntaxAdblock
	body := tok[2:]
	switch {
	case hasSuffixFold(body, "^$important"):
		body = body[:len(body)-len("^$important")]
		syn = sinkhole.SyntaxAdblockImportant
	case bytes.HasSuffix(body, []byte("^")):
		body = body[:len(body)-1]
	default:
		return lineResult{why: whyAdblock, tok: tok}
	}
	if len(body) == 0 || adblockish(body) || bytes.IndexByte(body, '*') >= 0 || bytes.IndexByte(body, ':') >= 0 {
		return lineResult{why: whyAdblock, tok: tok}
	}
	if isIPv4(body) {
		r, _ := parseAddrToken(body, note, s, fmtAdblock)
		return r
	}
	name, why := checkName(body)
	if why != "" {
		return lineResult{why: why, tok: tok}
	}
	s.domain(name, syn, noteString(note))
	return lineResult{f: fmtAdblock, rules: 1}
}

// parseHosts parses the names of a hosts line (its address already
// consumed). Boilerplate names (localhost and friends) are neither rules
// nor reasons to skip the line.
func parseHosts(names, note []byte, s sink) lineResult {
	n := 0
	for rest := names; len(rest) > 0; {
		var tok []byte
		tok, rest = nextField(rest)
		if hostsBoilerplate(tok) {
			continue
		}
		if isIPv4(tok) || bytes.IndexByte(tok, ':') >= 0 {
			return lineResult{why: whyHostAddr, tok: tok}
		}
		if _, why := checkName(tok); why != "" {
			return lineResult{why: why, tok: tok}
		}
		n++
	}
	if n == 0 {
		return lineResult{f: fmtHosts}
	}
	ns := noteString(note)
	for rest := names; len(rest) > 0; {
		var tok []byte
		tok, rest = nextField(rest)
		if hostsBoilerplate(tok) {
			continue
		}
		name, _ := checkName(tok)
		s.domain(name, sinkhole.SyntaxPlain, ns)
	}
	return lineResult{f: fmtHosts, rules: n}
}

// hostsBoilerplate reports whether a name of a hosts line is one of the
// entries every hosts file carries.
func hostsBoilerplate(name []byte) bool {
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	for _, b := range []string{"localhost", "localhost.localdomain", "local", "broadcasthost", "0.0.0.0"} {
		if len(name) == len(b) && hasPrefixFold(name, b) {
			return true
		}
	}
	return hasPrefixFold(name, "ip6-")
}

// checkName validates a name and returns it lower-cased (in place) without
// its final dot, or the reason it is not a name (leaving b as it was):
// labels of 1 to 63 letters, digits, hyphens or underscores (underscores
// appear in real lists), at most 253 bytes, at least two labels, and a
// top-level label that is not all digits. Punycode (xn--) is kept as is.
func checkName(b []byte) ([]byte, string) {
	if n := len(b); n > 0 && b[n-1] == '.' {
		b = b[:n-1]
	}
	if len(b) == 0 {
		return nil, whyEmpty
	}
	if len(b) > 253 {
		return nil, whyNameLong
	}
	labels, start, digits, upper := 1, 0, true, false
	for i, c := range b {
		switch {
		case c-'a' < 26: // the common case first
			digits = false
		case c == '.':
			if l := i - start; l == 0 {
				return nil, whyEmptyLabel
			} else if l > 63 {
				return nil, whyLabelLong
			}
			labels, start, digits = labels+1, i+1, true
		case c-'0' < 10:
		case c == '-', c == '_':
			digits = false
		case c-'A' < 26:
			digits, upper = false, true
		case c >= 0x80:
			return nil, whyNonASCII
		default:
			return nil, whyChar
		}
	}
	if l := len(b) - start; l == 0 {
		return nil, whyEmptyLabel
	} else if l > 63 {
		return nil, whyLabelLong
	}
	if labels == 1 {
		return nil, whySingle
	}
	if digits {
		return nil, whyNumericTLD
	}
	if upper {
		lower(b)
	}
	return b, ""
}

// cutComment splits an inline comment off line: '#' or ';' after white
// space. The note is trimmed.
func cutComment(line []byte) (body, note []byte) {
	i := bytes.IndexByte(line, '#')
	if j := bytes.IndexByte(line, ';'); j >= 0 && (i < 0 || j < i) {
		i = j
	}
	if i < 0 {
		return line, nil
	}
	for i = max(i, 1); i < len(line); i++ {
		if (line[i] == '#' || line[i] == ';') && isSpace(line[i-1]) {
			return trimSpace(line[:i]), trimSpace(line[i+1:])
		}
	}
	return line, nil
}

// nextField returns the first white-space separated field of b and the rest
// with its leading white space removed. b must not start with white space.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && !isSpace(b[i]) {
		i++
	}
	field, rest = b[:i], b[i:]
	for len(rest) > 0 && isSpace(rest[0]) {
		rest = rest[1:]
	}
	return field, rest
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// lower lower-cases ASCII letters in place.
func lower(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
}

// looksAddr reports whether tok could be an address or CIDR: it is cheaper
// than parsing, and keeps names away from netip (which would allocate).
func looksAddr(tok []byte) bool {
	if len(tok) == 0 {
		return false
	}
	if bytes.IndexByte(tok, ':') >= 0 {
		return true
	}
	for _, c := range tok {
		if (c < '0' || c > '9') && c != '.' && c != '/' {
			return false
		}
	}
	return true
}

// hasPrefixFold reports whether b starts with the lower-case ASCII
// prefix, ignoring letter case.
func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// hasSuffixFold reports whether b ends with the lower-case ASCII suffix,
// ignoring letter case.
func hasSuffixFold(b []byte, suffix string) bool {
	return len(b) >= len(suffix) && hasPrefixFold(b[len(b)-len(suffix):], suffix)
}

// isIPv4 reports whether b is a dotted-quad IPv4 address.
func isIPv4(b []byte) bool {
	_, ok := parseIPv4(b)
	return ok
}

// adblockish reports whether tok uses adblock filter syntax beyond a name:
// exceptions, anchors, separators, modifiers, paths, regexps, cosmetic
// rules, or wildcards inside a name.
func adblockish(tok []byte) bool {
	if bytes.HasPrefix(tok, []byte("@@")) {
		return true
	}
	return bytes.ContainsAny(tok, "|^$/*") || bytes.Contains(tok, []byte("##")) ||
		bytes.Contains(tok, []byte("#@#")) || bytes.Contains(tok, []byte("#?#"))
}

// isURL reports whether tok is a URL with nothing of adblock syntax
// (http://7ads.ru^ is an adblock rule).
func isURL(tok []byte) bool {
	return (bytes.HasPrefix(tok, []byte("http://")) || bytes.HasPrefix(tok, []byte("https://"))) &&
		!bytes.ContainsAny(tok, "|^$*")
}

// hexColons reports whether tok holds only what an IPv6 address may.
func hexColons(tok []byte) bool {
	for _, c := range tok {
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F', c == ':', c == '.':
		default:
			return false
		}
	}
	return true
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

func noteString(note []byte) string {
	if len(note) == 0 {
		return ""
	}
	return string(note)
}
