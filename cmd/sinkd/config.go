package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/sinkd/sinkd/feeds"
	"github.com/sinkd/sinkd/listener"
	"github.com/sinkd/sinkd/resolver"
	"github.com/sinkd/sinkd/resolver/upstream"
	"github.com/sinkd/sinkd/sinkhole"
	"github.com/sinkd/sinkd/zones"
)

// fileConfig is the shape of sinkd.yaml. Dotted keys of DESIGN.md are nested
// maps here; every key is optional. cmd owns only this shape and the
// defaults: each package validates its own part.
type fileConfig struct {
	Instance string `yaml:"instance"`
	Listen   struct {
		DNS             []string `yaml:"dns"`
		HTTP            string   `yaml:"http"`
		HTTPToken       string   `yaml:"http_token"`
		TCPIdleTimeout  duration `yaml:"tcp_idle_timeout"`
		TCPMaxConns     int      `yaml:"tcp_max_conns"`
		TCPMaxPerClient int      `yaml:"tcp_max_conns_per_client"`
	} `yaml:"listen"`
	Upstreams        []string `yaml:"upstreams"`
	UpstreamStrategy string   `yaml:"upstream_strategy"`
	UpstreamTimeout  duration `yaml:"upstream_timeout"`
	Zones            struct {
		Dir         string   `yaml:"dir"`
		Debounce    duration `yaml:"debounce"`
		MaxFileSize size     `yaml:"max_file_size"`
	} `yaml:"zones"`
	Evidence struct {
		Dir           string   `yaml:"dir"`
		FsyncInterval duration `yaml:"fsync_interval"`
		SegmentSize   size     `yaml:"segment_size"`
		Retention     duration `yaml:"retention"`
		Queue         int      `yaml:"queue"`
		HMACKeyFile   string   `yaml:"hmac_key_file"`
		DHCPLeases    string   `yaml:"dhcp_leases"`
	} `yaml:"evidence"`
	Sinkhole struct {
		IPv4   string `yaml:"ipv4"`
		IPv6   string `yaml:"ipv6"`
		TTL    uint32 `yaml:"ttl"`
		Action string `yaml:"action"`
	} `yaml:"sinkhole"`
	Access struct {
		Allow           []string `yaml:"allow"`
		RateLimit       int      `yaml:"rate_limit"`
		RateLimitExempt []string `yaml:"rate_limit_exempt"`
	} `yaml:"access"`
	Cache struct {
		Size       int      `yaml:"size"`
		MinTTL     duration `yaml:"min_ttl"`
		MaxTTL     duration `yaml:"max_ttl"`
		ServeStale bool     `yaml:"serve_stale"`
		Prefetch   bool     `yaml:"prefetch"`
	} `yaml:"cache"`
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
	Feeds    []feedConfig `yaml:"feeds"`
	Listener listenerFile `yaml:"listener"`
}

// feedConfig is one entry of feeds:.
type feedConfig struct {
	Name      string            `yaml:"name"`
	URL       string            `yaml:"url"`
	Format    string            `yaml:"format"`
	Column    string            `yaml:"column"`
	Interval  duration          `yaml:"interval"`
	Action    string            `yaml:"action"`
	Category  string            `yaml:"category"`
	Headers   map[string]string `yaml:"headers"`
	MaxSize   size              `yaml:"max_size"`
	MaxShrink *percent          `yaml:"max_shrink"`
}

// percent is a YAML fraction: "50%", or a number (0.5; above 1 read as
// percent).
type percent float64

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *percent) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || v < 0 || (pct && v > 100) {
		return fmt.Errorf("line %d: invalid percentage %q (want e.g. 50%%)", n.Line, n.Value)
	}
	if pct || v > 1 {
		v /= 100
	}
	*p = percent(v)
	return nil
}

var envRe = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// buildFeeds turns feeds: into validated feeds.Feed values; ${ENV_VAR} in
// header values is expanded (a variable that is not set is an error).
func buildFeeds(in []feedConfig) ([]feeds.Feed, error) {
	out := make([]feeds.Feed, 0, len(in))
	seen := map[string]bool{}
	for i, fc := range in {
		f := feeds.Feed{Name: fc.Name, URL: fc.URL, Format: fc.Format, Column: fc.Column,
			Interval: time.Duration(fc.Interval), Action: fc.Action, Category: fc.Category,
			MaxSize: int64(fc.MaxSize), MaxShrink: feeds.DefaultMaxShrink}
		if fc.MaxShrink != nil {
			f.MaxShrink = float64(*fc.MaxShrink)
		}
		if len(fc.Headers) > 0 {
			f.Headers = make(map[string]string, len(fc.Headers))
		}
		for k, v := range fc.Headers {
			var missing []string
			f.Headers[k] = envRe.ReplaceAllStringFunc(v, func(m string) string {
				name := envRe.FindStringSubmatch(m)[1]
				val, ok := os.LookupEnv(name)
				if !ok {
					missing = append(missing, name)
				}
				return val
			})
			if len(missing) > 0 {
				return nil, fmt.Errorf("%w: feeds[%d] %q: header %s: environment variable %s is not set",
					errConfig, i, fc.Name, k, strings.Join(missing, ", "))
			}
		}
		if err := f.Validate(); err != nil {
			return nil, fmt.Errorf("%w: feeds[%d]: %w", errConfig, i, err)
		}
		if seen[f.Name] {
			return nil, fmt.Errorf("%w: feeds[%d]: name %q used twice", errConfig, i, f.Name)
		}
		seen[f.Name] = true
		out = append(out, f)
	}
	return out, nil
}

// duration is a YAML duration: Go syntax ("1.5s", "10m"), plus "d" for days
// ("7d", "1d12h"), or a bare number of seconds.
type duration time.Duration

var daysRe = regexp.MustCompile(`^(\d+)d(.*)$`)

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	var days time.Duration
	if m := daysRe.FindStringSubmatch(s); m != nil {
		n, err := strconv.Atoi(m[1])
		if err != nil {
			return 0, err
		}
		days = time.Duration(n) * 24 * time.Hour
		if s = m[2]; s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 10s, 5m, 7d)", s)
	}
	return days + d, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = duration(v)
	return nil
}

// size is a YAML size: bytes ("1048576") or KiB, MiB, GiB ("512KiB",
// "64MiB").
type size int64

var sizeRe = regexp.MustCompile(`^(\d+)\s*(KiB|MiB|GiB)?$`)

func parseSize(s string) (int64, error) {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("invalid size %q (want bytes or e.g. 512KiB, 64MiB, 1GiB)", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	shift := map[string]uint{"": 0, "KiB": 10, "MiB": 20, "GiB": 30}[m[2]]
	if err != nil || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n << shift, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (z *size) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*z = size(v)
	return nil
}

// config is the loaded, validated configuration, split by package.
type config struct {
	resolver  resolver.Config
	upstream  upstream.Config
	settings  sinkhole.Settings
	zonesDir  string
	httpAddr  string
	httpToken string // required on every endpoint but /healthz when set
	logLevel  string
	logFormat string

	// evidence configures the hit log (Version is set by serve).
	evidence sinkhole.LogConfig

	// feeds are the subscriptions written into zones.dir/feeds/.
	feeds []feeds.Feed

	// listener is the sinkhole listener; nil: off.
	listener *listener.Config

	// zonesDebounce is the quiet period after a change in zones.dir
	// before the lists reload.
	zonesDebounce time.Duration
	// zonesMaxFileSize is the largest list file read; larger ones fail
	// unread (keep-last-good).
	zonesMaxFileSize int64
}

// defaultFile is the configuration of a sinkd started without -config.
func defaultFile() fileConfig {
	var f fileConfig
	rc := resolver.DefaultConfig()
	f.Listen.DNS = rc.Listen
	f.Listen.HTTP = "127.0.0.1:8053"
	f.Listen.TCPIdleTimeout = duration(rc.TCPIdleTimeout)
	f.Listen.TCPMaxConns = rc.TCPMaxConns
	f.Listen.TCPMaxPerClient = rc.TCPMaxConnsPerClient
	f.UpstreamStrategy = "fastest"
	f.UpstreamTimeout = duration(2 * time.Second)
	f.Zones.Dir = "./zones.d"
	f.Zones.Debounce = duration(200 * time.Millisecond)
	f.Zones.MaxFileSize = size(zones.DefaultMaxFileSize)
	ev := sinkhole.DefaultLogConfig()
	f.Evidence.Dir = ev.Dir
	f.Evidence.FsyncInterval = duration(ev.FsyncInterval)
	f.Evidence.SegmentSize = size(ev.SegmentSize)
	f.Evidence.Retention = duration(ev.Retention)
	f.Evidence.Queue = ev.Queue
	f.Sinkhole.IPv4, f.Sinkhole.IPv6, f.Sinkhole.TTL, f.Sinkhole.Action = "0.0.0.0", "::", 60, "sinkhole"
	f.Access.Allow = resolver.DefaultAllow
	f.Access.RateLimit = 1000
	f.Access.RateLimitExempt = []string{"127.0.0.0/8", "::1/128"}
	f.Cache.Size = rc.Cache.Size
	f.Cache.MaxTTL = duration(rc.Cache.MaxTTL)
	f.Cache.ServeStale, f.Cache.Prefetch = true, true
	f.Log.Level, f.Log.Format = "info", "text"
	return f
}

// errConfig wraps every configuration error.
var errConfig = errors.New("config")

// loadConfig reads path (empty: defaults only) and validates the result.
// resolvConf is where default upstreams come from.
func loadConfig(path, resolvConf string) (*config, error) {
	f, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	return buildConfig(f, resolvConf)
}

// readConfigFile decodes path over the defaults (empty path: defaults).
func readConfigFile(path string) (fileConfig, error) {
	f := defaultFile()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return f, fmt.Errorf("%w: %w", errConfig, err)
		}
		if err := decodeStrict(b, &f); err != nil {
			return f, fmt.Errorf("%w: %s: %w", errConfig, path, err)
		}
	}
	return f, nil
}

// decodeStrict decodes YAML into f, rejecting unknown keys (the error names
// the key and its line).
func decodeStrict(b []byte, f *fileConfig) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	err := dec.Decode(f)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return withLine(b, err)
	}
	// yaml.v3 says "line 3: field bogus not found in type struct {...}";
	// users want the dotted key they wrote.
	var root yaml.Node
	_ = yaml.Unmarshal(b, &root)
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = m
		if g := unknownFieldRe.FindStringSubmatch(m); g != nil {
			line, _ := strconv.Atoi(g[1])
			key := g[2]
			if path := keyPath(&root, line, key, ""); path != "" {
				key = path
			}
			msgs[i] = fmt.Sprintf("line %d: unknown key %q", line, key)
		}
	}
	return errors.New(strings.Join(msgs, "; "))
}

var (
	hasLineRe       = regexp.MustCompile(`\bline \d+\b`)
	yamlLineRe      = regexp.MustCompile(`^yaml: line (\d+): `)
	unknownAnchorRe = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
)

// withLine adds the line to a YAML syntax error that has none: yaml.v3
// leaves it out for errors on the first line (its line 0), for unknown
// aliases, and for the reader's "control characters are not allowed" and
// "invalid leading UTF-8 octet".
func withLine(b []byte, err error) error {
	msg := err.Error()
	if hasLineRe.MatchString(msg) {
		return err
	}
	if line := badByteLine(b); line > 0 {
		return fmt.Errorf("line %d: %w", line, err)
	}
	if m := unknownAnchorRe.FindStringSubmatch(msg); m != nil {
		if i := bytes.Index(b, []byte("*"+m[1])); i >= 0 {
			return fmt.Errorf("line %d: %w", 1+bytes.Count(b[:i], []byte("\n")), err)
		}
	}
	// One line down, the same error has a line.
	var n yaml.Node
	err2 := yaml.Unmarshal(append([]byte("\n"), b...), &n)
	if err2 == nil {
		return err
	}
	m := yamlLineRe.FindStringSubmatch(err2.Error())
	if m == nil || "yaml: "+err2.Error()[len(m[0]):] != msg {
		return err
	}
	line, _ := strconv.Atoi(m[1])
	return fmt.Errorf("line %d: %w", line-1, err)
}

// badByteLine returns the line of the first character YAML refuses in a
// UTF-8 document (invalid UTF-8, or a control character other than tab and
// line breaks), or 0.
func badByteLine(b []byte) int {
	line := 1
	for i, r := range string(b) {
		switch {
		case r == utf8.RuneError && !bytes.HasPrefix(b[i:], []byte("\uFFFD")):
			return line
		case r == '\n':
			line++
		case r == '\t', r == '\r', r == 0x85, r == 0xFEFF && i == 0:
		case r < 0x20, r >= 0x7F && r < 0xA0, r >= 0xD800 && r < 0xE000, r == 0xFEFF, r == 0xFFFE, r == 0xFFFF:
			return line
		}
	}
	return 0
}

var unknownFieldRe = regexp.MustCompile(`^line (\d+): field (\S+) not found in type`)

// keyPath finds the mapping key named key on line and returns its dotted path.
func keyPath(n *yaml.Node, line int, key, prefix string) string {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			if p := keyPath(c, line, key, prefix); p != "" {
				return p
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if k.Line == line && k.Value == key {
				return path
			}
			if p := keyPath(n.Content[i+1], line, key, path); p != "" {
				return p
			}
		}
	}
	return ""
}

func buildConfig(f fileConfig, resolvConf string) (*config, error) {
	c := &config{zonesDir: f.Zones.Dir, httpAddr: f.Listen.HTTP, logLevel: f.Log.Level, logFormat: f.Log.Format}
	if c.zonesDebounce = time.Duration(f.Zones.Debounce); c.zonesDebounce <= 0 {
		return nil, fmt.Errorf("%w: zones.debounce %v: want a positive duration", errConfig, c.zonesDebounce)
	}
	if c.zonesMaxFileSize = int64(f.Zones.MaxFileSize); c.zonesMaxFileSize <= 0 {
		return nil, fmt.Errorf("%w: zones.max_file_size %d: want a positive size", errConfig, c.zonesMaxFileSize)
	}
	instance := f.Instance
	if instance == "" {
		instance, _ = os.Hostname()
	}
	fds, err := buildFeeds(f.Feeds)
	if err != nil {
		return nil, err
	}
	c.feeds = fds
	c.evidence = sinkhole.LogConfig{Dir: f.Evidence.Dir, Instance: instance,
		FsyncInterval: time.Duration(f.Evidence.FsyncInterval), SegmentSize: int64(f.Evidence.SegmentSize),
		Retention: time.Duration(f.Evidence.Retention), Queue: f.Evidence.Queue, DHCPLeases: f.Evidence.DHCPLeases}
	if f.Evidence.HMACKeyFile != "" {
		key, err := sinkhole.ReadHMACKey(f.Evidence.HMACKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: evidence.hmac_key_file: %w", errConfig, err)
		}
		c.evidence.HMACKey = key
	}
	if c.listener, err = buildListener(f.Listener, instance, &c.evidence); err != nil {
		return nil, err
	}
	if err := c.evidence.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}
	allow, err := resolver.ParsePrefixes(f.Access.Allow)
	if err != nil {
		return nil, fmt.Errorf("%w: access.allow: %w", errConfig, err)
	}
	exempt, err := resolver.ParsePrefixes(f.Access.RateLimitExempt)
	if err != nil {
		return nil, fmt.Errorf("%w: access.rate_limit_exempt: %w", errConfig, err)
	}
	c.resolver = resolver.Config{
		Listen:               f.Listen.DNS,
		TCPIdleTimeout:       time.Duration(f.Listen.TCPIdleTimeout),
		TCPMaxConns:          f.Listen.TCPMaxConns,
		TCPMaxConnsPerClient: f.Listen.TCPMaxPerClient,
		QueryTimeout:         time.Duration(f.UpstreamTimeout),
		DrainTimeout:         4 * time.Second,
		Access:               resolver.AccessConfig{Allow: allow, RateLimit: f.Access.RateLimit, RateLimitExempt: exempt},
		Cache: resolver.CacheConfig{Size: f.Cache.Size, MinTTL: time.Duration(f.Cache.MinTTL),
			MaxTTL: time.Duration(f.Cache.MaxTTL), ServeStale: f.Cache.ServeStale, Prefetch: f.Cache.Prefetch},
	}
	if err := c.resolver.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", errConfig, err)
	}

	servers := f.Upstreams
	if len(servers) == 0 && resolvConf != "" {
		var self []netip.AddrPort
		for _, l := range f.Listen.DNS {
			if ap, err := netip.ParseAddrPort(l); err == nil {
				self = append(self, ap)
			}
		}
		servers, err = upstream.FromResolvConf(resolvConf, self)
		if err != nil {
			return nil, fmt.Errorf("%w: default upstreams: %w", errConfig, err)
		}
	}
	// The strategy is checked even when there is no server to use it on, so
	// that a file's validity does not depend on /etc/resolv.conf.
	switch f.UpstreamStrategy {
	case "", upstream.StrategyFastest, upstream.StrategyParallel:
	default:
		return nil, fmt.Errorf("%w: upstream_strategy %q: want %s or %s", errConfig, f.UpstreamStrategy,
			upstream.StrategyFastest, upstream.StrategyParallel)
	}
	c.upstream = upstream.Config{Servers: servers, Strategy: f.UpstreamStrategy, Timeout: time.Duration(f.UpstreamTimeout)}
	if len(servers) > 0 {
		if err := c.upstream.Validate(); err != nil {
			return nil, fmt.Errorf("%w: upstreams: %w", errConfig, err)
		}
	}

	v4, err := netip.ParseAddr(f.Sinkhole.IPv4)
	if err != nil || !v4.Is4() {
		return nil, fmt.Errorf("%w: sinkhole.ipv4 %q is not an IPv4 address", errConfig, f.Sinkhole.IPv4)
	}
	v6, err := netip.ParseAddr(f.Sinkhole.IPv6)
	if err != nil || !v6.Is6() || v6.Is4In6() {
		return nil, fmt.Errorf("%w: sinkhole.ipv6 %q is not an IPv6 address", errConfig, f.Sinkhole.IPv6)
	}
	act, err := sinkhole.ParseAction(f.Sinkhole.Action)
	if err != nil {
		return nil, fmt.Errorf("%w: sinkhole.action: %w", errConfig, err)
	}
	c.settings = sinkhole.Settings{IPv4: v4, IPv6: v6, TTL: f.Sinkhole.TTL, Action: act}

	c.httpToken = f.Listen.HTTPToken
	if c.httpAddr != "" {
		ap, err := netip.ParseAddrPort(c.httpAddr)
		if err != nil {
			return nil, fmt.Errorf("%w: listen.http %q: want address:port", errConfig, c.httpAddr)
		}
		// The admin API reloads lists and reads evidence: beyond loopback it
		// needs a token.
		if !ap.Addr().IsLoopback() && c.httpToken == "" {
			return nil, fmt.Errorf("%w: listen.http %q is not a loopback address: set listen.http_token", errConfig, c.httpAddr)
		}
	}
	switch c.logFormat {
	case "text", "json":
	default:
		return nil, fmt.Errorf("%w: log.format %q: want text or json", errConfig, c.logFormat)
	}
	switch strings.ToLower(c.logLevel) {
	case "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf("%w: log.level %q: want debug, info, warn or error", errConfig, c.logLevel)
	}
	return c, nil
}
