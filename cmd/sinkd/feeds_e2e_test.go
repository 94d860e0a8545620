package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestFeedSinkholedByRunningServer: a feed served over HTTP (127.0.0.1) is
// fetched by `serve`, written into zones.dir/feeds/, picked up by the
// watcher, and its names are sinkholed; /api/v1/lists shows the feed.
func TestFeedSinkholedByRunningServer(t *testing.T) {
	t.Parallel()
	feed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		_, _ = w.Write([]byte("# a takedown list\nc2.feed.example\n203.0.113.77\n"))
	}))
	t.Cleanup(feed.Close)
	up := fakeUpstream(t, "c2.feed.example. 300 IN A 192.0.2.50", "ok.feed.example. 300 IN A 192.0.2.51")
	in := startSinkd(t, `
listen:
  dns: ["127.0.0.1:0"]
  http: 127.0.0.1:0
upstreams: ["`+up+`"]
zones:
  dir: ZONES
  debounce: 50ms
evidence:
  dir: HITS
sinkhole:
  ipv4: 192.0.2.254
feeds:
  - name: takedown
    url: `+feed.URL+`/list.txt
    interval: 1h
    category: botnet
`, nil)

	deadline := time.Now().Add(15 * time.Second)
	for {
		got := addrs(in.ask(t, "c2.feed.example", dns.TypeA))
		if strings.Join(got, ",") == "192.0.2.254" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("c2.feed.example still answers %v 15 s after start", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := addrs(in.ask(t, "ok.feed.example", dns.TypeA)); strings.Join(got, ",") != "192.0.2.51" {
		t.Errorf("ok.feed.example = %v, want the real answer", got)
	}

	resp, err := http.Get("http://" + in.http + "/api/v1/lists")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lists []struct {
		Name     string `json:"name"`
		Status   string `json:"status"`
		Category string `json:"category"`
		Feed     *struct {
			Name        string    `json:"name"`
			URL         string    `json:"url"`
			ETag        string    `json:"etag"`
			LastSuccess time.Time `json:"last_success"`
			Rules       int       `json:"rules"`
		} `json:"feed"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&lists); err != nil {
		t.Fatal(err)
	}
	if len(lists) != 1 || lists[0].Name != "feeds/takedown.txt" || lists[0].Status != "ok" || lists[0].Category != "botnet" ||
		lists[0].Feed == nil || lists[0].Feed.Name != "takedown" || lists[0].Feed.ETag != `"v1"` ||
		lists[0].Feed.LastSuccess.IsZero() || lists[0].Feed.Rules != 2 {
		b, _ := json.Marshal(lists)
		t.Errorf("/api/v1/lists = %s", b)
	}
}
