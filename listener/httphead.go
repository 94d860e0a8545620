package listener

import (
	"bytes"

	"github.com/sinkd/sinkd/sinkhole"
)

// Caps on what an HTTP request head contributes to a contact record.
const (
	maxMethod = 16
	maxPath   = 1024
	maxHeader = 256
)

// parseHTTP reads an HTTP/1 request head at the start of b. It returns
// errNeedMore while b is a valid prefix without the blank line ending the
// head (final: no more bytes will come; what is there is used), and
// errNotHTTP when the first line is not a request line.
func parseHTTP(b []byte, final bool) (*sinkhole.ContactHTTP, error) {
	i := 0
	for i < len(b) && i <= maxMethod && 'A' <= b[i] && b[i] <= 'Z' {
		i++
	}
	switch {
	case i == len(b) && i <= maxMethod && !final:
		return nil, errNeedMore
	case i == 0 || i > maxMethod || i == len(b) || b[i] != ' ':
		return nil, errNotHTTP
	}
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		if !final {
			return nil, errNeedMore
		}
		nl = len(b)
	}
	line := bytes.TrimSuffix(b[:nl], []byte("\r"))
	target, proto, ok := bytes.Cut(line[i+1:], []byte(" "))
	if !ok && nl == len(b) {
		proto = []byte("HTTP/") // cut short: take the target as far as it goes
	}
	if !bytes.HasPrefix(proto, []byte("HTTP/")) || len(target) == 0 {
		return nil, errNotHTTP
	}
	h := &sinkhole.ContactHTTP{Method: string(line[:i]), Path: capString(target, maxPath)}
	rest := b[min(nl+1, len(b)):]
	for {
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			if !final {
				return nil, errNeedMore
			}
			nl = len(rest)
		}
		field := bytes.TrimSuffix(rest[:nl], []byte("\r"))
		if len(field) == 0 {
			if nl == len(rest) && !final {
				return nil, errNeedMore
			}
			return h, nil
		}
		if name, val, ok := bytes.Cut(field, []byte(":")); ok {
			val = bytes.TrimSpace(val)
			switch {
			case bytes.EqualFold(name, []byte("Host")) && h.Host == "":
				h.Host = capString(val, maxHeader)
			case bytes.EqualFold(name, []byte("User-Agent")) && h.UserAgent == "":
				h.UserAgent = capString(val, maxHeader)
			}
		}
		if nl >= len(rest) {
			return h, nil
		}
		rest = rest[nl+1:]
	}
}

func capString(b []byte, n int) string { return string(b[:min(len(b), n)]) }
