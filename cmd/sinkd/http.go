package main

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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
	m.HandleFunc("GET /api/v1/lists", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		out := make([]zones.ListInfo, 0, len(a.lists))
		for _, r := range a.lists {
			out = append(out, r.ListInfo())
		}
		a.mu.Unlock()
		writeJSON(w, out)
	})
	m.HandleFunc("POST /api/v1/reload", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.reload(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		a.mu.Lock()
		n := len(a.lists)
		a.mu.Unlock()
		writeJSON(w, map[string]any{"status": "ok", "lists": n})
	})
	return m
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
