package resolver

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Errors of configuration.
var (
	// ErrConfig wraps every configuration problem.
	ErrConfig = errors.New("resolver: invalid config")
)

// Config is the DNS front's configuration (listen.*, access.*, cache.*).
type Config struct {
	Listen         []string      // listen.dns: host:port, UDP and TCP each
	TCPIdleTimeout time.Duration // listen.tcp_idle_timeout
	TCPMaxConns    int           // listen.tcp_max_conns
	// TCPMaxConnsPerClient is listen.tcp_max_conns_per_client: the most
	// TCP connections one client address holds; 0 = no limit but
	// TCPMaxConns.
	TCPMaxConnsPerClient int
	QueryTimeout         time.Duration // deadline of one query's upstream work (upstream_timeout)
	DrainTimeout         time.Duration // how long shutdown waits for queries in flight
	Access               AccessConfig
	Cache                CacheConfig
}

// AccessConfig keeps sinkd from being an open resolver.
type AccessConfig struct {
	Allow           []netip.Prefix // clients that may ask; others get REFUSED
	RateLimit       int            // queries per second per client address; 0 = off
	RateLimitExempt []netip.Prefix // never rate limited
}

// CacheConfig tunes the answer cache.
type CacheConfig struct {
	Size       int           // entries
	MinTTL     time.Duration // TTLs are raised to at least this
	MaxTTL     time.Duration // and lowered to at most this
	ServeStale bool          // RFC 8767
	Prefetch   bool          // refresh popular entries before they expire
}

// DefaultAllow are the client ranges allowed by default: loopback and the
// private, shared and link-local ranges a DHCP-fed network uses.
var DefaultAllow = []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
	"100.64.0.0/10", "fe80::/10", "fc00::/7"}

// DefaultConfig is the configuration of a sinkd started without a file.
func DefaultConfig() Config {
	return Config{
		Listen:               []string{"127.0.0.1:5353"},
		TCPIdleTimeout:       10 * time.Second,
		TCPMaxConns:          1000,
		TCPMaxConnsPerClient: 100,
		QueryTimeout:         2 * time.Second,
		DrainTimeout:         4 * time.Second,
		Access: AccessConfig{
			Allow:           MustPrefixes(DefaultAllow...),
			RateLimit:       1000,
			RateLimitExempt: MustPrefixes("127.0.0.0/8", "::1/128"),
		},
		Cache: CacheConfig{Size: 100000, MaxTTL: 86400 * time.Second, ServeStale: true, Prefetch: true},
	}
}

// MustPrefixes parses prefixes or addresses (as full-length prefixes); it
// panics on a bad one and is meant for literals.
func MustPrefixes(s ...string) []netip.Prefix {
	p, err := ParsePrefixes(s)
	if err != nil {
		panic(err)
	}
	return p
}

// ParsePrefixes parses CIDR prefixes or bare addresses.
func ParsePrefixes(s []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(s))
	for _, x := range s {
		p, err := netip.ParsePrefix(x)
		if err != nil {
			a, aerr := netip.ParseAddr(x)
			if aerr != nil {
				return nil, fmt.Errorf("%w: %q is neither an address nor a prefix", ErrConfig, x)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Validate checks c.
func (c *Config) Validate() error {
	if len(c.Listen) == 0 {
		return fmt.Errorf("%w: listen.dns is empty", ErrConfig)
	}
	for _, l := range c.Listen {
		if _, err := netip.ParseAddrPort(l); err != nil {
			return fmt.Errorf("%w: listen.dns %q: want address:port", ErrConfig, l)
		}
	}
	switch {
	case c.TCPIdleTimeout <= 0:
		return fmt.Errorf("%w: listen.tcp_idle_timeout must be positive", ErrConfig)
	case c.TCPMaxConns <= 0:
		return fmt.Errorf("%w: listen.tcp_max_conns must be positive", ErrConfig)
	case c.TCPMaxConnsPerClient < 0:
		return fmt.Errorf("%w: listen.tcp_max_conns_per_client must not be negative", ErrConfig)
	case c.QueryTimeout <= 0:
		return fmt.Errorf("%w: upstream_timeout must be positive", ErrConfig)
	case c.Access.RateLimit < 0:
		return fmt.Errorf("%w: access.rate_limit must not be negative", ErrConfig)
	case c.Cache.Size <= 0:
		return fmt.Errorf("%w: cache.size must be positive", ErrConfig)
	case c.Cache.MinTTL < 0 || c.Cache.MaxTTL <= 0 || c.Cache.MinTTL > c.Cache.MaxTTL:
		return fmt.Errorf("%w: need 0 <= cache.min_ttl <= cache.max_ttl, max_ttl > 0", ErrConfig)
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 4 * time.Second
	}
	return nil
}

// contains reports whether a is in one of ps.
func contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// rateLimiter counts each client's queries in one-second windows. It is
// sharded so concurrent readers rarely meet on a lock, and forgets idle
// clients so a spoofed-source flood cannot grow it without bound.
type rateLimiter struct {
	limit  int
	shards [64]rlShard
}

type rlShard struct {
	mu sync.Mutex
	m  map[netip.Addr]*rlWindow
	_  [40]byte // keep shards on separate cache lines
}

type rlWindow struct {
	sec   int64
	count int
}

// maxTracked bounds each shard; beyond it, stale windows are swept.
const maxTracked = 4096

func newRateLimiter(limit int) *rateLimiter {
	r := &rateLimiter{limit: limit}
	for i := range r.shards {
		r.shards[i].m = make(map[netip.Addr]*rlWindow)
	}
	return r
}

// allow counts one query from a at now and reports whether it is within the limit.
func (r *rateLimiter) allow(a netip.Addr, now time.Time) bool {
	b := a.As16()
	s := &r.shards[(b[15]^b[14]^b[3])%64]
	sec := now.Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.m[a]
	if w == nil {
		if len(s.m) >= maxTracked {
			for k, v := range s.m {
				if v.sec < sec-1 {
					delete(s.m, k)
				}
			}
			// Still full (a flood of fresh source addresses): forget half,
			// in map order, so the next sweep is far away and the cost per
			// query stays constant.
			for k := range s.m {
				if len(s.m) < maxTracked/2 {
					break
				}
				delete(s.m, k)
			}
		}
		w = &rlWindow{sec: sec}
		s.m[a] = w
	}
	if w.sec != sec {
		w.sec, w.count = sec, 0
	}
	w.count++
	return w.count <= r.limit
}
