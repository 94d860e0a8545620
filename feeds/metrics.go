package feeds

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Results of a fetch: the values of the result label.
const (
	ResultOK          = "ok"
	ResultNotModified = "not_modified"
	ResultFailed      = "failed"
	ResultHeldBack    = "held_back"
)

// metrics are the feed metrics; the feed label takes configured names only.
type metrics struct {
	fetches     *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
	rules       *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, names []string) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		fetches: f.NewCounterVec(prometheus.CounterOpts{
			Name: "sinkd_feed_fetches_total",
			Help: "Feed fetches by feed and result (ok, not_modified, failed, held_back).",
		}, []string{"feed", "result"}),
		lastSuccess: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sinkd_feed_last_success_timestamp_seconds",
			Help: "Unix time of the feed's last successful check (ok or not_modified).",
		}, []string{"feed"}),
		rules: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sinkd_feed_rules",
			Help: "Rules in the feed's file in zones.dir/feeds.",
		}, []string{"feed"}),
	}
	for _, n := range names {
		for _, r := range []string{ResultOK, ResultNotModified, ResultFailed, ResultHeldBack} {
			m.fetches.WithLabelValues(n, r)
		}
	}
	return m
}
