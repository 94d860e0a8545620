package feeds

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/sinkd/sinkd/sinkhole"
	"github.com/sinkd/sinkd/zones"
)

// origin is a fake feed server on 127.0.0.1: it serves body with an ETag,
// honours If-None-Match, and records the requests it saw.
type origin struct {
	mu       sync.Mutex
	body     []byte
	status   int  // 0: 200
	gzip     bool // Content-Encoding: gzip
	truncate bool // announce more bytes than sent
	reqs     []*http.Request
	srv      *httptest.Server
}

func startOrigin(t *testing.T, body []byte) *origin {
	t.Helper()
	o := &origin{body: body}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) set(fn func(o *origin)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fn(o)
}

func (o *origin) requests() []*http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*http.Request(nil), o.reqs...)
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.reqs = append(o.reqs, r.Clone(context.Background()))
	if o.status != 0 {
		http.Error(w, "upstream broke", o.status)
		return
	}
	sum := sha256.Sum256(o.body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
	body := o.body
	if o.gzip {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(body)
		zw.Close()
		body = b.Bytes()
		w.Header().Set("Content-Encoding", "gzip")
	}
	if o.truncate {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)+1000))
		w.Write(body[:len(body)/2])
		return
	}
	w.Write(body)
}

func newUpdater(t testing.TB, dir string, reg prometheus.Registerer, feeds ...Feed) *Updater {
	t.Helper()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	u, err := New(Config{ZonesDir: dir, Feeds: feeds, Retries: 1, RetryBase: time.Millisecond, Timeout: 10 * time.Second},
		reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parsed loads a feed file with package zones, as the watcher will.
func parsed(t *testing.T, path string) zones.Result {
	t.Helper()
	r := zones.ParseFile(path, "feeds/"+filepath.Base(path), sinkhole.ActionSinkhole, 0)
	if r.Status != zones.StatusOK {
		t.Fatalf("%s: status %s: %v", path, r.Status, r.Err)
	}
	return r
}

func header(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]string{}
	for i, l := range strings.Split(string(b), "\n") {
		if i == 0 {
			h["directive"] = l
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(l, "# "), ": ")
		if !strings.HasPrefix(l, "# ") || !ok {
			break
		}
		h[k] = v
	}
	return h
}

func TestUpdateWritesFeedFile(t *testing.T) {
	t.Parallel()
	body := readTestdata(t, "urlhaus-domains.txt")
	o := startOrigin(t, body)
	dir := t.TempDir()
	u := newUpdater(t, dir, nil, Feed{Name: "urlhaus", URL: o.srv.URL + "/list.txt", Action: "nxdomain", Category: "malware"})
	rep := u.Update(t.Context(), "urlhaus", false)
	if rep.Result != ResultOK || rep.Err != nil {
		t.Fatalf("update: %+v", rep)
	}
	path := filepath.Join(dir, "feeds", "urlhaus.txt")
	r := parsed(t, path)
	if got := r.Source.Rules.Total(); got != 34 || rep.Rules != 34 {
		t.Errorf("rules: file %d, report %d, want 34", got, rep.Rules)
	}
	if r.Source.Action != sinkhole.ActionNXDomain || r.Source.Category != "malware" {
		t.Errorf("directive: action %v category %q", r.Source.Action, r.Source.Category)
	}
	sum := sha256.Sum256(body)
	h := header(t, path)
	want := map[string]string{"directive": "# sinkd: action=nxdomain category=malware", "feed": "urlhaus",
		"url": o.srv.URL + "/list.txt", "sha256": hex.EncodeToString(sum[:]), "rules": "34",
		"etag": `"` + hex.EncodeToString(sum[:8]) + `"`, "last-modified": "Mon, 02 Jan 2006 15:04:05 GMT"}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("header %s = %q, want %q", k, h[k], v)
		}
	}
	if _, err := time.Parse(time.RFC3339, h["fetched"]); err != nil {
		t.Errorf("header fetched: %v", err)
	}
	st, err := ReadState(filepath.Join(dir, "feeds"))
	if err != nil || st["urlhaus"].Rules != 34 || st["urlhaus"].LastSuccess.IsZero() {
		t.Errorf("state: %+v %v", st, err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "feeds"))
	for _, e := range ents {
		if e.Name() != "urlhaus.txt" && e.Name() != StateFile {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestNotModified(t *testing.T) {
	t.Parallel()
	o := startOrigin(t, readTestdata(t, "spamhaus-drop.txt"))
	dir := t.TempDir()
	u := newUpdater(t, dir, nil, Feed{Name: "drop", URL: o.srv.URL})
	if rep := u.Update(t.Context(), "drop", false); rep.Result != ResultOK {
		t.Fatalf("first: %+v", rep)
	}
	path := filepath.Join(dir, "feeds", "drop.txt")
	before, _ := os.Stat(path)
	rep := u.Update(t.Context(), "drop", false)
	if rep.Result != ResultNotModified {
		t.Fatalf("second: %+v", rep)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Error("a 304 rewrote the file")
	}
	reqs := o.requests()
	if got := reqs[1].Header.Get("If-None-Match"); got == "" {
		t.Error("no If-None-Match on the second request")
	}
	if got := reqs[1].Header.Get("If-Modified-Since"); got != "Mon, 02 Jan 2006 15:04:05 GMT" {
		t.Errorf("If-Modified-Since %q", got)
	}
	if got := reqs[0].Header.Get("If-None-Match"); got != "" {
		t.Errorf("first request sent If-None-Match %q", got)
	}
}

func TestGzip(t *testing.T) {
	t.Parallel()
	body := readTestdata(t, "urlhaus-domains.txt")
	o := startOrigin(t, body)
	o.gzip = true
	dir := t.TempDir()
	u := newUpdater(t, dir, nil, Feed{Name: "gz", URL: o.srv.URL})
	rep := u.Update(t.Context(), "gz", false)
	if rep.Result != ResultOK || rep.Bytes != int64(len(body)) {
		t.Fatalf("update: %+v (want %d bytes)", rep, len(body))
	}
	sum := sha256.Sum256(body)
	if got := header(t, filepath.Join(dir, "feeds", "gz.txt"))["sha256"]; got != hex.EncodeToString(sum[:]) {
		t.Errorf("sha256 %s: want the body after Content-Encoding", got)
	}
}

func TestKeepLastGood(t *testing.T) {
	t.Parallel()
	good := readTestdata(t, "urlhaus-domains.txt")
	tests := []struct {
		name    string
		breakIt func(o *origin)
		maxSize int64
		wantErr error
	}{
		{name: "500", breakIt: func(o *origin) { o.status = 500 }, wantErr: ErrStatus},
		{name: "404", breakIt: func(o *origin) { o.status = 404 }, wantErr: ErrStatus},
		{name: "truncated", breakIt: func(o *origin) { o.body = append(good, "new.example\n"...); o.truncate = true }},
		{name: "html", breakIt: func(o *origin) {
			o.body = []byte("<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body>oops</body></html>\n")
		}, wantErr: ErrNoRules},
		{name: "empty", breakIt: func(o *origin) { o.body = nil }, wantErr: ErrNoRules},
		{name: "binary", breakIt: func(o *origin) { o.body = []byte("evil.example\n\x00\x01\x02") }, wantErr: errBinary},
		{name: "oversize", breakIt: func(o *origin) { o.body = bytes.Repeat([]byte("a.example\n"), 1000) },
			maxSize: 4096, wantErr: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := startOrigin(t, good)
			dir := t.TempDir()
			f := Feed{Name: "f", URL: o.srv.URL, MaxSize: tt.maxSize}
			u := newUpdater(t, dir, nil, f)
			if rep := u.Update(t.Context(), "f", false); rep.Result != ResultOK {
				t.Fatalf("first: %+v", rep)
			}
			path := filepath.Join(dir, "feeds", "f.txt")
			before, _ := os.ReadFile(path)
			o.set(tt.breakIt)
			rep := u.Update(t.Context(), "f", false)
			if rep.Result != ResultFailed || rep.Err == nil {
				t.Fatalf("broken: %+v, want failed", rep)
			}
			if tt.wantErr != nil && !errors.Is(rep.Err, tt.wantErr) {
				t.Errorf("err %v, want %v", rep.Err, tt.wantErr)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Error("the last good copy was replaced")
			}
			st, _ := ReadState(filepath.Join(dir, "feeds"))
			if st["f"].LastError == "" || st["f"].LastSuccess.IsZero() {
				t.Errorf("state %+v: want last error and the earlier success", st["f"])
			}
			ents, _ := os.ReadDir(filepath.Join(dir, "feeds"))
			if len(ents) != 2 {
				t.Errorf("feeds dir holds %d entries, want f.txt and the state", len(ents))
			}
		})
	}
}

func TestRetry(t *testing.T) {
	t.Parallel()
	o := startOrigin(t, []byte("evil.example\n"))
	var n int
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		n++
		first := n == 1
		o.mu.Unlock()
		if first {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		o.serve(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	u := newUpdater(t, t.TempDir(), nil, Feed{Name: "r", URL: srv.URL})
	if rep := u.Update(t.Context(), "r", false); rep.Result != ResultOK {
		t.Fatalf("update: %+v (want ok after one retry)", rep)
	}
}

func TestShrinkHeldBack(t *testing.T) {
	t.Parallel()
	var full bytes.Buffer
	for i := range 100 {
		fmt.Fprintf(&full, "host%d.evil.example\n", i)
	}
	o := startOrigin(t, full.Bytes())
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	u := newUpdater(t, dir, reg, Feed{Name: "s", URL: o.srv.URL, MaxShrink: 0.5})
	if rep := u.Update(t.Context(), "s", false); rep.Result != ResultOK || rep.Rules != 100 {
		t.Fatalf("first: %+v", rep)
	}
	o.set(func(o *origin) { o.body = o.body[:bytes.Index(o.body, []byte("host40."))] }) // 60% fewer
	rep := u.Update(t.Context(), "s", false)
	if rep.Result != ResultHeldBack || !errors.Is(rep.Err, ErrHeldBack) || rep.Rules != 40 {
		t.Fatalf("shrunk: %+v, want held_back with 40 rules", rep)
	}
	path := filepath.Join(dir, "feeds", "s.txt")
	if got := parsed(t, path).Source.Rules.Total(); got != 100 {
		t.Errorf("file has %d rules, want the 100 of the last good copy", got)
	}
	if st, _ := ReadState(u.Dir()); !st["s"].HeldBack {
		t.Errorf("state not held back: %+v", st["s"])
	}
	if got := testutil.ToFloat64(u.m.fetches.WithLabelValues("s", ResultHeldBack)); got != 1 {
		t.Errorf("held_back fetches %v", got)
	}
	rep = u.Update(t.Context(), "s", true)
	if rep.Result != ResultOK {
		t.Fatalf("force: %+v", rep)
	}
	if got := parsed(t, path).Source.Rules.Total(); got != 40 {
		t.Errorf("forced file has %d rules, want 40", got)
	}
	if st, _ := ReadState(u.Dir()); st["s"].HeldBack || st["s"].LastError != "" {
		t.Errorf("state after force: %+v", st["s"])
	}
	if got := testutil.ToFloat64(u.m.rules.WithLabelValues("s")); got != 40 {
		t.Errorf("sinkd_feed_rules %v", got)
	}
}

func TestShrinkGuardOff(t *testing.T) {
	t.Parallel()
	o := startOrigin(t, []byte("a.evil.example\nb.evil.example\nc.evil.example\n"))
	u := newUpdater(t, t.TempDir(), nil, Feed{Name: "s", URL: o.srv.URL, MaxShrink: 0})
	u.Update(t.Context(), "s", false)
	o.set(func(o *origin) { o.body = []byte("a.evil.example\n") })
	if rep := u.Update(t.Context(), "s", false); rep.Result != ResultOK {
		t.Fatalf("max_shrink 0: %+v, want ok", rep)
	}
}

func TestCSV(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		column string
		want   int
	}{
		{name: "by name", column: "dst_ip", want: 21},
		{name: "by index", column: "2", want: 21},
		{name: "wrong column", column: "malware", want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := startOrigin(t, readTestdata(t, "feodo-ipblocklist.csv"))
			dir := t.TempDir()
			u := newUpdater(t, dir, nil, Feed{Name: "feodo", URL: o.srv.URL, Format: FormatCSV, Column: tt.column})
			rep := u.Update(t.Context(), "feodo", false)
			if tt.want == 0 {
				if rep.Result != ResultFailed {
					t.Fatalf("%+v, want failed", rep)
				}
				return
			}
			if rep.Result != ResultOK || rep.Rules != tt.want {
				t.Fatalf("%+v, want %d rules", rep, tt.want)
			}
			if got := parsed(t, u.Path("feodo")).Source.Rules.IP; got != tt.want {
				t.Errorf("ip rules %d", got)
			}
		})
	}
}

const stixBundle = `{"type":"bundle","id":"bundle--1","objects":[
 {"type":"indicator","spec_version":"2.1","id":"indicator--live","name":"C2 domain","labels":["malicious-activity"],
  "pattern_type":"stix","pattern":"[domain-name:value = 'c2.evil.example' OR ipv4-addr:value = '198.51.100.0/24']"},
 {"type":"indicator","id":"indicator--url","pattern_type":"stix","pattern":"[url:value = 'http://Drop.Evil.example:8080/x.exe']"},
 {"type":"indicator","id":"indicator--v6","pattern_type":"stix","pattern":"[ipv6-addr:value = '2001:db8::1']"},
 {"type":"indicator","id":"indicator--revoked","revoked":true,"pattern_type":"stix","pattern":"[domain-name:value = 'revoked.example']"},
 {"type":"indicator","id":"indicator--expired","valid_until":"2001-01-01T00:00:00Z","pattern_type":"stix","pattern":"[domain-name:value = 'expired.example']"},
 {"type":"indicator","id":"indicator--and","pattern_type":"stix","pattern":"[domain-name:value = 'and.example' AND ipv4-addr:value = '192.0.2.1']"},
 {"type":"indicator","id":"indicator--hash","pattern_type":"stix","pattern":"[file:hashes.md5 = 'd41d8cd98f00b204e9800998ecf8427e']"},
 {"type":"indicator","id":"indicator--snort","pattern_type":"snort","pattern":"alert tcp any any"},
 {"type":"malware","id":"malware--1","name":"x"}
]}`

func TestSTIX(t *testing.T) {
	t.Parallel()
	o := startOrigin(t, []byte(stixBundle))
	dir := t.TempDir()
	u := newUpdater(t, dir, nil, Feed{Name: "stix", URL: o.srv.URL, Format: FormatSTIX})
	rep := u.Update(t.Context(), "stix", false)
	if rep.Result != ResultOK || rep.Rules != 4 {
		t.Fatalf("%+v, want 4 rules", rep)
	}
	b, _ := os.ReadFile(u.Path("stix"))
	got := string(b)
	for _, want := range []string{
		"c2.evil.example # indicator--live C2 domain [malicious-activity]\n",
		"198.51.100.0/24 # indicator--live",
		"drop.evil.example # indicator--url\n",
		"2001:db8::1 # indicator--v6\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	for _, not := range []string{"revoked.example", "expired.example", "and.example", "d41d8cd9"} {
		if strings.Contains(got, not) {
			t.Errorf("%s became a rule", not)
		}
	}
	r := parsed(t, u.Path("stix"))
	if r.Source.Rules.Domain != 2 || r.Source.Rules.CIDR != 1 || r.Source.Rules.IP != 1 {
		t.Errorf("counts %+v", r.Source.Rules)
	}
}

func TestFileURL(t *testing.T) {
	t.Parallel()
	src := filepath.Join(t.TempDir(), "list.txt")
	os.WriteFile(src, []byte("evil.example\n203.0.113.0/24\n"), 0o644)
	dir := t.TempDir()
	u := newUpdater(t, dir, nil, Feed{Name: "local", URL: "file://" + src})
	if rep := u.Update(t.Context(), "local", false); rep.Result != ResultOK || rep.Rules != 2 {
		t.Fatalf("%+v", rep)
	}
	if rep := u.Update(t.Context(), "local", false); rep.Result != ResultNotModified {
		t.Fatalf("same bytes: %+v, want not_modified", rep)
	}
}

func TestHeadersSent(t *testing.T) {
	t.Parallel()
	o := startOrigin(t, []byte("evil.example\n"))
	u := newUpdater(t, t.TempDir(), nil, Feed{Name: "h", URL: o.srv.URL, Headers: map[string]string{"Auth-Key": "s3cret"}})
	u.Update(t.Context(), "h", false)
	if got := o.requests()[0].Header.Get("Auth-Key"); got != "s3cret" {
		t.Errorf("Auth-Key %q", got)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		feed    Feed
		wantErr string
	}{
		{name: "ok", feed: Feed{Name: "a-1_b", URL: "https://x.example/l.txt"}},
		{name: "bad name", feed: Feed{Name: "Bad", URL: "https://x.example/"}, wantErr: `name "Bad"`},
		{name: "bad scheme", feed: Feed{Name: "f", URL: "ftp://x.example/"}, wantErr: `"f": url`},
		{name: "bad format", feed: Feed{Name: "f", URL: "https://x.example/", Format: "xml"}, wantErr: `format "xml"`},
		{name: "column without csv", feed: Feed{Name: "f", URL: "https://x.example/", Column: "2"}, wantErr: "column"},
		{name: "bad action", feed: Feed{Name: "f", URL: "https://x.example/", Action: "explode"}, wantErr: "action"},
		{name: "taxii file", feed: Feed{Name: "f", URL: "file:///x", Format: FormatTAXII}, wantErr: "taxii"},
		{name: "shrink", feed: Feed{Name: "f", URL: "https://x.example/", MaxShrink: 2}, wantErr: "max_shrink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.feed.Validate()
			if tt.wantErr == "" {
				if err != nil || tt.feed.Interval != DefaultInterval || tt.feed.MaxSize != DefaultMaxSize {
					t.Fatalf("err %v, feed %+v", err, tt.feed)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrConfig) {
				t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestMetricsLint(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	o := startOrigin(t, []byte("evil.example\n"))
	u := newUpdater(t, t.TempDir(), reg, Feed{Name: "m", URL: o.srv.URL})
	u.Update(t.Context(), "m", false)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 3 {
		t.Errorf("%d metric families, want 3", len(mfs))
	}
	probs, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(probs) > 0 {
		t.Errorf("promlint: %v %v", probs, err)
	}
	if got := testutil.ToFloat64(u.m.fetches.WithLabelValues("m", ResultOK)); got != 1 {
		t.Errorf("ok fetches %v", got)
	}
	if got := testutil.ToFloat64(u.m.lastSuccess.WithLabelValues("m")); got == 0 {
		t.Error("last success not set")
	}
}

// TestRun: the scheduler fetches each feed soon after start and stops with
// its context.
func TestRun(t *testing.T) {
	t.Parallel()
	o := startOrigin(t, []byte("evil.example\n"))
	u := newUpdater(t, t.TempDir(), nil, Feed{Name: "run", URL: o.srv.URL, Interval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { u.Run(ctx); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(u.Path("run")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("scheduler wrote no file")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if n := len(o.requests()); n != 1 {
		t.Errorf("%d requests, want 1 (interval 1h)", n)
	}
}
