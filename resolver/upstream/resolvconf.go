package upstream

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// FromResolvConf reads the nameserver lines of a resolv.conf file (the
// default upstreams) and returns them as Config.Servers entries
// ("192.0.2.1:53", "[2001:db8::1]:53"), in file order, without duplicates.
//
// Nameservers that would be sinkd itself are dropped, given sinkd's listen
// addresses self: one equal to a listen address (port 53), and a loopback
// one when some listen address on port 53 is a loopback or unspecified
// address (0.0.0.0, ::), which covers 127.0.0.53-style stubs answering for
// a loopback listener. IPv4-mapped addresses are unmapped first. Lines that
// do not parse are skipped, as the C library does. An empty result is not
// an error; Config.Validate rejects it.
func FromResolvConf(path string, self []netip.AddrPort) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	return resolvConfServers(b, self), nil
}

// resolvConfServers is FromResolvConf on the file's content.
func resolvConfServers(b []byte, self []netip.AddrPort) []string {
	var out []string
	seen := make(map[netip.AddrPort]bool)
	for _, a := range parseResolvConf(b) {
		ap := netip.AddrPortFrom(a, 53)
		if seen[ap] || isSelf(ap, self) {
			continue
		}
		seen[ap] = true
		out = append(out, ap.String())
	}
	return out
}

// parseResolvConf returns the addresses of the nameserver lines.
func parseResolvConf(b []byte) []netip.Addr {
	var addrs []netip.Addr
	for line := range strings.Lines(string(b)) {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		addrs = append(addrs, a.Unmap())
	}
	return addrs
}

// isSelf reports whether nameserver ns is (probably) one of sinkd's listen
// addresses.
func isSelf(ns netip.AddrPort, self []netip.AddrPort) bool {
	a := ns.Addr().WithZone("")
	for _, l := range self {
		la := l.Addr().Unmap().WithZone("")
		if l.Port() != ns.Port() {
			continue
		}
		if la == a {
			return true
		}
		if a.IsLoopback() && (la.IsLoopback() || la.IsUnspecified()) {
			return true
		}
		if la.IsUnspecified() && a.IsUnspecified() {
			return true
		}
	}
	return false
}
