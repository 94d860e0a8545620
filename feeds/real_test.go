package feeds

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// sharedFeeds holds the real feed snapshots (see its SOURCES.md).
const sharedFeeds = "../../shared/testdata/feeds"

// TestRealFeeds serves the real published files on 127.0.0.1 and checks
// each becomes a feed file that package zones loads with the same rules.
func TestRealFeeds(t *testing.T) {
	if _, err := os.Stat(sharedFeeds); err != nil {
		t.Skipf("real feed snapshots not present (%s): %v", sharedFeeds, err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(sharedFeeds)))
	t.Cleanup(srv.Close)
	tests := []struct {
		name, path, format, column string
	}{
		{name: "urlhaus", path: "urlhaus-filter/urlhaus-filter-domains.txt"},
		{name: "urlhaus-hosts", path: "urlhaus-filter/urlhaus-filter-hosts.txt"},
		{name: "urlhaus-agh", path: "urlhaus-filter/urlhaus-filter-agh.txt"},
		{name: "adguard", path: "adguardhome-testdata/dns.txt"},
		{name: "blp-ip", path: "blocklistproject/malware.ip"},
		{name: "firehol", path: "firehol-o4isec/firehol_level1.netset"},
		{name: "drop", path: "spamhaus-native/drop.txt"},
		{name: "dropv6", path: "spamhaus-secops/drop_ipv6.txt"},
		{name: "feodo", path: "feodo/ipblocklist.csv", format: FormatCSV, column: "dst_ip"},
		{name: "poisonivy", path: "stix2/poisonivy.json", format: FormatSTIX},
		{name: "apt1", path: "stix2/apt1.json", format: FormatSTIX},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUpdater(t, t.TempDir(), nil, Feed{Name: tt.name, URL: srv.URL + "/" + tt.path, Format: tt.format, Column: tt.column})
			rep := u.Update(t.Context(), tt.name, false)
			if rep.Result != ResultOK || rep.Rules == 0 {
				t.Fatalf("%+v", rep)
			}
			// feeds counts rules as written; zones drops exact duplicates.
			got := parsed(t, u.Path(tt.name)).Source.Rules.Total()
			if got == 0 || got > rep.Rules {
				t.Errorf("zones loads %d rules, feeds counted %d", got, rep.Rules)
			}
			if tt.format == "" {
				// The converted file holds what zones reads from the original.
				orig := parsedAs(t, filepath.Join(sharedFeeds, tt.path))
				if orig != got {
					t.Errorf("original has %d rules, feed file %d", orig, got)
				}
			}
		})
	}
}

func parsedAs(t *testing.T, path string) int {
	t.Helper()
	b, _ := os.ReadFile(path)
	p := filepath.Join(t.TempDir(), "x.txt")
	os.WriteFile(p, b, 0o644)
	return parsed(t, p).Source.Rules.Total()
}

// BenchmarkUpdate1M fetches and converts a 1,000,000-line feed from a
// server on 127.0.0.1. peak-MB is the heap in use at its highest during a
// run minus before it (sampled by the GC's view, HeapInuse).
func BenchmarkUpdate1M(b *testing.B) {
	var body bytes.Buffer
	for i := range 1_000_000 {
		fmt.Fprintf(&body, "host%d.bad%d.example\n", i, i%977)
	}
	data := body.Bytes()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(data) }))
	b.Cleanup(srv.Close)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	var peak uint64
	for b.Loop() {
		u := newUpdater(b, b.TempDir(), nil, Feed{Name: "big", URL: srv.URL})
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		stop := make(chan struct{})
		done := make(chan uint64)
		go func() {
			var m runtime.MemStats
			var hi uint64
			for {
				runtime.ReadMemStats(&m)
				hi = max(hi, m.HeapInuse)
				select {
				case <-stop:
					done <- hi
					return
				default:
				}
			}
		}()
		rep := u.Update(b.Context(), "big", false)
		close(stop)
		hi := <-done
		if rep.Result != ResultOK || rep.Rules != 1_000_000 {
			b.Fatalf("%+v", rep)
		}
		if hi > before.HeapInuse {
			peak = max(peak, hi-before.HeapInuse)
		}
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-MB")
}
