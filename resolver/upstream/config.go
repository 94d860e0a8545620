package upstream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Strategies accepted in Config.Strategy.
const (
	// StrategyFastest asks the upstream with the best smoothed RTT first and
	// moves on to the next on failure or when its share of the time is used.
	StrategyFastest = "fastest"
	// StrategyParallel asks the best two upstreams at once and takes the
	// first good answer.
	StrategyParallel = "parallel"
)

// DefaultTimeout is the per-query time budget when Config.Timeout is zero.
const DefaultTimeout = 2 * time.Second

// Config selects and tunes the upstreams.
type Config struct {
	// Servers lists the upstreams, in preference order for ties:
	//   1.2.3.4, 1.2.3.4:53, [2001:db8::1]:53, udp://IP[:port]  plain DNS over UDP, TCP when truncated
	//   tcp://host[:53]                                        plain DNS over TCP
	//   tls://host[:853][#servername]                          DNS over TLS (RFC 7858)
	//   https://host[:port]/path                               DNS over HTTPS (RFC 8484), POST
	// Hosts in URLs may be names, resolved by the Go resolver at dial time.
	Servers []string
	// Strategy is StrategyFastest (default when empty) or StrategyParallel.
	Strategy string
	// Timeout bounds one Exchange across all upstreams tried; default 2s.
	Timeout time.Duration

	// TLS, when set, is the base TLS client configuration for DoT and DoH
	// upstreams (for example RootCAs); it is cloned and ServerName is set
	// per upstream. Nil means the system roots.
	TLS *tls.Config
	// HTTPClient, when set, carries every DoH request instead of the
	// Pool's own HTTP/2-capable client; the Pool does not close it.
	HTTPClient *http.Client
}

// Validate checks the config and fills defaults: every server string must
// parse, the strategy must be known and the timeout must not be negative.
func (c *Config) Validate() error {
	if len(c.Servers) == 0 {
		return errors.New("upstream: no servers configured")
	}
	seen := make(map[string]bool, len(c.Servers))
	for _, s := range c.Servers {
		if _, err := parseServer(s); err != nil {
			return err
		}
		if seen[s] {
			return fmt.Errorf("upstream: server %q listed twice", s)
		}
		seen[s] = true
	}
	switch c.Strategy {
	case "":
		c.Strategy = StrategyFastest
	case StrategyFastest, StrategyParallel:
	default:
		return fmt.Errorf("upstream: unknown strategy %q (want %s or %s)", c.Strategy, StrategyFastest, StrategyParallel)
	}
	switch {
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	case c.Timeout < 0:
		return fmt.Errorf("upstream: timeout %v must be positive", c.Timeout)
	}
	return nil
}

// Protocols of a parsed server.
const (
	protoUDP   = "udp"
	protoTCP   = "tcp"
	protoTLS   = "tls"
	protoHTTPS = "https"
)

// server is one parsed entry of Config.Servers.
type server struct {
	name       string // as configured: the metric label
	proto      string // protoUDP, protoTCP, protoTLS or protoHTTPS
	addr       string // host:port to dial (udp, tcp, tls)
	serverName string // TLS server name (tls)
	url        string // request URL (https)
}

// parseServer parses one Config.Servers entry.
func parseServer(s string) (server, error) {
	srv, err := parseServerString(s)
	if err != nil {
		return server{}, fmt.Errorf("upstream: server %q: %w", s, err)
	}
	srv.name = s
	return srv, nil
}

func parseServerString(s string) (server, error) {
	if s == "" {
		return server{}, errors.New("empty")
	}
	if strings.TrimSpace(s) != s {
		return server{}, errors.New("surrounding white space")
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		// A bare address: an IP, optionally with a port.
		ap, err := parseIPPort(s, 53)
		if err != nil {
			return server{}, err
		}
		return server{proto: protoUDP, addr: ap}, nil
	}
	switch strings.ToLower(scheme) {
	case "udp":
		// An IP: a name would be looked up for every query.
		ap, err := parseIPPort(strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]"), 53)
		if err != nil {
			if ap, err = parseIPPort(rest, 53); err != nil {
				return server{}, err
			}
		}
		return server{proto: protoUDP, addr: ap}, nil
	case "tcp":
		hp, err := hostPort(rest, "53")
		if err != nil {
			return server{}, err
		}
		return server{proto: protoTCP, addr: hp}, nil
	case "tls":
		hostport, name, hasName := strings.Cut(rest, "#")
		hp, err := hostPort(hostport, "853")
		if err != nil {
			return server{}, err
		}
		if hasName {
			if name == "" {
				return server{}, errors.New("empty server name after #")
			}
		} else {
			name, _, _ = net.SplitHostPort(hp)
		}
		return server{proto: protoTLS, addr: hp, serverName: name}, nil
	case "https":
		u, err := url.Parse(s)
		if err != nil {
			return server{}, err
		}
		if u.Host == "" || u.Hostname() == "" {
			return server{}, errors.New("missing host")
		}
		if u.User != nil || u.Fragment != "" {
			return server{}, errors.New("user info and fragments are not allowed")
		}
		if p := u.Port(); p != "" {
			if _, err := strconv.ParseUint(p, 10, 16); err != nil {
				return server{}, fmt.Errorf("bad port %q", p)
			}
		}
		if u.Path == "" {
			u.Path = "/dns-query"
		}
		return server{proto: protoHTTPS, url: u.String()}, nil
	default:
		return server{}, fmt.Errorf("unknown scheme %q (want udp, tcp, tls or https)", scheme)
	}
}

// parseIPPort accepts "1.2.3.4", "1.2.3.4:53", "2001:db8::1" and
// "[2001:db8::1]:53", and returns host:port.
func parseIPPort(s string, port uint16) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return "", errors.New("port 0")
		}
		return ap.String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Errorf("not an IP address or IP:port (use tcp://, tls:// or https:// for names)")
	}
	return netip.AddrPortFrom(a, port).String(), nil
}

// hostPort checks "host[:port]" (host a name, an IPv4 address or a
// bracketed IPv6 address) and adds the default port.
func hostPort(s, defPort string) (string, error) {
	if strings.ContainsAny(s, "/?@ ") {
		return "", errors.New("unexpected path, query or user in address")
	}
	host, port := s, defPort
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	} else if strings.Contains(s, ":") {
		if _, err := netip.ParseAddr(s); err != nil {
			return "", err
		}
	}
	if host == "" {
		return "", errors.New("missing host")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("bad port %q", port)
	}
	if strings.Contains(host, ":") {
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("bad IPv6 address %q", host)
		}
	} else if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
		return "", fmt.Errorf("bad host name %q", host)
	}
	return net.JoinHostPort(host, port), nil
}

// validHostname reports whether s looks like a DNS host name (letters,
// digits, hyphens, underscores and dots; labels of 1..63 bytes).
func validHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			default:
				return false
			}
		}
	}
	return true
}
