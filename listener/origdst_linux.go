package listener

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (IPv4, SOL_IP) and IP6T_SO_ORIGINAL_DST
// (IPv6, SOL_IPV6): both 80.
const soOriginalDst = 80

// originalDst returns the destination a connection had before a DNAT rule
// rewrote it; ok is false without a conntrack entry.
func originalDst(c *net.TCPConn) (netip.AddrPort, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false
	}
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	var dst netip.AddrPort
	var ok bool
	_ = raw.Control(func(fd uintptr) {
		if local.Addr().Is4() || local.Addr().Is4In6() {
			// sockaddr_in arrives in the 16 bytes of an ipv6_mreq.
			m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, soOriginalDst)
			if err != nil {
				return
			}
			a := netip.AddrFrom4([4]byte(m.Multiaddr[4:8]))
			dst, ok = netip.AddrPortFrom(a, uint16(m.Multiaddr[2])<<8|uint16(m.Multiaddr[3])), true
			return
		}
		// sockaddr_in6 arrives in the 32 bytes of an ip6_mtuinfo.
		mi, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, soOriginalDst)
		if err != nil {
			return
		}
		var p [2]byte // the port as stored: network byte order
		binary.NativeEndian.PutUint16(p[:], mi.Addr.Port)
		dst, ok = netip.AddrPortFrom(netip.AddrFrom16(mi.Addr.Addr), binary.BigEndian.Uint16(p[:])), true
	})
	return dst, ok
}
