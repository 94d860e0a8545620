package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sinkd/sinkd/feeds"
	"github.com/sinkd/sinkd/listener"
	"github.com/sinkd/sinkd/resolver"
	"github.com/sinkd/sinkd/resolver/upstream"
	"github.com/sinkd/sinkd/sinkhole"
	"github.com/sinkd/sinkd/zones"
)

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML config file (default: built-in defaults)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sinkd serve: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	cfg, err := loadConfig(*cfgPath, "/etc/resolv.conf")
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	return serve(ctx, cfg, log)
}

// app is what the listen.http handlers of a running sinkd see.
type app struct {
	cfg   *config
	log   *slog.Logger
	srv   *resolver.Server
	zones *zones.Watcher // the lists: live reload, SIGHUP, /api/v1/lists and /api/v1/reload
}

// serve runs sinkd until ctx is done.
func serve(ctx context.Context, cfg *config, log *slog.Logger) error {
	for _, d := range []string{cfg.zonesDir, cfg.evidence.Dir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var up resolver.Upstream
	var pool *upstream.Pool
	if len(cfg.upstream.Servers) == 0 {
		log.Warn("no upstreams configured or found in /etc/resolv.conf: every query that is not blocked gets SERVFAIL")
		up = noUpstream{}
	} else {
		var err error
		if pool, err = upstream.New(cfg.upstream, reg, log); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		defer pool.Close()
		up = pool
	}

	// The evidence log outlives the DNS server: Close (stop record, fsync)
	// runs after Serve has drained.
	evCfg := cfg.evidence
	evCfg.Version = version
	ev, err := sinkhole.OpenLog(evCfg, reg, log.With("component", "evidence"))
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	stopReason := "error"
	defer func() {
		if err := ev.Close(stopReason); err != nil {
			log.Error("evidence log", "err", err)
		}
	}()

	srv, err := resolver.New(cfg.resolver, up, ev, reg, log)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	// Every policy after the first is a reload record in the evidence chain,
	// written once the policy is in force; the first is the start record's.
	var startRecorded atomic.Bool
	apply := func(p *sinkhole.Policy, r zones.Reload) {
		srv.SetPolicy(p)
		if startRecorded.Load() {
			if err := ev.RecordReload(evidenceSources(r.Results), evidenceChanges(r.Changes)); err != nil {
				log.Error("evidence log: reload record", "err", err)
			}
		}
	}
	zw, err := zones.NewWatcher(zones.WatchConfig{Dir: cfg.zonesDir, Debounce: cfg.zonesDebounce, MaxFileSize: cfg.zonesMaxFileSize},
		cfg.settings, apply, reg, log.With("component", "zones"))
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	// The first policy is in place before the sockets open: the first
	// query already sees it.
	rl, err := zw.Reload(ctx)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := ev.RecordStart(evidenceSources(rl.Results)); err != nil {
		log.Error("evidence log: start record", "err", err)
	}
	startRecorded.Store(true)
	if err := srv.Listen(); err != nil {
		return err
	}

	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	if pool != nil {
		wg.Add(1)
		go func() { defer wg.Done(); pool.Run(ctx) }()
	}
	if len(cfg.feeds) > 0 {
		// Feeds reach the policy only as files in zones.dir/feeds/: the
		// watcher above picks up each one the updater writes.
		fu, err := feeds.New(feeds.Config{ZonesDir: cfg.zonesDir, Feeds: cfg.feeds}, reg, log.With("component", "feeds"))
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); fu.Run(ctx) }()
	}
	if cfg.listener != nil {
		// Stopped (with ctx) before the evidence log closes.
		sl, err := listener.New(*cfg.listener, ev, reg, log.With("component", "listener"))
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		wg.Go(func() { _ = sl.Serve(ctx) })
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := zw.Run(ctx); err != nil {
			log.Error("live reload is off: lists reload only on SIGHUP and POST /api/v1/reload", "err", err)
		}
	}()

	var hs *http.Server
	httpAddr := ""
	if cfg.httpAddr != "" {
		ln, err := net.Listen("tcp", cfg.httpAddr)
		if err != nil {
			return fmt.Errorf("serve: listen http %s: %w", cfg.httpAddr, err)
		}
		httpAddr = ln.Addr().String()
		a := &app{cfg: cfg, log: log, srv: srv, zones: zw}
		hs = &http.Server{Handler: requireToken(cfg.httpToken, a.mux(reg)), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server", "err", err)
			}
		}()
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading lists")
				if _, err := zw.Reload(ctx); err != nil && ctx.Err() == nil {
					log.Error("reload", "err", err)
				}
			}
		}
	}()

	log.Info("sinkd serving", "version", version, "dns", srv.Addrs(), "http", httpAddr,
		"upstreams", cfg.upstream.Servers, "zones", cfg.zonesDir)
	err = srv.Serve(ctx)
	stopReason = stopCause(ctx, err)
	if hs != nil {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		_ = hs.Shutdown(sctx)
		scancel()
	}
	log.Info("sinkd stopped")
	return err
}

// noUpstream stands in when no upstream is configured: sinkd still serves
// its policy and answers everything else SERVFAIL.
type noUpstream struct{}

func (noUpstream) Exchange(context.Context, *dns.Msg) (*dns.Msg, error) {
	return nil, upstream.ErrNoUpstream
}
func (noUpstream) Ready() bool { return false }

// evidenceSources lists the lists in force for start and reload records.
func evidenceSources(results []zones.Result) []sinkhole.ReloadSource {
	out := make([]sinkhole.ReloadSource, 0, len(results))
	for _, r := range results {
		out = append(out, sinkhole.ReloadSource{List: r.Source.Name, SHA256: r.Source.SHA256, Status: r.Status,
			Rules: r.Source.Rules.Total()})
	}
	return out
}

// evidenceChanges maps a reload's changes to the reload record's changed[]:
// lists whose version in force changed (a kept-last-good list did not).
func evidenceChanges(changes []zones.Change) []sinkhole.ReloadChange {
	out := make([]sinkhole.ReloadChange, 0, len(changes))
	for _, c := range changes {
		if c.OldSHA256 == c.NewSHA256 {
			continue
		}
		out = append(out, sinkhole.ReloadChange{List: c.List, OldSHA256: c.OldSHA256, NewSHA256: c.NewSHA256,
			Added: c.Added, Removed: c.Removed})
	}
	return out
}

// stopCause is the stop record's reason: the signal that ended ctx, or the
// error Serve returned.
func stopCause(ctx context.Context, err error) string {
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx).Error()
	case err != nil:
		return "error: " + err.Error()
	}
	return "stopped"
}
