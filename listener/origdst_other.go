//go:build !linux

package listener

import (
	"net"
	"net/netip"
)

// originalDst needs Linux conntrack; elsewhere the local address is used.
func originalDst(*net.TCPConn) (netip.AddrPort, bool) { return netip.AddrPort{}, false }
