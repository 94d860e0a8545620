package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sinkd/sinkd/feeds"
)

// runFeeds is `sinkd feeds [-config F] list|update [-force NAME]`.
func runFeeds(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("feeds", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sinkd feeds [-config FILE] list|update [-force NAME]")
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "", "YAML config file (default: built-in defaults)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	sub, rest := fs.Arg(0), fs.Args()[1:]
	sfs := flag.NewFlagSet("feeds "+sub, flag.ContinueOnError)
	sfs.SetOutput(stderr)
	force := ""
	switch sub {
	case "update":
		sfs.StringVar(&force, "force", "", "fetch feed `NAME` unconditionally and apply it even if it shrank (held back)")
	case "list":
	default:
		fmt.Fprintf(stderr, "sinkd feeds: unknown command %q (want list or update)\n", sub)
		return errUsage
	}
	if err := parseFlags(sfs, rest); err != nil {
		return err
	}
	if sfs.NArg() > 0 {
		fmt.Fprintf(stderr, "sinkd feeds %s: unexpected argument %q\n", sub, sfs.Arg(0))
		return errUsage
	}
	cfg, err := loadConfig(*cfgPath, "")
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.logLevel, cfg.logFormat)
	u, err := feeds.New(feeds.Config{ZonesDir: cfg.zonesDir, Feeds: cfg.feeds}, prometheus.NewRegistry(),
		log.With("component", "feeds"))
	if err != nil {
		return err
	}
	if force != "" && !slices.Contains(u.Names(), force) {
		fmt.Fprintf(stderr, "sinkd feeds update: -force %q: no such feed\n", force)
		return errUsage
	}
	if sub == "list" {
		return listFeeds(u, stdout)
	}
	failed := false
	for _, r := range u.UpdateAll(ctx, force) {
		line := fmt.Sprintf("%s: %s rules=%d bytes=%d ms=%d", r.Feed, r.Result, r.Rules, r.Bytes, r.Took.Milliseconds())
		if r.Err != nil {
			line += " error=" + fmt.Sprintf("%q", r.Err.Error())
			failed = true
		}
		fmt.Fprintln(stdout, line)
	}
	if failed {
		return errFailed
	}
	return nil
}

// listFeeds prints each configured feed's state.
func listFeeds(u *feeds.Updater, w io.Writer) error {
	st, err := feeds.ReadState(u.Dir())
	if err != nil {
		return err
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, n := range u.Names() {
		s := st[n]
		etag := s.ETag
		if etag == "" {
			etag = "-"
		}
		lastErr := "-"
		if s.LastError != "" {
			lastErr = fmt.Sprintf("%q", s.LastError)
		}
		fmt.Fprintf(w, "%s: last_check=%s last_success=%s rules=%d etag=%s held_back=%t last_error=%s\n",
			n, ts(s.LastCheck), ts(s.LastSuccess), s.Rules, etag, s.HeldBack, lastErr)
	}
	return nil
}
