package upstream

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// STUB: signatures are the contract with package resolver; bodies are
// placeholders.

// Errors returned by Exchange.
var (
	// ErrNoUpstream means no upstream gave a usable answer in time.
	ErrNoUpstream = errors.New("upstream: no upstream answered")
)

// Config selects and tunes the upstreams.
type Config struct {
	Servers  []string      // "1.2.3.4", "1.2.3.4:53", "tcp://h:p", "tls://h:853#name", "https://h/dns-query"
	Strategy string        // "fastest" (default) or "parallel"
	Timeout  time.Duration // per query, default 2s
}

// Validate checks the config and fills defaults.
func (c *Config) Validate() error { return nil }

// Pool asks upstreams.
type Pool struct{}

// New builds a Pool; it starts no goroutines (Run does).
func New(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Pool, error) {
	return &Pool{}, nil
}

// Exchange asks the upstreams q and returns the first good reply. The reply's
// ID and question match q's.
func (p *Pool) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	return nil, ErrNoUpstream
}

// Ready reports whether some upstream has answered.
func (p *Pool) Ready() bool { return false }

// Run probes the upstreams (". NS") at start and every 10 s until one replies,
// and returns when ctx is done.
func (p *Pool) Run(ctx context.Context) {}

// Close releases idle connections.
func (p *Pool) Close() error { return nil }
