package sinkhole

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// evMetrics are the evidence log's metrics. Labels come from closed sets:
// type is a record type, reason is queue, disk or torn.
type evMetrics struct {
	records     [evKinds]prometheus.Counter
	lost        *prometheus.CounterVec
	writeErrors prometheus.Counter
	bytes       prometheus.Counter
	fsync       prometheus.Histogram
	gzipped     prometheus.Counter
	pruned      prometheus.Counter
}

func newEvMetrics(reg prometheus.Registerer, queueLen func() float64) *evMetrics {
	f := promauto.With(reg)
	records := f.NewCounterVec(prometheus.CounterOpts{
		Name: "sinkd_evidence_records_total",
		Help: "Records written to the evidence log, by type.",
	}, []string{"type"})
	m := &evMetrics{
		lost: f.NewCounterVec(prometheus.CounterOpts{
			Name: "sinkd_evidence_lost_total",
			Help: "Hits lost before reaching the evidence log: queue full, disk failing, or a torn line cut after a crash.",
		}, []string{"reason"}),
		writeErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "sinkd_evidence_write_errors_total",
			Help: "Failed writes, fsyncs and gzips of evidence segments.",
		}),
		bytes: f.NewCounter(prometheus.CounterOpts{
			Name: "sinkd_evidence_bytes_total",
			Help: "Bytes written to evidence segments (before gzip).",
		}),
		fsync: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "sinkd_evidence_fsync_seconds",
			Help:    "Time taken by fsync of the evidence segment.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}),
		gzipped: f.NewCounter(prometheus.CounterOpts{
			Name: "sinkd_evidence_segments_gzipped_total",
			Help: "Closed evidence segments compressed.",
		}),
		pruned: f.NewCounter(prometheus.CounterOpts{
			Name: "sinkd_evidence_segments_pruned_total",
			Help: "Evidence segments deleted by retention (each recorded by a prune record).",
		}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sinkd_evidence_queue_length",
		Help: "Hits waiting for the evidence writer.",
	}, queueLen)
	for k := range evKinds {
		if k != evSync {
			m.records[k] = records.WithLabelValues(evTypeNames[k])
		}
	}
	for _, r := range []string{"queue", "disk", "torn"} {
		m.lost.WithLabelValues(r)
	}
	return m
}
