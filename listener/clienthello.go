package listener

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// maxHello is how much of a TLS connection is read for its ClientHello.
const maxHello = 16 << 10

// Errors of the first-bytes readers.
var (
	// errNeedMore says the bytes so far are a valid prefix: read more.
	errNeedMore = errors.New("listener: need more bytes")
	// errNotHello says the bytes are not a TLS ClientHello.
	errNotHello = errors.New("listener: not a TLS ClientHello")
	// errNotHTTP says the bytes are not an HTTP/1 request head.
	errNotHTTP = errors.New("listener: not an HTTP request")
)

// clientHello is what sinkd keeps of a ClientHello.
type clientHello struct {
	legacyVersion uint16
	versions      []uint16 // supported_versions, GREASE removed
	ciphers       []uint16 // GREASE removed, in order
	extensions    []uint16 // GREASE removed, in order
	sigAlgs       []uint16 // signature_algorithms, GREASE removed, in order
	sni           string
	alpn          []string
}

// isGREASE reports a GREASE value (RFC 8701): 0x0a0a, 0x1a1a, ... 0xfafa.
func isGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

// handshakeBytes collects the handshake messages of the TLS records in b.
// It returns errNeedMore while the first handshake message is incomplete.
func handshakeBytes(b []byte) ([]byte, error) {
	var hs []byte
	for len(b) > 0 {
		if len(b) < 5 {
			return nil, errNeedMore
		}
		if b[0] != 0x16 || b[1] != 3 {
			return nil, errNotHello
		}
		n := int(b[3])<<8 | int(b[4])
		if n == 0 || n > 1<<14+2048 {
			return nil, errNotHello
		}
		if len(b) < 5+n {
			hs = append(hs, b[5:]...)
			break
		}
		hs = append(hs, b[5:5+n]...)
		b = b[5+n:]
		if len(hs) >= 4 && len(hs) >= 4+(int(hs[1])<<16|int(hs[2])<<8|int(hs[3])) {
			break
		}
	}
	if len(hs) < 4 {
		return nil, errNeedMore
	}
	if hs[0] != 1 {
		return nil, errNotHello
	}
	n := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
	if 4+n > maxHello {
		return nil, errNotHello
	}
	if len(hs) < 4+n {
		return nil, errNeedMore
	}
	return hs[4 : 4+n], nil
}

// reader walks a byte string; any read past its end sets bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	if b := r.bytes(1); b != nil {
		return int(b[0])
	}
	return 0
}

func (r *reader) u16() int {
	if b := r.bytes(2); b != nil {
		return int(b[0])<<8 | int(b[1])
	}
	return 0
}

// vec reads a vector with an n-byte length prefix (n is 1 or 2).
func (r *reader) vec(n int) *reader {
	l := r.u8()
	if n == 2 {
		l = l<<8 | r.u8()
	}
	return &reader{b: r.bytes(l), bad: r.bad}
}

// u16s reads a list of 16-bit values, GREASE removed.
func (r *reader) u16s() []uint16 {
	var out []uint16
	for len(r.b) >= 2 && !r.bad {
		if v := uint16(r.u16()); !isGREASE(v) {
			out = append(out, v)
		}
	}
	if len(r.b) != 0 {
		r.bad = true
	}
	return out
}

// parseClientHello parses the TLS records at the start of a connection.
// It returns errNeedMore while the ClientHello is incomplete (up to
// maxHello bytes) and errNotHello for anything else.
func parseClientHello(b []byte) (*clientHello, error) {
	body, err := handshakeBytes(b)
	if err != nil {
		return nil, err
	}
	r := &reader{b: body}
	ch := &clientHello{legacyVersion: uint16(r.u16())}
	r.bytes(32)    // random
	r.vec(1)       // session id
	cs := r.vec(2) // cipher suites
	ch.ciphers = cs.u16s()
	r.vec(1) // compression methods
	if r.bad || cs.bad {
		return nil, errNotHello
	}
	if len(r.b) == 0 {
		return ch, nil // no extensions
	}
	exts := r.vec(2)
	for len(exts.b) > 0 && !exts.bad {
		typ := uint16(exts.u16())
		data := exts.vec(2)
		if exts.bad {
			break
		}
		if isGREASE(typ) {
			continue
		}
		ch.extensions = append(ch.extensions, typ)
		switch typ {
		case 0: // server_name
			list := data.vec(2)
			for len(list.b) > 0 && !list.bad {
				kind := list.u8()
				name := list.vec(2)
				if kind == 0 && ch.sni == "" && !name.bad {
					ch.sni = string(name.b)
				}
			}
		case 16: // application_layer_protocol_negotiation
			list := data.vec(2)
			for len(list.b) > 0 && !list.bad {
				if p := list.vec(1); !p.bad && len(p.b) > 0 {
					ch.alpn = append(ch.alpn, string(p.b))
				}
			}
		case 43: // supported_versions
			ch.versions = data.vec(1).u16s()
		case 13: // signature_algorithms
			ch.sigAlgs = data.vec(2).u16s()
		}
	}
	if r.bad || exts.bad {
		return nil, errNotHello
	}
	return ch, nil
}

// version is the highest version offered.
func (ch *clientHello) version() uint16 {
	v := ch.legacyVersion
	if len(ch.versions) > 0 {
		v = slices.Max(ch.versions)
	}
	return v
}

// versionName is a version as the contact record's tls.version shows it.
func versionName(v uint16) string {
	switch v {
	case 0x0304:
		return "1.3"
	case 0x0303:
		return "1.2"
	case 0x0302:
		return "1.1"
	case 0x0301:
		return "1.0"
	case 0x0300:
		return "ssl3"
	}
	return "0x" + strconv.FormatUint(uint64(v), 16)
}

// ja4 is the JA4 fingerprint (FoxIO, github.com/FoxIO-LLC/ja4,
// technical_details/JA4.md) of a ClientHello seen over TCP:
// t<version><d|i><ciphers, 2 digits><extensions, 2 digits><alpn>_<b>_<c>,
// b and c the first 12 hex digits of SHA-256 over the sorted cipher list,
// and over the sorted extension list without SNI and ALPN followed by "_"
// and the signature algorithms in order. GREASE values never count.
func (ch *clientHello) ja4() string {
	var sb strings.Builder
	sb.WriteByte('t')
	switch ch.version() {
	case 0x0304:
		sb.WriteString("13")
	case 0x0303:
		sb.WriteString("12")
	case 0x0302:
		sb.WriteString("11")
	case 0x0301:
		sb.WriteString("10")
	case 0x0300:
		sb.WriteString("s3")
	case 0x0002:
		sb.WriteString("s2")
	default:
		sb.WriteString("00")
	}
	if slices.Contains(ch.extensions, 0) {
		sb.WriteByte('d')
	} else {
		sb.WriteByte('i')
	}
	sb.WriteString(count2(len(ch.ciphers)))
	sb.WriteString(count2(len(ch.extensions)))
	sb.WriteString(alpnChars(ch.alpn))
	sb.WriteByte('_')
	sb.WriteString(hash12(hexList(slices.Sorted(slices.Values(ch.ciphers)))))
	sb.WriteByte('_')
	var exts []uint16
	for _, e := range ch.extensions {
		if e != 0 && e != 16 {
			exts = append(exts, e)
		}
	}
	slices.Sort(exts)
	c := hexList(exts)
	if len(ch.sigAlgs) > 0 {
		c += "_" + hexList(ch.sigAlgs)
	}
	if len(ch.extensions) == 0 {
		c = ""
	}
	sb.WriteString(hash12(c))
	return sb.String()
}

func count2(n int) string {
	n = min(n, 99)
	return string([]byte{byte('0' + n/10), byte('0' + n%10)})
}

// alpnChars is the first and last character of the first ALPN value; the
// first and last hex digit of it when either is not alphanumeric; "00"
// without ALPN.
func alpnChars(alpn []string) string {
	if len(alpn) == 0 || alpn[0] == "" {
		return "00"
	}
	p := alpn[0]
	first, last := p[0], p[len(p)-1]
	if !isAlnum(first) || !isAlnum(last) {
		h := hex.EncodeToString([]byte(p))
		return string([]byte{h[0], h[len(h)-1]})
	}
	return string([]byte{first, last})
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// hexList renders values as 4-digit lower-case hex, comma-separated.
func hexList(vs []uint16) string {
	b := make([]byte, 0, 5*len(vs))
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, hex.EncodeToString([]byte{byte(v >> 8), byte(v)})...)
	}
	return string(b)
}

// hash12 is the first 12 hex digits of SHA-256 of s; 12 zeros for "".
func hash12(s string) string {
	if s == "" {
		return "000000000000"
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}
