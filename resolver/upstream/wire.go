package upstream

import (
	"crypto/rand"
	"encoding/binary"
	"errors"

	"github.com/miekg/dns"
)

// headerLen is the size of the fixed DNS message header.
const headerLen = 12

// maxMsgLen is the largest DNS message (the TCP length prefix is 16 bits).
const maxMsgLen = 65535

// Reasons a reply is rejected; unexported because callers only see the
// effect: a UDP transport keeps reading, the others fail the try.
var (
	errShort         = errors.New("reply shorter than a header")
	errNotResponse   = errors.New("reply without the QR bit")
	errWrongID       = errors.New("reply with the wrong ID")
	errWrongOpcode   = errors.New("reply with the wrong opcode")
	errWrongQuestion = errors.New("reply with the wrong question")
	errCounts        = errors.New("reply holds fewer records than its header counts")
)

// randomID returns an unpredictable message ID (crypto/rand; Read never
// fails since Go 1.24).
func randomID() uint16 {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint16(b[:])
}

// questionEnd returns the offset just past the first question of a packed
// message (name, type, class), or -1 if it is malformed or compressed.
func questionEnd(msg []byte) int {
	off := headerLen
	for {
		if off >= len(msg) {
			return -1
		}
		l := int(msg[off])
		if l&0xC0 != 0 {
			return -1 // a pointer or reserved label type: never valid here
		}
		off++
		if l == 0 {
			break
		}
		off += l
		if off-headerLen > 255 {
			return -1
		}
	}
	if off+4 > len(msg) {
		return -1
	}
	return off + 4
}

// checkReply reports why reply does not answer query, or nil if it does:
// the reply must be a response with query's ID and opcode, and carry
// exactly query's (only) question, the name compared without regard to
// ASCII case. query is a well-formed packed query with one question; reply
// is untrusted.
func checkReply(query, reply []byte) error {
	if len(reply) < headerLen {
		return errShort
	}
	if reply[0] != query[0] || reply[1] != query[1] {
		return errWrongID
	}
	if reply[2]&0x80 == 0 {
		return errNotResponse
	}
	if (reply[2]>>3)&0xF != (query[2]>>3)&0xF {
		return errWrongOpcode
	}
	if binary.BigEndian.Uint16(reply[4:]) != 1 {
		return errWrongQuestion
	}
	end := questionEnd(query)
	if end < 0 || len(reply) < end ||
		!equalFoldASCII(query[headerLen:end-4], reply[headerLen:end-4]) || // name
		string(query[end-4:end]) != string(reply[end-4:end]) { // type and class
		return errWrongQuestion
	}
	return nil
}

// equalFoldASCII compares a and b with ASCII letters folded. Label length
// bytes are below 64 and so are never folded.
func equalFoldASCII(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// setID writes id into a packed message.
func setID(msg []byte, id uint16) { binary.BigEndian.PutUint16(msg, id) }

// unpackReply checks reply against query and unpacks it. A reply cut
// short is rejected, not taken for the records it still holds: miekg/dns
// accepts a message that ends where a record should start, which would make
// an answer cut after its question (a short TCP length prefix, a clipped
// datagram) an empty NOERROR. Only a truncated (TC) reply may hold fewer.
func unpackReply(query, reply []byte) (*dns.Msg, error) {
	if err := checkReply(query, reply); err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	if err := m.Unpack(reply); err != nil {
		return nil, err
	}
	if !m.Truncated && (len(m.Answer) != int(binary.BigEndian.Uint16(reply[6:])) ||
		len(m.Ns) != int(binary.BigEndian.Uint16(reply[8:])) ||
		len(m.Extra) != int(binary.BigEndian.Uint16(reply[10:]))) {
		return nil, errCounts
	}
	return m, nil
}
