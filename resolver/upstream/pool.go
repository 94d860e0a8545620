package upstream

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Errors returned by Exchange.
var (
	// ErrNoUpstream means no upstream gave a usable answer in time. The
	// error wrapping it names the last failure and, when the time ran out
	// or the caller gave up, wraps context.DeadlineExceeded or
	// context.Canceled too.
	ErrNoUpstream = errors.New("upstream: no upstream answered")
	// ErrBadQuery means the query cannot be forwarded: it does not have
	// exactly one question or does not pack.
	ErrBadQuery = errors.New("upstream: bad query")
	// ErrClosed means Close was called.
	ErrClosed = errors.New("upstream: pool closed")
)

// errAnswered is the cancellation cause of tries that lost the race.
var errAnswered = errors.New("another upstream answered")

// probeInterval is how often Run probes until ready, then probes the
// upstreams whose last request failed.
const probeInterval = 10 * time.Second

// Pool asks upstreams. Its methods are safe for concurrent use.
type Pool struct {
	log      *slog.Logger
	strategy string
	timeout  time.Duration
	ups      []*upstream  // in configuration order
	client   *http.Client // the Pool's own DoH client, or nil
	bufs     sync.Pool    // *[]byte of maxUDPReply+1 for UDP reads
	ready    atomic.Bool  // some upstream answered
	closed   atomic.Bool  // Close was called
	closeMu  sync.Mutex   // serializes Close
	probeQ   []byte       // packed ". NS" query for Run
	now      func() time.Time
	every    time.Duration // Run's probe interval
}

// upstream is one configured server.
type upstream struct {
	name string
	main transport
	tcp  *streamTransport // plain DNS only: TCP for truncated UDP replies
	h    health
	m    upstreamMetrics
}

// New builds a Pool; it starts no goroutines (Run does; Exchange runs its
// own and waits for them). cfg is validated (defaults filled in a copy);
// reg may be nil (metrics then go nowhere), log may be nil.
func New(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	probe := new(dns.Msg)
	probe.SetQuestion(".", dns.TypeNS)
	probeQ, err := probe.Pack()
	if err != nil {
		return nil, fmt.Errorf("upstream: pack probe: %w", err)
	}
	p := &Pool{
		log:      log.With("component", "upstream"),
		strategy: cfg.Strategy,
		timeout:  cfg.Timeout,
		probeQ:   probeQ,
		now:      time.Now,
		every:    probeInterval,
	}
	p.bufs.New = func() any { b := make([]byte, maxUDPReply+1); return &b }
	m := newMetrics(reg)
	d := &net.Dialer{Resolver: &net.Resolver{PreferGo: true}}
	for _, s := range cfg.Servers {
		srv, err := parseServer(s) // cannot fail after Validate
		if err != nil {
			return nil, err
		}
		u := &upstream{name: s, m: m.forUpstream(s)}
		switch srv.proto {
		case protoUDP:
			u.main = newUDP(srv.addr, d, &p.bufs)
			u.tcp = newStream(srv.addr, tcpDialer(d, srv.addr), cfg.Timeout)
		case protoTCP:
			u.main = newStream(srv.addr, tcpDialer(d, srv.addr), cfg.Timeout)
		case protoTLS:
			u.main = newStream(srv.addr, tlsDialer(d, srv.addr, tlsConfig(cfg.TLS, srv.serverName)), cfg.Timeout)
		case protoHTTPS:
			client := cfg.HTTPClient
			if client == nil {
				if p.client == nil {
					p.client = newHTTPClient(d, tlsConfig(cfg.TLS, ""))
				}
				client = p.client
			}
			u.main = &dohTransport{url: srv.url, client: client}
		}
		p.ups = append(p.ups, u)
	}
	return p, nil
}

// tlsConfig clones base (or starts empty) for one upstream.
func tlsConfig(base *tls.Config, serverName string) *tls.Config {
	c := &tls.Config{}
	if base != nil {
		c = base.Clone()
	}
	if serverName != "" {
		c.ServerName = serverName
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.ClientSessionCache == nil {
		c.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	}
	return c
}

// Names returns the configured server strings, in configuration order:
// the values of the metrics' upstream label.
func (p *Pool) Names() []string {
	names := make([]string, len(p.ups))
	for i, u := range p.ups {
		names[i] = u.name
	}
	return names
}

// Exchange asks the upstreams q and returns the first good reply (rcode
// NOERROR or NXDOMAIN). q must have one question; it is sent as given (its
// EDNS, flags and letter case included) except for the ID: random per
// UDP query, unique per connection on TCP and TLS, 0 for DoH. The reply's
// ID and question are q's. q is not modified.
//
// Strategy fastest asks the best-ranked upstream first. The next one is
// asked as well when the first fails (error, SERVFAIL, REFUSED, another
// rcode) or when its share of the remaining time has passed:
// min(max(3*srtt, 300ms), remaining/2), or remaining/2 while its RTT is
// unknown; the last upstream gets all that remains. Earlier tries keep
// running, so a late answer from them still wins. Strategy parallel asks
// the best two at once, then goes on like fastest. The whole exchange is
// bounded by ctx and Config.Timeout; when nothing good arrives, the error
// wraps ErrNoUpstream.
func (p *Pool) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	if len(q.Question) != 1 {
		return nil, fmt.Errorf("%w: %d questions", ErrBadQuery, len(q.Question))
	}
	query, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadQuery, err)
	}
	ctx, cancelTimeout := context.WithTimeout(ctx, p.timeout)
	defer cancelTimeout()
	ctx, cancel := context.WithCancelCause(ctx)

	order := p.rank()
	results := make(chan tryResult, len(order))
	var wg sync.WaitGroup
	// Every try ends before Exchange returns: the losers see errAnswered
	// (or the deadline) and stop promptly.
	defer wg.Wait()
	defer cancel(errAnswered)

	next, running := 0, 0
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var hedge <-chan time.Time // armed while an upstream is left to ask
	launch := func() {
		u := order[next]
		next++
		running++
		share := p.timeout
		if dl, ok := ctx.Deadline(); ok {
			share = time.Until(dl)
		}
		if next < len(order) {
			share = shareOf(u.h.rtt(), share)
		}
		start := p.now()
		hedgeAt := start.Add(share)
		wg.Go(func() { results <- p.try(ctx, u, query, start, hedgeAt) })
		if next < len(order) {
			timer.Reset(share)
			hedge = timer.C
		} else {
			timer.Stop()
			hedge = nil
		}
	}
	launch()
	if p.strategy == StrategyParallel && next < len(order) {
		launch()
	}

	var errs []error
	for running > 0 {
		select {
		case r := <-results:
			running--
			if r.result == resultOK {
				m := r.msg
				m.Id = q.Id
				m.Question = slices.Clone(q.Question)
				return m, nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", r.u.name, r.err))
			if next < len(order) && ctx.Err() == nil {
				launch()
			}
		case <-hedge:
			hedge = nil
			if ctx.Err() == nil {
				launch()
			}
		}
	}
	if err := expired(ctx); err != nil {
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoUpstream, errors.Join(errs...))
}

// shareOf is the time an upstream with smoothed RTT srtt (0 if unknown)
// is given alone when remaining is left and other upstreams could be
// asked after it.
func shareOf(srtt, remaining time.Duration) time.Duration {
	if srtt == 0 {
		return remaining / 2
	}
	return min(max(3*srtt, hedgeMin), remaining/2)
}

// rank returns the upstreams best first: not in backoff before in
// backoff, then by decayed smoothed RTT, then configuration order.
func (p *Pool) rank() []*upstream {
	now := p.now()
	type ranked struct {
		u       *upstream
		backoff bool
		score   float64
	}
	rs := make([]ranked, len(p.ups))
	for i, u := range p.ups {
		b, s := u.h.rank(now)
		rs[i] = ranked{u, b, s}
	}
	slices.SortStableFunc(rs, func(a, b ranked) int {
		if a.backoff != b.backoff {
			if a.backoff {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.score, b.score)
	})
	order := make([]*upstream, len(rs))
	for i, r := range rs {
		order[i] = r.u
	}
	return order
}

// tryResult is the outcome of asking one upstream.
type tryResult struct {
	u      *upstream
	msg    *dns.Msg
	result string // one of the result* label values
	err    error  // why it is not resultOK
}

// try asks u, retrying over TCP when a UDP reply is truncated, and
// records the outcome in metrics and u's health. hedgeAt is when u's share
// of the time ends: a try cancelled after it counts as a timeout.
func (p *Pool) try(ctx context.Context, u *upstream, query []byte, start, hedgeAt time.Time) tryResult {
	m, err := u.main.exchange(ctx, query)
	if err == nil && m.Truncated && u.tcp != nil {
		u.m.requests[resultTruncated].Inc()
		u.m.duration.Observe(p.now().Sub(start).Seconds())
		tcpStart := p.now()
		m, err = u.tcp.exchange(ctx, query)
		if err == nil {
			u.m.duration.Observe(p.now().Sub(tcpStart).Seconds())
		}
	} else if err == nil {
		u.m.duration.Observe(p.now().Sub(start).Seconds())
	}
	now := p.now()
	r := tryResult{u: u, msg: m, err: err}
	switch {
	case err == nil:
		switch m.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			r.result = resultOK
		case dns.RcodeServerFailure:
			r.result = resultServfail
		case dns.RcodeRefused:
			r.result = resultRefused
		default:
			r.result = resultRcode
		}
		if r.result != resultOK {
			r.err = fmt.Errorf("rcode %s", dns.RcodeToString[m.Rcode])
		}
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) && now.Before(hedgeAt):
		r.result = resultCanceled
	case ctx.Err() != nil || isTimeout(err):
		r.result = resultTimeout
	default:
		r.result = resultError
	}
	u.m.requests[r.result].Inc()
	srtt, changed := u.h.outcome(now, r.result, now.Sub(start))
	u.m.rtt.Set(srtt.Seconds())
	switch r.result {
	case resultCanceled:
	case resultTimeout, resultError:
		u.m.up.Set(0)
		if changed {
			p.log.Warn("upstream not answering", "upstream", u.name, "err", err)
		}
	default:
		u.m.up.Set(1)
		if r.result == resultOK {
			p.ready.Store(true)
		}
		if changed {
			p.log.Info("upstream answering again", "upstream", u.name)
		}
	}
	return r
}

// Ready reports whether some upstream has answered (NOERROR or NXDOMAIN),
// to Run's probe or to a query.
func (p *Pool) Ready() bool { return p.ready.Load() }

// Run probes the upstreams (". NS", all at once, each bounded by
// Config.Timeout) at start and every 10 s until one replies; after that it
// keeps probing, at the same interval, only the upstreams whose last
// request failed, so they come back without a client paying for it. It
// returns when ctx is done.
func (p *Pool) Run(ctx context.Context) {
	t := time.NewTicker(p.every)
	defer t.Stop()
	all := true
	for {
		p.probe(ctx, all)
		if all && !p.Ready() && ctx.Err() == nil {
			p.log.Warn("no upstream answered the readiness probe; answering SERVFAIL until one does",
				"upstreams", p.Names(), "retry", p.every)
		}
		if all && p.Ready() {
			p.log.Info("upstream ready")
			all = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe asks every upstream (all) or the failing ones ". NS" and waits.
func (p *Pool) probe(ctx context.Context, all bool) {
	if p.closed.Load() {
		return
	}
	var wg sync.WaitGroup
	for _, u := range p.ups {
		if !all && !u.h.failing() {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, p.timeout)
			defer cancel()
			start := p.now()
			p.try(ctx, u, p.probeQ, start, start.Add(p.timeout))
		})
	}
	wg.Wait()
}

// Close stops the transports' goroutines and closes their connections.
// Call it after Run and every Exchange have returned; later Exchanges
// fail with ErrClosed.
func (p *Pool) Close() error {
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.closed.Swap(true) {
		return nil
	}
	for _, u := range p.ups {
		u.main.close()
		if u.tcp != nil {
			u.tcp.close()
		}
	}
	if p.client != nil {
		p.client.CloseIdleConnections()
	}
	return nil
}
