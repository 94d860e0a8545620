//go:build !linux

package resolver

import (
	"net"
	"net/netip"
)

// Without packet info, a wildcard-bound socket answers from the kernel's
// choice of source address.

var oobSize = 0

func enablePktinfo(*net.UDPConn) error { return nil }

func pktDst([]byte) (netip.Addr, bool) { return netip.Addr{}, false }

func appendPktSrc(oob []byte, _ netip.Addr, _ bool) []byte { return oob }

func setRecvBuffer(c *net.UDPConn, size int) { _ = c.SetReadBuffer(size) }
