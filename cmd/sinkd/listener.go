package main

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sinkd/sinkd/listener"
	"github.com/sinkd/sinkd/sinkhole"
)

// listenerFile is the listener: section of sinkd.yaml (DESIGN.md "Details
// ... Listener"); unset keys take the defaults.
type listenerFile struct {
	Addresses         []string  `yaml:"addresses"`
	TCPPorts          *[]uint16 `yaml:"tcp_ports"`
	UDPPorts          []uint16  `yaml:"udp_ports"`
	CaptureBytes      int       `yaml:"capture_bytes"`
	IdleTimeout       duration  `yaml:"idle_timeout"`
	MaxConns          int       `yaml:"max_conns"`
	CorrelationWindow duration  `yaml:"correlation_window"`
	HTTPReply         string    `yaml:"http_reply"`
}

// buildListener validates listener:; nil when no address is set (off).
// It also sets the evidence log's correlation window.
func buildListener(f listenerFile, instance string, ev *sinkhole.LogConfig) (*listener.Config, error) {
	ev.CorrelationWindow = time.Duration(f.CorrelationWindow)
	if ev.CorrelationWindow < 0 {
		return nil, fmt.Errorf("%w: listener.correlation_window %v: want >= 0", errConfig, ev.CorrelationWindow)
	}
	if len(f.Addresses) == 0 {
		return nil, nil
	}
	c := &listener.Config{TCPPorts: listener.DefaultTCPPorts(), UDPPorts: f.UDPPorts,
		CaptureBytes: listener.DefaultCaptureBytes, IdleTimeout: listener.DefaultIdleTimeout,
		MaxConns: listener.DefaultMaxConns, HTTPReply: listener.ReplyPage, Instance: instance}
	for _, s := range f.Addresses {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%w: listener.addresses: %w", errConfig, err)
		}
		c.Addresses = append(c.Addresses, a)
	}
	if f.TCPPorts != nil {
		c.TCPPorts = *f.TCPPorts
	}
	if f.CaptureBytes != 0 {
		c.CaptureBytes = f.CaptureBytes
	}
	if f.IdleTimeout != 0 {
		c.IdleTimeout = time.Duration(f.IdleTimeout)
	}
	if f.MaxConns != 0 {
		c.MaxConns = f.MaxConns
	}
	if f.HTTPReply != "" {
		c.HTTPReply = f.HTTPReply
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	return c, nil
}
