package main

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sinkd/sinkd/feeds"
	"github.com/sinkd/sinkd/sinkhole"
	"github.com/sinkd/sinkd/zones"
)

// mux is the listen.http handler: cmd owns it, packages hand it handlers.
func (a *app) mux(reg *prometheus.Registry) *http.ServeMux {
	m := http.NewServeMux()
	m.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	m.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.srv.Ready() {
			http.Error(w, "no upstream has answered yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	m.Handle("GET /api/v1/hits", sinkhole.HitsHandler(a.cfg.evidence.Dir))
	m.HandleFunc("GET /api/v1/lists", func(w http.ResponseWriter, _ *http.Request) {
		lists := a.zones.Lists()
		feedOf := a.feedInfo()
		out := make([]listJSON, 0, len(lists))
		for _, r := range lists {
			out = append(out, listJSON{ListInfo: r.ListInfo(), Feed: feedOf[r.Source.Name]})
		}
		writeJSON(w, out)
	})
	m.HandleFunc("POST /api/v1/reload", func(w http.ResponseWriter, r *http.Request) {
		rl, err := a.zones.Reload(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		changed := rl.Changes
		if changed == nil {
			changed = []zones.Change{}
		}
		writeJSON(w, map[string]any{"status": "ok", "result": rl.Result(), "lists": len(rl.Results),
			"changed": changed, "took_ms": rl.Took.Milliseconds()})
	})
	return m
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// listJSON is one /api/v1/lists object: the list, and for a list written by
// a feed, the feed's subscription and fetch state.
type listJSON struct {
	zones.ListInfo
	Feed *feedJSON `json:"feed,omitempty"`
}

type feedJSON struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	feeds.State
}

// feedInfo maps list names (feeds/<name>.txt) to their feed's state.
func (a *app) feedInfo() map[string]*feedJSON {
	if len(a.cfg.feeds) == 0 {
		return nil
	}
	st, err := feeds.ReadState(filepath.Join(a.cfg.zonesDir, "feeds"))
	if err != nil {
		a.log.Warn("feed state", "err", err)
	}
	out := make(map[string]*feedJSON, len(a.cfg.feeds))
	for _, f := range a.cfg.feeds {
		u := f.URL
		if pu, err := url.Parse(u); err == nil {
			u = pu.Redacted() // no password in an API answer
		}
		out["feeds/"+f.Name+".txt"] = &feedJSON{Name: f.Name, URL: u, State: st[f.Name]}
	}
	return out
}

// requireToken guards every endpoint but /healthz with listen.http_token
// ("Authorization: Bearer TOKEN", compared in constant time). An empty
// token (loopback only, enforced by the config) guards nothing.
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sinkd"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
