package resolver

import (
	"encoding/binary"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A socket bound to a wildcard address (0.0.0.0, ::) must answer from the
// address the query was sent to, or a multi-homed host's clients drop the
// reply. IP_PKTINFO / IPV6_RECVPKTINFO tell us that address per packet, and
// the same control message on the reply sets the source.

// oobSize holds one IPv6 or IPv4 packet-info control message.
var oobSize = unix.CmsgSpace(unix.SizeofInet6Pktinfo)

// enablePktinfo asks the kernel for each packet's destination address.
func enablePktinfo(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	v6 := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Is6()
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// pktDst returns the destination address from received control messages.
func pktDst(oob []byte) (netip.Addr, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return netip.Addr{}, false
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
			return netip.AddrFrom4([4]byte(data[8:12])), true
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { in6_addr addr; unsigned ifindex; }
			return netip.AddrFrom16([16]byte(data[0:16])).Unmap(), true
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return netip.Addr{}, false
}

// appendPktSrc appends a control message that sends from src.
func appendPktSrc(oob []byte, src netip.Addr, v6socket bool) []byte {
	start := len(oob)
	if src.Is4() && !v6socket {
		oob = append(oob, make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))...)
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[start]))
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		a := src.As4()
		copy(oob[start+unix.CmsgLen(0)+4:], a[:]) // spec_dst
		return oob
	}
	oob = append(oob, make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[start]))
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	a := src.As16()
	copy(oob[start+unix.CmsgLen(0):], a[:])
	binary.NativeEndian.PutUint32(oob[start+unix.CmsgLen(0)+16:], 0)
	return oob
}

// setRecvBuffer asks for a receive buffer of size bytes, beyond
// net.core.rmem_max where the process may (SO_RCVBUFFORCE needs
// CAP_NET_ADMIN), so a burst of queries waits in the kernel instead of being
// dropped while a reload or a GC takes the CPU for a moment.
func setRecvBuffer(c *net.UDPConn, size int) {
	rc, err := c.SyscallConn()
	if err == nil {
		var serr error
		_ = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		})
		if serr == nil {
			return
		}
	}
	_ = c.SetReadBuffer(size) // capped by net.core.rmem_max
}
