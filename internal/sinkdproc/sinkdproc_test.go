package sinkdproc

import (
	"os"
	"testing"
)

func TestServing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		line     string
		wantDNS  string
		wantHTTP string
		wantOK   bool
	}{
		{
			name:     "one address",
			line:     `time=2026-12-04T19:56:11.329Z level=INFO msg="sinkd serving" version=dev dns=[127.0.0.1:55715] http=127.0.0.1:39683 upstreams=[127.0.0.1:9] zones=/tmp/z`,
			wantDNS:  "127.0.0.1:55715",
			wantHTTP: "127.0.0.1:39683",
			wantOK:   true,
		},
		{
			name:    "http off",
			line:    `time=2026-12-04T19:56:13.367Z level=INFO msg="sinkd serving" version=dev dns=[127.0.0.1:40761] http="" upstreams=[127.0.0.1:9] zones=/tmp/z`,
			wantDNS: "127.0.0.1:40761",
			wantOK:  true,
		},
		{
			name:     "IPv6 first of two",
			line:     `time=2026-12-04T19:56:15.386Z level=INFO msg="sinkd serving" version=dev dns="[[::1]:35866 127.0.0.1:59243]" http=127.0.0.1:8053 upstreams=[127.0.0.1:9] zones=/tmp/z`,
			wantDNS:  "[::1]:35866",
			wantHTTP: "127.0.0.1:8053",
			wantOK:   true,
		},
		{
			name: "another line",
			line: `time=2026-12-04T19:56:15.386Z level=INFO msg="sinkd stopped"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dns, http, ok := serving(tt.line)
			if dns != tt.wantDNS || http != tt.wantHTTP || ok != tt.wantOK {
				t.Errorf("serving() = %q, %q, %v; want %q, %q, %v", dns, http, ok, tt.wantDNS, tt.wantHTTP, tt.wantOK)
			}
		})
	}
}

func TestValue(t *testing.T) {
	t.Parallel()
	exp := []byte(`# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 3.1457280e+07
go_memstats_heap_inuse_bytes_extra 7
process_resident_memory_bytes 6.3e+07
sinkd_queries_total{result="ok"} 12
`)
	tests := []struct {
		name   string
		metric string
		want   float64
		wantOK bool
	}{
		{name: "gauge", metric: "go_memstats_heap_inuse_bytes", want: 31457280, wantOK: true},
		{name: "last line", metric: "process_resident_memory_bytes", want: 63e6, wantOK: true},
		{name: "prefix of another name", metric: "go_memstats_heap", wantOK: false},
		{name: "labelled", metric: "sinkd_queries_total", wantOK: false},
		{name: "absent", metric: "nope", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := Value(exp, tt.metric)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Value(%q) = %v, %v; want %v, %v", tt.metric, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRSS(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc")
	}
	got, err := RSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if got < 1<<20 || got%1024 != 0 {
		t.Errorf("RSS(self) = %d, want whole KiB, at least 1 MiB", got)
	}
}
