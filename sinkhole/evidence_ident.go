package sinkhole

// Client identity for hit records: mac from the kernel's neighbour table
// (so only for on-link clients: a routed client's address is not in it),
// host from a DHCP leases file.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	// evNeighTTL is how long a read of the neighbour table is used.
	evNeighTTL = 5 * time.Second
	// evLeaseCheck is how often the leases file's mtime and size are
	// checked.
	evLeaseCheck = time.Second
	evMaxHostLen = 253
)

// evIdent looks up mac and host of a client. It runs in the writer
// goroutine only.
type evIdent struct {
	neigh  func(netip.Addr) (string, bool)
	leases *evLeases
}

func newEvIdent(neigh func(netip.Addr) (string, bool), leases string, now func() time.Time, log *slog.Logger) *evIdent {
	id := &evIdent{neigh: neigh}
	if id.neigh == nil {
		c := &evNeighCache{arpPath: "/proc/net/arp", dump6: evDumpNeigh6, now: now}
		id.neigh = c.lookup
	}
	if leases != "" {
		id.leases = &evLeases{path: leases, now: now, log: log}
	}
	return id
}

func (id *evIdent) lookup(a netip.Addr) (mac, host string) {
	if !a.IsValid() || a.IsLoopback() || a.IsUnspecified() {
		return "", ""
	}
	mac, _ = id.neigh(a)
	if id.leases != nil {
		if l, ok := id.leases.lookup(a); ok && (mac == "" || l.mac == "" || l.mac == mac) {
			host = l.host
		}
	}
	return mac, host
}

// evNeighCache caches the kernel's neighbour tables: IPv4 from
// /proc/net/arp, IPv6 from a netlink RTM_GETNEIGH dump.
type evNeighCache struct {
	arpPath  string
	dump6    func() ([]byte, error)
	now      func() time.Time
	v4, v6   map[netip.Addr]string
	at4, at6 time.Time
}

func (c *evNeighCache) lookup(a netip.Addr) (string, bool) {
	now := c.now()
	if a.Is4() {
		if c.v4 == nil || now.Sub(c.at4) >= evNeighTTL || now.Before(c.at4) {
			c.at4 = now
			c.v4 = nil
			if b, err := os.ReadFile(c.arpPath); err == nil {
				c.v4 = evParseARP(b)
			}
		}
		mac, ok := c.v4[a]
		return mac, ok
	}
	if c.v6 == nil || now.Sub(c.at6) >= evNeighTTL || now.Before(c.at6) {
		c.at6 = now
		c.v6 = nil
		if c.dump6 != nil {
			if b, err := c.dump6(); err == nil {
				c.v6 = evParseNeigh(b)
			}
		}
	}
	mac, ok := c.v6[a]
	return mac, ok
}

// evParseARP parses /proc/net/arp: complete entries (flag ATF_COM) only.
func evParseARP(b []byte) map[netip.Addr]string {
	m := map[netip.Addr]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil || !a.Is4() {
			continue
		}
		flags, err := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 32)
		if err != nil || flags&0x2 == 0 {
			continue
		}
		if mac := evMAC(f[3]); mac != "" {
			m[a] = mac
		}
	}
	return m
}

// evMAC normalizes a link-layer address: lower-case hex with colons; ""
// for an invalid or all-zero one.
func evMAC(s string) string {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return ""
	}
	zero := true
	for _, c := range hw {
		if c != 0 {
			zero = false
		}
	}
	if zero {
		return ""
	}
	return hw.String()
}

// Netlink (linux/neighbour.h, linux/netlink.h).
const (
	evNlmsgHdrLen   = 16
	evNdmsgLen      = 12
	evRTMNewNeigh   = 28
	evNlmsgDone     = 3
	evNDADst        = 1
	evNDALLAddr     = 2
	evNUDValid      = 0x02 | 0x04 | 0x08 | 0x10 | 0x80 // reachable, stale, delay, probe, permanent
	evNetlinkAlignT = 4
)

// evParseNeigh parses the answer to a netlink RTM_GETNEIGH dump: usable
// entries (reachable, stale, delay, probe, permanent) with an address and
// a link-layer address.
func evParseNeigh(b []byte) map[netip.Addr]string {
	m := map[netip.Addr]string{}
	ne := binary.NativeEndian
	for len(b) >= evNlmsgHdrLen {
		n := int(ne.Uint32(b[0:4]))
		typ := ne.Uint16(b[4:6])
		if n < evNlmsgHdrLen || n > len(b) {
			return m
		}
		msg := b[evNlmsgHdrLen:n]
		b = b[min(evAlign(n), len(b)):]
		if typ == evNlmsgDone {
			return m
		}
		if typ != evRTMNewNeigh || len(msg) < evNdmsgLen {
			continue
		}
		state := ne.Uint16(msg[8:10])
		if state&evNUDValid == 0 {
			continue
		}
		var dst netip.Addr
		var ll []byte
		attrs := msg[evNdmsgLen:]
		for len(attrs) >= 4 {
			l := int(ne.Uint16(attrs[0:2]))
			t := ne.Uint16(attrs[2:4])
			if l < 4 || l > len(attrs) {
				break
			}
			v := attrs[4:l]
			switch t {
			case evNDADst:
				if a, ok := netip.AddrFromSlice(v); ok {
					dst = a.Unmap()
				}
			case evNDALLAddr:
				ll = v
			}
			attrs = attrs[min(evAlign(l), len(attrs)):]
		}
		if dst.IsValid() && len(ll) > 0 {
			if mac := evMAC(net.HardwareAddr(ll).String()); mac != "" {
				m[dst] = mac
			}
		}
	}
	return m
}

func evAlign(n int) int { return (n + evNetlinkAlignT - 1) &^ (evNetlinkAlignT - 1) }

// evLease is one DHCP lease.
type evLease struct {
	mac     string
	host    string
	expires time.Time // zero: never
}

// evLeases is a leases file, re-read when its mtime or size changes.
type evLeases struct {
	path    string
	now     func() time.Time
	log     *slog.Logger
	checked time.Time
	mtime   time.Time
	size    int64
	m       map[netip.Addr]evLease
}

func (l *evLeases) lookup(a netip.Addr) (evLease, bool) {
	now := l.now()
	if l.m == nil || now.Sub(l.checked) >= evLeaseCheck || now.Before(l.checked) {
		l.checked = now
		l.reload()
	}
	e, ok := l.m[a]
	if !ok || (!e.expires.IsZero() && e.expires.Before(now)) || e.host == "" {
		return evLease{}, false
	}
	return e, true
}

func (l *evLeases) reload() {
	st, err := os.Stat(l.path)
	if err != nil {
		if l.log != nil && (l.m == nil || l.size >= 0) {
			l.log.Warn("evidence: dhcp leases", "err", err)
		}
		l.m, l.size = map[netip.Addr]evLease{}, -1
		return
	}
	if l.m != nil && st.ModTime().Equal(l.mtime) && st.Size() == l.size {
		return
	}
	b, err := os.ReadFile(l.path)
	if err != nil {
		if l.log != nil {
			l.log.Warn("evidence: dhcp leases", "err", err)
		}
		return
	}
	m, _ := evParseLeases(b)
	l.m, l.mtime, l.size = m, st.ModTime(), st.Size()
}

// evParseLeases detects the format of a leases file (dnsmasq, ISC dhcpd,
// Kea CSV) and parses it. Later leases of an address replace earlier ones.
func evParseLeases(b []byte) (map[netip.Addr]evLease, string) {
	switch f := evLeaseFormat(b); f {
	case "kea":
		return evParseKea(b), f
	case "isc":
		return evParseISC(b), f
	default:
		return evParseDnsmasq(b), f
	}
}

func evLeaseFormat(b []byte) string {
	for line := range bytes.Lines(b) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if bytes.HasPrefix(line, []byte("address,")) {
			return "kea"
		}
		f := bytes.Fields(line)
		if string(f[0]) == "duid" {
			return "dnsmasq"
		}
		if _, err := strconv.ParseUint(string(f[0]), 10, 64); err == nil {
			return "dnsmasq"
		}
		return "isc"
	}
	return "dnsmasq"
}

// evParseDnsmasq parses dnsmasq.leases: "EXPIRY MAC IP HOST CLIENTID" (an
// IPv6 line has an IAID where IPv4 has the MAC; expiry 0 is never).
func evParseDnsmasq(b []byte) map[netip.Addr]evLease {
	m := map[netip.Addr]evLease{}
	for line := range bytes.Lines(b) {
		f := strings.Fields(string(line))
		if len(f) < 4 || f[0] == "duid" {
			continue
		}
		exp, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || exp < 0 {
			continue
		}
		a, err := netip.ParseAddr(f[2])
		if err != nil {
			continue
		}
		a = a.Unmap().WithZone("")
		var l evLease
		if a.Is4() {
			l.mac = evMAC(f[1])
		}
		if f[3] != "*" {
			l.host = evHost(f[3])
		}
		if exp > 0 {
			l.expires = time.Unix(exp, 0)
		}
		m[a] = l
	}
	return m
}

// evParseISC parses ISC dhcpd.leases (IPv4 "lease" blocks): active
// bindings with their "ends", "hardware ethernet" and "client-hostname".
func evParseISC(b []byte) map[netip.Addr]evLease {
	m := map[netip.Addr]evLease{}
	var cur evLease
	var addr netip.Addr
	in, active := false, false
	for raw := range bytes.Lines(b) {
		line := strings.TrimSpace(string(raw))
		switch {
		case !in && strings.HasPrefix(line, "lease ") && strings.HasSuffix(line, "{"):
			a, err := netip.ParseAddr(strings.TrimSpace(strings.TrimSuffix(line[len("lease "):], "{")))
			if err != nil {
				continue
			}
			addr, cur, in, active = a.Unmap(), evLease{}, true, true
		case !in:
		case line == "}":
			in = false
			if active {
				m[addr] = cur
			} else {
				delete(m, addr)
			}
		case strings.HasPrefix(line, "binding state "):
			active = strings.TrimSuffix(strings.TrimPrefix(line, "binding state "), ";") == "active"
		case strings.HasPrefix(line, "hardware ethernet "):
			cur.mac = evMAC(strings.TrimSuffix(strings.TrimPrefix(line, "hardware ethernet "), ";"))
		case strings.HasPrefix(line, "client-hostname "):
			cur.host = evHost(evISCString(strings.TrimPrefix(line, "client-hostname ")))
		case strings.HasPrefix(line, "ends "):
			cur.expires = evISCTime(strings.TrimSuffix(strings.TrimPrefix(line, "ends "), ";"))
		}
	}
	return m
}

// evISCString unquotes a dhcpd.leases string: "..." with \" \\ and \ooo.
func evISCString(s string) string {
	s = strings.TrimSuffix(strings.TrimSpace(s), ";")
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return ""
	}
	s = s[1 : len(s)-1]
	var out []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			out = append(out, c)
			continue
		}
		i++
		if i+2 < len(s) && evIsOctal(s[i]) && evIsOctal(s[i+1]) && evIsOctal(s[i+2]) {
			out = append(out, (s[i]-'0')<<6|(s[i+1]-'0')<<3|(s[i+2]-'0'))
			i += 2
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
}

func evIsOctal(c byte) bool { return '0' <= c && c <= '7' }

// evISCTime parses an "ends" value: "W YYYY/MM/DD HH:MM:SS" (UTC), "never"
// (the zero time) or "epoch N".
func evISCTime(s string) time.Time {
	s, _, _ = strings.Cut(s, "#")
	f := strings.Fields(s)
	switch {
	case len(f) >= 2 && f[0] == "epoch":
		if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
			return time.Unix(n, 0)
		}
	case len(f) >= 3:
		if t, err := time.Parse("2006/01/02 15:04:05", f[1]+" "+f[2]); err == nil {
			return t
		}
	}
	return time.Time{}
}

// evParseKea parses Kea's lease4.csv or lease6.csv by their header row.
// Leases in state 1 (declined) or 2 (expired-reclaimed) are dropped.
func evParseKea(b []byte) map[netip.Addr]evLease {
	m := map[netip.Addr]evLease{}
	r := csv.NewReader(bytes.NewReader(b))
	r.FieldsPerRecord = -1
	r.LazyQuotes = true
	r.ReuseRecord = true
	col := map[string]int{}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				continue
			}
			break
		}
		if len(col) == 0 {
			for i, name := range rec {
				col[strings.TrimSpace(name)] = i
			}
			if _, ok := col["address"]; !ok {
				return m
			}
			continue
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(rec) {
				return strings.ReplaceAll(rec[i], "&#x2c", ",")
			}
			return ""
		}
		a, err := netip.ParseAddr(get("address"))
		if err != nil {
			continue
		}
		a = a.Unmap().WithZone("")
		if st := get("state"); st == "1" || st == "2" {
			delete(m, a)
			continue
		}
		l := evLease{mac: evMAC(get("hwaddr")), host: evHost(get("hostname"))}
		if exp, err := strconv.ParseInt(get("expire"), 10, 64); err == nil && exp > 0 {
			l.expires = time.Unix(exp, 0)
		}
		m[a] = l
	}
	return m
}

// evHost cleans a client-supplied host name: trimmed, lower-case, no final
// dot, at most 253 bytes, control characters dropped.
func evHost(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(s, ".")
	if len(s) > evMaxHostLen {
		s = s[:evMaxHostLen]
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	return strings.ToLower(s)
}
