package resolver

import (
	"encoding/binary"
	"errors"
)

// Wire-level reading and writing of the few parts of a DNS message the fast
// path needs: the header, the single question, and the OPT record. Nothing
// here allocates.

// Header flag bits (RFC 1035 4.1.1, RFC 4035 3.2).
const (
	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagRA = 1 << 7
	flagAD = 1 << 5
	flagCD = 1 << 4

	headerLen  = 12
	maxNameLen = 255

	typeA     = 1
	typeNS    = 2
	typeCNAME = 5
	typeSOA   = 6
	typeHINFO = 13
	typeAAAA  = 28
	typeDNAME = 39
	typeOPT   = 41
	typeANY   = 255
	classIN   = 1

	rcodeSuccess  = 0
	rcodeFormErr  = 1
	rcodeServFail = 2
	rcodeNXDomain = 3
	rcodeNotImp   = 4
	rcodeRefused  = 5
	rcodeBadVers  = 16

	// ednsSize is the UDP payload size we advertise and the most we send
	// (DNS flag day 2020).
	ednsSize = 1232
	// plainUDPSize is the UDP limit for clients without EDNS.
	plainUDPSize = 512

	optDO = 1 << 15 // DO bit in the OPT TTL's low 16 bits

	edeCode      = 15 // EDNS option code of Extended DNS Errors (RFC 8914)
	edeStale     = 3  // EDE info-code "Stale Answer"
	edeBlocked   = 15 // EDE info-code "Blocked"
	optHeaderLen = 11 // root name, type, class, TTL, RDLENGTH
)

// Errors of wire parsing.
var (
	// errShort means the message ends inside a field.
	errShort = errors.New("resolver: message too short")
	// errName means a name in the question is malformed or compressed.
	errName = errors.New("resolver: bad name")
)

// query is what the fast path reads from a query message.
type query struct {
	id      uint16
	flags   uint16
	opcode  uint8
	qdcount uint16
	ancount uint16
	nscount uint16
	arcount uint16

	qname    []byte // wire name, lower-cased (a slice of the query's own name buffer)
	question []byte // the question section as received (client's letter case)
	qtype    uint16
	qclass   uint16

	edns       bool
	ednsVer    uint8
	do         bool
	udpSize    uint16
	badOPT     bool // OPT present but malformed, or more than one
	nameBuf    [maxNameLen]byte
	presBuf    [maxNameLen]byte
	presLen    int
	presLenSet bool
}

// parseHeader reads the 12-byte header.
func (q *query) parseHeader(m []byte) error {
	// The query struct is reused per reader: nothing of the previous
	// message may survive into this one's reply.
	q.question, q.qname, q.qtype, q.qclass = nil, nil, 0, 0
	q.edns, q.do, q.badOPT, q.udpSize, q.ednsVer, q.presLenSet = false, false, false, 0, 0, false
	if len(m) < headerLen {
		return errShort
	}
	q.id = binary.BigEndian.Uint16(m[0:])
	q.flags = binary.BigEndian.Uint16(m[2:])
	q.opcode = uint8(q.flags>>11) & 0xF
	q.qdcount = binary.BigEndian.Uint16(m[4:])
	q.ancount = binary.BigEndian.Uint16(m[6:])
	q.nscount = binary.BigEndian.Uint16(m[8:])
	q.arcount = binary.BigEndian.Uint16(m[10:])
	return nil
}

// parseQuestion reads the one question after the header (uncompressed name,
// as every sane client sends) and the OPT record if the additional section
// holds one. The header must have been parsed (which reset the fields
// set here).
func (q *query) parseQuestion(m []byte) error {
	off := headerLen
	n := 0
	for {
		if off >= len(m) {
			return errShort
		}
		l := int(m[off])
		if l&0xC0 != 0 {
			return errName // compression or extended label types in a question
		}
		if n+l+1 > maxNameLen {
			return errName
		}
		q.nameBuf[n] = byte(l)
		off++
		n++
		if l == 0 {
			break
		}
		if off+l > len(m) {
			return errShort
		}
		for i := 0; i < l; i++ {
			c := m[off+i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			q.nameBuf[n+i] = c
		}
		off += l
		n += l
	}
	if off+4 > len(m) {
		return errShort
	}
	q.qname = q.nameBuf[:n]
	q.qtype = binary.BigEndian.Uint16(m[off:])
	q.qclass = binary.BigEndian.Uint16(m[off+2:])
	off += 4
	q.question = m[headerLen:off]

	if q.ancount != 0 || q.nscount != 0 {
		// A query has no answer or authority records; skip them so the OPT
		// can still be found (some clients send odd things).
		var err error
		for i := 0; i < int(q.ancount)+int(q.nscount); i++ {
			if off, err = skipRR(m, off); err != nil {
				return err
			}
		}
	}
	for i := 0; i < int(q.arcount); i++ {
		start := off
		noff, err := skipName(m, off)
		if err != nil {
			return err
		}
		if noff+10 > len(m) {
			return errShort
		}
		rtype := binary.BigEndian.Uint16(m[noff:])
		rdlen := int(binary.BigEndian.Uint16(m[noff+8:]))
		end := noff + 10 + rdlen
		if end > len(m) {
			return errShort
		}
		if rtype == typeOPT {
			if q.edns || noff != start+1 || m[start] != 0 {
				q.badOPT = true // a second OPT, or an OPT not owned by the root
			}
			q.edns = true
			q.udpSize = binary.BigEndian.Uint16(m[noff+2:])
			q.ednsVer = m[noff+5]
			q.do = binary.BigEndian.Uint16(m[noff+6:])&optDO != 0
		}
		off = end
	}
	return nil
}

// presName returns the query name in lower-case presentation format without
// the final dot ("www.example.com"; "" for the root), as the policy wants it.
// Bytes that would be ambiguous ('.', '\\') or unprintable are escaped as
// \DDD, so no crafted label can look like a listed name.
func (q *query) presName() []byte {
	if q.presLenSet {
		return q.presBuf[:q.presLen]
	}
	n := appendPresName(q.presBuf[:0], q.qname)
	q.presLen, q.presLenSet = len(n), true
	return n
}

// appendPresName appends the presentation form of an uncompressed wire name,
// without the final dot, to dst. It never grows dst past its capacity in the
// common case; escapes may make it grow (and allocate) for hostile names.
func appendPresName(dst, wire []byte) []byte {
	for i := 0; i < len(wire); {
		l := int(wire[i])
		i++
		if l == 0 {
			break
		}
		if len(dst) > 0 {
			dst = append(dst, '.')
		}
		for _, c := range wire[i : i+l] {
			switch {
			case c == '.' || c == '\\':
				dst = append(dst, '\\', c)
			case c < '!' || c > '~':
				dst = append(dst, '\\', '0'+c/100, '0'+c/10%10, '0'+c%10)
			default:
				dst = append(dst, c)
			}
		}
		i += l
	}
	return dst
}

// skipName returns the offset just past the (possibly compressed) name at off.
func skipName(m []byte, off int) (int, error) {
	for {
		if off >= len(m) {
			return 0, errShort
		}
		l := int(m[off])
		switch l & 0xC0 {
		case 0:
			off++
			if l == 0 {
				return off, nil
			}
			off += l
		case 0xC0:
			if off+2 > len(m) {
				return 0, errShort
			}
			return off + 2, nil
		default:
			return 0, errName
		}
	}
}

// skipRR returns the offset just past the resource record at off.
func skipRR(m []byte, off int) (int, error) {
	off, err := skipName(m, off)
	if err != nil {
		return 0, err
	}
	if off+10 > len(m) {
		return 0, errShort
	}
	end := off + 10 + int(binary.BigEndian.Uint16(m[off+8:]))
	if end > len(m) {
		return 0, errShort
	}
	return end, nil
}

// appendHeader appends a header.
func appendHeader(b []byte, id, flags, qd, an, ns, ar uint16) []byte {
	return append(b, byte(id>>8), byte(id), byte(flags>>8), byte(flags),
		byte(qd>>8), byte(qd), byte(an>>8), byte(an), byte(ns>>8), byte(ns), byte(ar>>8), byte(ar))
}

// replyFlags are the header flags of a reply to q with rcode (low 4 bits).
func (q *query) replyFlags(rcode int) uint16 {
	return flagQR | uint16(q.opcode)<<11 | q.flags&(flagRD|flagCD) | flagRA | uint16(rcode&0xF)
}

// appendOPT appends our OPT record: advertised size, extended rcode bits,
// the DO bit echoed, and optionally one EDE option.
func appendOPT(b []byte, rcode int, do bool, ede int, text string) []byte {
	var flags uint16
	if do {
		flags = optDO
	}
	rdlen := 0
	if ede >= 0 {
		rdlen = 4 + 2 + len(text)
	}
	b = append(b, 0, byte(typeOPT>>8), byte(typeOPT&0xFF), byte(ednsSize>>8), byte(ednsSize&0xFF),
		byte(rcode>>4), 0, byte(flags>>8), byte(flags), byte(rdlen>>8), byte(rdlen))
	if ede >= 0 {
		l := 2 + len(text)
		b = append(b, 0, edeCode, byte(l>>8), byte(l), byte(ede>>8), byte(ede))
		b = append(b, text...)
	}
	return b
}

// appendError appends a reply carrying only the question (if parsed) and an
// rcode, with an OPT when the query had one.
func (q *query) appendError(b []byte, rcode int, withQuestion bool) []byte {
	return q.appendErrorEDE(b, rcode, withQuestion, -1, "")
}

// appendErrorEDE is appendError whose OPT, if the query had EDNS, carries
// EDE info-code ede (-1: none) with text.
func (q *query) appendErrorEDE(b []byte, rcode int, withQuestion bool, ede int, text string) []byte {
	var qd, ar uint16
	if withQuestion {
		qd = 1
	}
	if q.edns {
		ar = 1
	}
	b = appendHeader(b, q.id, q.replyFlags(rcode), qd, 0, 0, ar)
	if withQuestion {
		b = append(b, q.question...)
	}
	if q.edns {
		b = appendOPT(b, rcode, q.do, ede, text)
	}
	return b
}

// udpLimit is the largest UDP reply the client accepts.
func (q *query) udpLimit() int {
	if !q.edns || q.udpSize < plainUDPSize {
		return plainUDPSize
	}
	return min(int(q.udpSize), ednsSize)
}
