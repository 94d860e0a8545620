package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sinkd/sinkd/feeds"
	"github.com/sinkd/sinkd/resolver"
	"github.com/sinkd/sinkd/zones"
)

// FuzzConfig feeds arbitrary bytes to the config loader as a -config file.
// loadConfig must never panic; an error must be a config error naming the
// key (dotted, as in sinkd.yaml) or the line; a config that loads must pass
// every package's own validation and constructor unchanged, and load the
// same way twice.
func FuzzConfig(f *testing.F) {
	for _, name := range []string{"sinkd.yaml", "docker.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "configs", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("listen:\n  dns: [\"127.0.0.1:0\"]\n  tcp_max_conns: x\nbogus: 1\n"))
	f.Add([]byte("feeds:\n  - name: urlhaus\n    url: https://urlhaus.example/hostfile\n    interval: 1d12h\n    max_size: 64MiB\n    max_shrink: 50%\n    headers: {Authorization: \"Bearer ${SINKD_FUZZ_TOKEN}\"}\n"))
	f.Add([]byte("upstreams: [\"192.0.2.1\", \"[2001:db8::1]:53\", \"tcp://192.0.2.2:53\", \"tls://192.0.2.1:853#dns.example\", \"https://dns.example/dns-query\"]\nupstream_strategy: parallel\nupstream_timeout: 1500ms\n"))
	f.Add([]byte("upstream_strategy: bogus\nupstreams: []\n"))
	f.Add([]byte("listener:\n  addresses: [192.0.2.1]\n  tcp_ports: []\n  udp_ports: [53]\n  correlation_window: 10m\n  http_reply: empty\n"))
	keys := configKeys(reflect.TypeFor[fileConfig](), "")
	dir := f.TempDir()
	path := filepath.Join(dir, "sinkd.yaml")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		// hmac_key_file is read: keep it off devices and FIFOs that
		// never end.
		if fc, err := readConfigFile(path); err == nil && fc.Evidence.HMACKeyFile != "" {
			if fi, err := os.Stat(fc.Evidence.HMACKeyFile); err == nil && !fi.Mode().IsRegular() {
				t.Skip()
			}
		}
		c, err := loadConfig(path, "")
		if err != nil {
			checkConfigError(t, err, keys)
			return
		}
		checkLoaded(t, c)
		again, err := loadConfig(path, "")
		if err != nil {
			t.Fatalf("loaded once, then: %v", err)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("two loads differ:\n%+v\n%+v", c, again)
		}
	})
}

var lineRe = regexp.MustCompile(`\bline \d+\b`)

// checkConfigError: a config error names a key of sinkd.yaml or a line.
func checkConfigError(t *testing.T, err error, keys []string) {
	t.Helper()
	if !errors.Is(err, errConfig) {
		t.Fatalf("not a config error: %v", err)
	}
	msg := err.Error()
	if lineRe.MatchString(msg) {
		return
	}
	for _, k := range keys {
		// Packages prefix their own keys: "listener: capture_bytes".
		if strings.Contains(msg, k) || strings.Contains(msg, strings.Replace(k, ".", ": ", 1)) {
			return
		}
	}
	t.Fatalf("error names no key and no line: %v", err)
}

// checkLoaded: what loadConfig accepted, every package accepts as is.
func checkLoaded(t *testing.T, c *config) {
	t.Helper()
	rc := c.resolver
	if err := rc.Validate(); err != nil {
		t.Fatalf("loaded, but resolver: %v", err)
	}
	if _, err := resolver.New(rc, noUpstream{}, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("loaded, but resolver.New: %v", err)
	}
	// Whether resolv.conf lists servers must not decide whether the rest
	// of the upstream settings are valid.
	uc := c.upstream
	if len(uc.Servers) == 0 {
		uc.Servers = []string{"192.0.2.1"}
	}
	if err := uc.Validate(); err != nil {
		t.Fatalf("loaded, but upstream: %v", err)
	}
	ev := c.evidence
	if err := ev.Validate(); err != nil {
		t.Fatalf("loaded, but evidence: %v", err)
	}
	if c.listener != nil {
		lc := *c.listener
		if err := lc.Validate(); err != nil {
			t.Fatalf("loaded, but listener: %v", err)
		}
	}
	wc := zones.WatchConfig{Dir: c.zonesDir, Debounce: c.zonesDebounce, MaxFileSize: c.zonesMaxFileSize}
	if err := wc.Validate(); err != nil {
		t.Fatalf("loaded, but zones: %v", err)
	}
	if _, err := feeds.New(feeds.Config{ZonesDir: c.zonesDir, Feeds: c.feeds}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("loaded, but feeds: %v", err)
	}
	if !c.settings.IPv4.Is4() || !c.settings.IPv6.Is6() || c.settings.IPv6.Is4In6() {
		t.Fatalf("loaded sinkhole addresses %v %v", c.settings.IPv4, c.settings.IPv6)
	}
	if c.evidence.Dir == "" || c.zonesDir == "" {
		t.Fatalf("loaded with zones.dir %q, evidence.dir %q", c.zonesDir, c.evidence.Dir)
	}
	want := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[strings.ToLower(c.logLevel)]
	if log := newLogger(io.Discard, c.logLevel, c.logFormat); !log.Enabled(context.Background(), want) || log.Enabled(context.Background(), want-1) {
		t.Fatalf("log.level %q is not level %v", c.logLevel, want)
	}
}

// configKeys lists the dotted leaf keys of a config struct type; a list of
// sections is "feeds[" (errors about a feed name it by index).
func configKeys(typ reflect.Type, prefix string) []string {
	var out []string
	for i := range typ.NumField() {
		fld := typ.Field(i)
		name, _, _ := strings.Cut(fld.Tag.Get("yaml"), ",")
		if name == "" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		switch ft := fld.Type; {
		case ft.Kind() == reflect.Struct:
			out = append(out, configKeys(ft, key)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, key+"[")
		default:
			out = append(out, key)
		}
	}
	return out
}
