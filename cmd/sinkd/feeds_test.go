package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sinkd/sinkd/sinkhole"
	"github.com/sinkd/sinkd/zones"
)

func TestFeedsConfig(t *testing.T) {
	t.Setenv("SINKD_TEST_FEED_KEY", "k3y")
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{name: "ok", yaml: "feeds:\n  - name: abc\n    url: https://x.example/l.txt\n    headers: {Auth-Key: \"${SINKD_TEST_FEED_KEY}\"}\n    max_shrink: 30%\n    max_size: 1MiB\n    interval: 1d\n"},
		{name: "unknown key", yaml: "feeds:\n  - name: abc\n    url: https://x.example/\n    bogus: 1\n", wantErr: `unknown key "feeds.bogus"`},
		{name: "bad name", yaml: "feeds:\n  - name: ABC\n    url: https://x.example/\n", wantErr: `"ABC"`},
		{name: "bad url names feed", yaml: "feeds:\n  - name: abc\n    url: gopher://x\n", wantErr: `"abc"`},
		{name: "missing env", yaml: "feeds:\n  - name: abc\n    url: https://x.example/\n    headers: {K: \"${SINKD_TEST_NOPE}\"}\n", wantErr: "SINKD_TEST_NOPE is not set"},
		{name: "duplicate", yaml: "feeds:\n  - {name: a, url: \"https://x.example/\"}\n  - {name: a, url: \"https://x.example/\"}\n", wantErr: "used twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadYAML(t, tt.yaml)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f := cfg.feeds[0]
			if f.Headers["Auth-Key"] != "k3y" || f.MaxShrink != 0.3 || f.MaxSize != 1<<20 || f.Interval.Hours() != 24 {
				t.Errorf("feed %+v", f)
			}
		})
	}
}

// TestFeedsCommand runs `sinkd feeds update` and `list` against a feed on
// 127.0.0.1 and loads the file written the way serve's watcher does.
func TestFeedsCommand(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/broken" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		fmt.Fprintln(w, "# a feed\nfeed-hit.example\n203.0.113.0/24 ; SBL1")
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sinkd.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("zones:\n  dir: %s\nfeeds:\n  - name: good\n    url: %s/list.txt\n    category: test\n  - name: bad\n    url: %s/broken\n",
		filepath.Join(dir, "zones.d"), srv.URL, srv.URL)), 0o600)

	var out, errb bytes.Buffer
	err := run(t.Context(), []string{"feeds", "-config", cfgPath, "update"}, &out, &errb)
	if !errors.Is(err, errFailed) {
		t.Fatalf("update: err %v, want exit 1 (one feed failed); stderr %s", err, errb.String())
	}
	if !strings.Contains(out.String(), "good: ok rules=2 ") || !strings.Contains(out.String(), "bad: failed rules=0") {
		t.Errorf("output:\n%s", out.String())
	}
	r := zones.ParseFile(filepath.Join(dir, "zones.d", "feeds", "good.txt"), "feeds/good.txt", sinkhole.ActionSinkhole, 0)
	if r.Status != zones.StatusOK || r.Source.Rules.Domain != 1 || r.Source.Rules.CIDR != 1 || r.Source.Category != "test" {
		t.Errorf("feed file: %s %+v %v", r.Status, r.Source.Rules, r.Err)
	}
	out.Reset()
	if err := run(t.Context(), []string{"feeds", "-config", cfgPath, "list"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `good: last_check=`) || !strings.Contains(out.String(), `etag="v1"`) ||
		!strings.Contains(out.String(), "bad: ") || !strings.Contains(out.String(), "last_error=\"feeds: HTTP status 404") {
		t.Errorf("list:\n%s", out.String())
	}
	out.Reset()
	err = run(t.Context(), []string{"feeds", "-config", cfgPath, "update", "-force", "nope"}, &out, &errb)
	if !errors.Is(err, errUsage) {
		t.Errorf("-force nope: %v, want usage error", err)
	}
}
