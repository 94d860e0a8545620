package main

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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
	m.Handle("GET /api/v1/hits", sinkhole.HitsHandler(a.cfg.hitsDir))
	m.HandleFunc("GET /api/v1/lists", func(w http.ResponseWriter, _ *http.Request) {
		lists := a.zones.Lists()
		out := make([]zones.ListInfo, 0, len(lists))
		for _, r := range lists {
			out = append(out, r.ListInfo())
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
