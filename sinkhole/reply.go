package sinkhole

import (
	"encoding/binary"
	"net/netip"
)

// DNS wire constants used by AppendReply (RFC 1035, 6891, 8914).
const (
	typeA    = 1
	typeSOA  = 6
	typeAAAA = 28
	typeOPT  = 41
	classIN  = 1

	rcodeSuccess  = 0
	rcodeNXDomain = 3
	rcodeRefused  = 5

	optUDPSize = 1232 // the buffer size we announce (DNS flag day 2020)
	optCodeEDE = 15
	edeBlocked = 15

	maxEDEText = 255 // keeps a reply with a long list name well inside 1232 bytes
)

// soaRData is the synthesized SOA's fixed part: MNAME sinkd.invalid.,
// RNAME hostmaster.sinkd.invalid., serial 1, refresh 3600, retry 600,
// expire 86400; MINIMUM (the TTL) follows.
const soaRData = ("\x05sinkd\x07invalid\x00" +
	"\x0ahostmaster\x05sinkd\x07invalid\x00" +
	"\x00\x00\x00\x01" + "\x00\x00\x0e\x10" + "\x00\x00\x02\x58" + "\x00\x01\x51\x80")

// AppendReply appends the wire-format reply for a blocking verdict to dst
// and returns it. For ActionDrop, and for a verdict that does not block,
// it returns dst unchanged. It does not allocate when dst has room (a few
// hundred bytes plus the question and the list name).
//
// The reply echoes q's ID, RD and CD and its question bytes exactly (the
// client's letter case), sets QR and RA, and never AA. ActionSinkhole
// answers A with Settings.IPv4 and AAAA with Settings.IPv6 (TTL
// Settings.TTL, owner a pointer to the question name) and every other type
// with NODATA; ActionNXDomain and ActionNoData carry the SOA
// `<qname> TTL IN SOA sinkd.invalid. hostmaster.sinkd.invalid. 1 3600 600
// 86400 TTL` in the authority section; ActionRefuse is a bare REFUSED. If
// the query had EDNS, the reply has an OPT record (UDP size 1232, DO
// echoed) with EDE 15 "blocked by <list>"; otherwise none (RFC 6891).
func (p *Policy) AppendReply(dst []byte, q *Query, v *Verdict) []byte {
	if !v.Blocks() || v.Action == ActionDrop {
		return dst
	}
	hasQ := len(q.Question) > 0
	rcode := rcodeSuccess
	var an, ns int
	switch v.Action {
	case ActionSinkhole:
		switch q.QType {
		case typeA, typeAAAA:
			an = 1
		default:
			ns = 1
		}
	case ActionNXDomain:
		rcode, ns = rcodeNXDomain, 1
	case ActionNoData:
		ns = 1
	case ActionRefuse:
		rcode = rcodeRefused
	default:
		return dst
	}
	if !hasQ { // nothing to point at: no records
		an, ns = 0, 0
	}
	ar := 0
	if q.EDNS {
		ar = 1
	}

	flags := uint16(1<<15 | 1<<7 | rcode) // QR, RA
	if q.RD {
		flags |= 1 << 8
	}
	if q.CD {
		flags |= 1 << 4
	}
	qd := 0
	if hasQ {
		qd = 1
	}
	dst = binary.BigEndian.AppendUint16(dst, q.ID)
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = binary.BigEndian.AppendUint16(dst, uint16(qd))
	dst = binary.BigEndian.AppendUint16(dst, uint16(an))
	dst = binary.BigEndian.AppendUint16(dst, uint16(ns))
	dst = binary.BigEndian.AppendUint16(dst, uint16(ar))
	dst = append(dst, q.Question...)

	ttl := p.settings.TTL
	if an == 1 {
		if q.QType == typeA {
			a := p.settings.IPv4.Unmap()
			if !a.Is4() {
				a = netip.IPv4Unspecified()
			}
			dst = appendRRHeader(dst, typeA, ttl, 4)
			b := a.As4()
			dst = append(dst, b[:]...)
		} else {
			a := p.settings.IPv6
			if !a.Is6() {
				a = netip.IPv6Unspecified()
			}
			dst = appendRRHeader(dst, typeAAAA, ttl, 16)
			b := a.As16()
			dst = append(dst, b[:]...)
		}
	}
	if ns == 1 {
		dst = appendRRHeader(dst, typeSOA, ttl, uint16(len(soaRData)+4))
		dst = append(dst, soaRData...)
		dst = binary.BigEndian.AppendUint32(dst, ttl)
	}
	if q.EDNS {
		text := "blocked by "
		list := ""
		if v.Source != nil {
			list = v.Source.Name
		}
		n := min(len(text)+len(list), maxEDEText)
		dst = append(dst, 0) // root owner
		dst = binary.BigEndian.AppendUint16(dst, typeOPT)
		dst = binary.BigEndian.AppendUint16(dst, optUDPSize)
		var do uint16
		if q.DO {
			do = 1 << 15
		}
		dst = append(dst, 0, 0) // extended RCODE, version
		dst = binary.BigEndian.AppendUint16(dst, do)
		dst = binary.BigEndian.AppendUint16(dst, uint16(4+2+n)) // RDLENGTH
		dst = binary.BigEndian.AppendUint16(dst, optCodeEDE)
		dst = binary.BigEndian.AppendUint16(dst, uint16(2+n))
		dst = binary.BigEndian.AppendUint16(dst, edeBlocked)
		dst = append(dst, text...)
		dst = append(dst, list[:n-len(text)]...)
	}
	return dst
}

// appendRRHeader appends an IN record header owned by the question name
// (a compression pointer to offset 12).
func appendRRHeader(dst []byte, typ uint16, ttl uint32, rdlen uint16) []byte {
	dst = append(dst, 0xc0, 0x0c)
	dst = binary.BigEndian.AppendUint16(dst, typ)
	dst = binary.BigEndian.AppendUint16(dst, classIN)
	dst = binary.BigEndian.AppendUint32(dst, ttl)
	return binary.BigEndian.AppendUint16(dst, rdlen)
}
