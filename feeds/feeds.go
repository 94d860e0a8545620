package feeds

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures an Updater.
type Config struct {
	ZonesDir  string        // feeds are written to ZonesDir/feeds/
	Feeds     []Feed        // validated by New
	Client    *http.Client  // nil: a client with Timeout
	Timeout   time.Duration // per request, body included (default 2m)
	Retries   int           // retries after a transient failure (default 3; <0: none)
	RetryBase time.Duration // first backoff, doubled per retry (default 1s)
	Now       func() time.Time
}

// Report is the outcome of one feed's update.
type Report struct {
	Feed   string
	Result string // ResultOK, ResultNotModified, ResultFailed or ResultHeldBack
	Rules  int    // rules in the new file (held back: in the version not applied)
	Bytes  int64  // body bytes after Content-Encoding
	Took   time.Duration
	Err    error
}

// Updater fetches feeds into zones.dir/feeds/.
type Updater struct {
	cfg   Config
	dir   string
	feeds map[string]Feed
	order []string
	log   *slog.Logger
	m     *metrics
	mu    sync.Mutex // one update at a time: the state file is read-modify-write
}

// New validates cfg and builds an Updater; it starts nothing.
func New(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Updater, error) {
	u := &Updater{cfg: cfg, dir: filepath.Join(cfg.ZonesDir, "feeds"), feeds: map[string]Feed{}, log: log}
	for _, f := range cfg.Feeds {
		if err := f.Validate(); err != nil {
			return nil, err
		}
		if _, dup := u.feeds[f.Name]; dup {
			return nil, fmt.Errorf("%w %q: duplicate name", ErrConfig, f.Name)
		}
		u.feeds[f.Name] = f
		u.order = append(u.order, f.Name)
	}
	if u.cfg.Timeout <= 0 {
		u.cfg.Timeout = 2 * time.Minute
	}
	if u.cfg.Client == nil {
		u.cfg.Client = &http.Client{Timeout: u.cfg.Timeout}
	}
	if u.cfg.Retries == 0 {
		u.cfg.Retries = 3
	}
	if u.cfg.RetryBase <= 0 {
		u.cfg.RetryBase = time.Second
	}
	if u.cfg.Now == nil {
		u.cfg.Now = time.Now
	}
	u.m = newMetrics(reg, u.order)
	if err := u.seedMetrics(); err != nil {
		log.Warn("feeds: state", "err", err)
	}
	return u, nil
}

// Names returns the configured feed names in config order.
func (u *Updater) Names() []string { return append([]string(nil), u.order...) }

// Dir is the directory the feed files are written to.
func (u *Updater) Dir() string { return u.dir }

// Path returns the file a feed is written to.
func (u *Updater) Path(name string) string { return filepath.Join(u.dir, name+".txt") }

func (u *Updater) seedMetrics() error {
	st, err := ReadState(u.dir)
	if err != nil {
		return err
	}
	for _, n := range u.order {
		if s, ok := st[n]; ok {
			if !s.LastSuccess.IsZero() {
				u.m.lastSuccess.WithLabelValues(n).Set(float64(s.LastSuccess.Unix()))
			}
			u.m.rules.WithLabelValues(n).Set(float64(s.Rules))
		}
	}
	return nil
}

// UpdateAll updates every feed once, in config order. force names a feed
// ("" none) that is fetched unconditionally and applied even if it shrank.
func (u *Updater) UpdateAll(ctx context.Context, force string) []Report {
	out := make([]Report, 0, len(u.order))
	for _, n := range u.order {
		out = append(out, u.Update(ctx, n, n == force))
	}
	return out
}

// Update fetches one feed now. With force, no conditional headers are sent,
// a TAXII collection is read from its start, and the shrink guard is off.
func (u *Updater) Update(ctx context.Context, name string, force bool) Report {
	f, ok := u.feeds[name]
	if !ok {
		return Report{Feed: name, Result: ResultFailed, Err: fmt.Errorf("%w %q", ErrUnknownFeed, name)}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	start := u.cfg.Now()
	if err := os.MkdirAll(u.dir, 0o750); err != nil {
		return Report{Feed: name, Result: ResultFailed, Err: fmt.Errorf("feeds: %w", err)}
	}
	all, err := ReadState(u.dir)
	if err != nil {
		u.log.Warn("feeds: state unreadable, starting afresh", "err", err)
		all = map[string]State{}
	}
	st := all[name]
	if _, err := os.Stat(u.Path(name)); err != nil {
		// Without the file there is nothing a 304 could keep.
		st.ETag, st.LastModified, st.SHA256, st.AddedAfter, st.Rules = "", "", "", "", 0
	}
	rep, next := u.update(ctx, f, st, force)
	rep.Feed, rep.Took = name, u.cfg.Now().Sub(start)
	next.LastCheck = start
	switch rep.Result {
	case ResultOK, ResultNotModified:
		next.LastSuccess, next.LastError, next.HeldBack = start, "", false
		u.m.lastSuccess.WithLabelValues(name).Set(float64(start.Unix()))
		u.m.rules.WithLabelValues(name).Set(float64(next.Rules))
	case ResultHeldBack:
		next.HeldBack, next.LastError = true, rep.Err.Error()
	default:
		next.LastError = rep.Err.Error()
	}
	u.m.fetches.WithLabelValues(name, rep.Result).Inc()
	if err := writeState(u.dir, name, next); err != nil {
		u.log.Error("feeds: state", "feed", name, "err", err)
	}
	lg := u.log.With("feed", name, "result", rep.Result, "rules", rep.Rules, "bytes", rep.Bytes, "took", rep.Took)
	if rep.Err != nil {
		lg.Warn("feed update", "err", rep.Err)
	} else {
		lg.Info("feed update")
	}
	return rep
}

// transient marks an error worth a retry.
type transient struct{ error }

func (t transient) Unwrap() error { return t.error }

// update runs the fetch with retries and returns the report and the new
// state (the old one, with the error, on failure).
func (u *Updater) update(ctx context.Context, f Feed, st State, force bool) (Report, State) {
	var rep Report
	var next State
	var err error
	delay := u.cfg.RetryBase
	for attempt := 0; ; attempt++ {
		if f.Format == FormatTAXII {
			rep, next, err = u.fetchTAXII(ctx, f, st, force)
		} else {
			rep, next, err = u.fetchFile(ctx, f, st, force)
		}
		var tr transient
		if err == nil || !errors.As(err, &tr) || attempt >= u.cfg.Retries || ctx.Err() != nil {
			break
		}
		u.log.Debug("feed fetch failed, retrying", "feed", f.Name, "err", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		delay *= 2
	}
	if err != nil {
		if errors.Is(err, ErrHeldBack) {
			rep.Result = ResultHeldBack
		} else {
			rep.Result = ResultFailed
		}
		rep.Err = err
		return rep, st
	}
	return rep, next
}

// open starts a fetch: the body (after Content-Encoding), or nil for 304.
func (u *Updater) open(ctx context.Context, f Feed, rawURL string, st State, conditional bool, accept string) (io.ReadCloser, http.Header, error) {
	pu, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("feeds: url: %w", err)
	}
	if pu.Scheme == "file" {
		fh, err := os.Open(pu.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("feeds: %w", err)
		}
		return fh, http.Header{}, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("feeds: %w", err)
	}
	for k, v := range f.Headers {
		req.Header.Set(k, v)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	req.Header.Set("User-Agent", "sinkd-feeds")
	if conditional {
		if st.ETag != "" {
			req.Header.Set("If-None-Match", st.ETag)
		}
		if st.LastModified != "" {
			req.Header.Set("If-Modified-Since", st.LastModified)
		}
	}
	resp, err := u.cfg.Client.Do(req)
	if err != nil {
		return nil, nil, transient{fmt.Errorf("feeds: %w", err)}
	}
	switch {
	case resp.StatusCode == http.StatusNotModified && conditional:
		resp.Body.Close()
		return nil, resp.Header, nil
	case resp.StatusCode == http.StatusOK:
		return resp.Body, resp.Header, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	err = fmt.Errorf("%w %s", ErrStatus, resp.Status)
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		err = transient{err}
	}
	return nil, nil, err
}

// limited counts and hashes a body and fails it past max bytes.
type limited struct {
	r   io.Reader
	n   int64
	max int64
	h   hash.Hash
}

func (l *limited) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	l.h.Write(p[:n])
	if l.n > l.max {
		return n, ErrTooLarge
	}
	if err != nil && err != io.EOF {
		err = transient{err} // a truncated or reset body
	}
	return n, err
}

// fetchFile fetches an auto, csv or stix feed.
func (u *Updater) fetchFile(ctx context.Context, f Feed, st State, force bool) (Report, State, error) {
	rep := Report{}
	body, hdr, err := u.open(ctx, f, f.URL, st, !force, "")
	if err != nil {
		return rep, st, err
	}
	if body == nil {
		rep.Result, rep.Rules = ResultNotModified, st.Rules
		return rep, st, nil
	}
	defer body.Close()
	lr := &limited{r: body, max: f.MaxSize, h: sha256.New()}
	tmp, err := u.convert(f, func(lw *lineWriter) error {
		switch f.Format {
		case FormatCSV:
			return convertCSV(lr, f.Column, lw)
		case FormatSTIX:
			return convertSTIX(lr, u.cfg.Now(), lw)
		}
		return convertLines(lr, lw)
	})
	rep.Bytes = lr.n
	if err != nil {
		return rep, st, err
	}
	defer os.Remove(tmp.path)
	rep.Rules = tmp.rules
	sum := hex.EncodeToString(lr.h.Sum(nil))
	next := st
	next.ETag, next.LastModified = hdr.Get("ETag"), hdr.Get("Last-Modified")
	next.SHA256, next.Rules, next.Bytes = sum, tmp.rules, lr.n
	if sum == st.SHA256 && !force {
		rep.Result = ResultNotModified // same bytes: no rewrite, no reload
		return rep, next, nil
	}
	if err := u.apply(f, st, next, tmp, force); err != nil {
		return rep, st, err
	}
	rep.Result = ResultOK
	return rep, next, nil
}

// converted is a feed's rule lines in a hidden temp file.
type converted struct {
	path  string
	rules int
}

// convert runs fn with a lineWriter onto a hidden temp file in the feeds
// directory. A body with zero rules is ErrNoRules.
func (u *Updater) convert(f Feed, fn func(*lineWriter) error) (converted, error) {
	fh, err := os.CreateTemp(u.dir, "."+f.Name+"-*.part")
	if err != nil {
		return converted{}, fmt.Errorf("feeds: %w", err)
	}
	lw := &lineWriter{w: bufio.NewWriterSize(fh, 256<<10)}
	err = fn(lw)
	if err == nil {
		err = lw.w.Flush()
	}
	if cerr := fh.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("feeds: %w", cerr)
	}
	if err == nil && lw.rules == 0 {
		err = fmt.Errorf("%w (%d lines skipped)", ErrNoRules, lw.skipped)
	}
	if err != nil {
		os.Remove(fh.Name())
		return converted{}, err
	}
	return converted{path: fh.Name(), rules: lw.rules}, nil
}

// apply checks the shrink guard and moves a converted feed into place:
// header lines, then the rule lines, into a hidden temp file renamed over
// feeds/<name>.txt.
func (u *Updater) apply(f Feed, old, next State, c converted, force bool) error {
	if !force && f.MaxShrink > 0 && old.Rules > 0 && float64(c.rules) < float64(old.Rules)*(1-f.MaxShrink) {
		return fmt.Errorf("%w: rules %d -> %d (more than %.0f%% fewer); apply with `sinkd feeds update -force %s`",
			ErrHeldBack, old.Rules, c.rules, f.MaxShrink*100, f.Name)
	}
	src, err := os.Open(c.path)
	if err != nil {
		return fmt.Errorf("feeds: %w", err)
	}
	defer src.Close()
	out, err := os.CreateTemp(u.dir, "."+f.Name+"-*.tmp")
	if err != nil {
		return fmt.Errorf("feeds: %w", err)
	}
	defer os.Remove(out.Name())
	w := bufio.NewWriterSize(out, 256<<10)
	directive := "# sinkd:"
	if f.Action != "" {
		directive += " action=" + f.Action
	}
	if f.Category != "" {
		directive += " category=" + f.Category
	}
	fmt.Fprintf(w, "%s\n# feed: %s\n# url: %s\n# fetched: %s\n# etag: %s\n# last-modified: %s\n# sha256: %s\n# rules: %d\n",
		directive, f.Name, redactURL(f.URL), u.cfg.Now().UTC().Format(time.RFC3339), oneLine(next.ETag),
		oneLine(next.LastModified), next.SHA256, c.rules)
	if _, err := io.Copy(w, src); err != nil {
		out.Close()
		return fmt.Errorf("feeds: %w", err)
	}
	if err := w.Flush(); err != nil {
		out.Close()
		return fmt.Errorf("feeds: %w", err)
	}
	if err := out.Chmod(0o644); err != nil {
		out.Close()
		return fmt.Errorf("feeds: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("feeds: %w", err)
	}
	if err := os.Rename(out.Name(), u.Path(f.Name)); err != nil {
		return fmt.Errorf("feeds: %w", err)
	}
	return nil
}

// redactURL drops a URL's user info (credentials stay out of the file).
func redactURL(s string) string {
	pu, err := url.Parse(s)
	if err != nil || pu.User == nil {
		return oneLine(s)
	}
	pu.User = nil
	return oneLine(pu.String())
}

func oneLine(s string) string { return strings.NewReplacer("\n", " ", "\r", " ").Replace(s) }

// Run updates every feed on its interval, with jitter, until ctx is done.
// A feed checked less than an interval ago (by serve or `sinkd feeds`)
// waits for the rest of it.
func (u *Updater) Run(ctx context.Context) {
	st, err := ReadState(u.dir)
	if err != nil {
		st = map[string]State{}
	}
	var wg sync.WaitGroup
	for _, n := range u.order {
		f := u.feeds[n]
		first := time.Duration(0)
		if last := st[n].LastCheck; !last.IsZero() && st[n].LastError == "" {
			first = max(0, last.Add(f.Interval).Sub(u.cfg.Now()))
		}
		first += jitter(min(f.Interval/10, time.Second))
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(first)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				rep := u.Update(ctx, n, false)
				next := f.Interval
				if rep.Result == ResultFailed {
					next = min(f.Interval, 5*time.Minute) // retry a failed feed sooner
				}
				t.Reset(next - next/10 + jitter(next/5))
			}
		}()
	}
	wg.Wait()
}

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}
