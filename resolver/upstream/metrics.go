package upstream

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Results of one request to one upstream: the `result` label.
const (
	resultOK        = "ok"        // NOERROR or NXDOMAIN
	resultServfail  = "servfail"  // SERVFAIL: the next upstream is asked
	resultRefused   = "refused"   // REFUSED: the next upstream is asked
	resultRcode     = "rcode"     // another rcode (FORMERR, NOTIMP, ...): the next is asked
	resultTimeout   = "timeout"   // no reply within the query's time, or its share of it
	resultError     = "error"     // network, TLS or HTTP error, bad reply
	resultTruncated = "truncated" // a UDP reply with TC set; TCP is asked next (its own request)
	resultCanceled  = "canceled"  // stopped because another upstream answered first or the caller left
)

// allResults is the closed set of result label values.
var allResults = []string{resultOK, resultServfail, resultRefused, resultRcode, resultTimeout, resultError, resultTruncated, resultCanceled}

// metrics are the Pool's collectors, registered on the injected Registerer.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	up       *prometheus.GaugeVec
	rtt      *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "sinkd_upstream_requests_total",
			Help: "Requests sent to upstream resolvers, by upstream and result.",
		}, []string{"upstream", "result"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sinkd_upstream_request_duration_seconds",
			Help:    "Time from sending a request to an upstream until its reply, for requests that got a reply.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"upstream"}),
		up: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sinkd_upstream_up",
			Help: "1 if the upstream's last request got a reply, 0 if it failed or none was sent yet.",
		}, []string{"upstream"}),
		rtt: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sinkd_upstream_rtt_seconds",
			Help: "Smoothed round-trip time of the upstream as used to rank it (0 until measured).",
		}, []string{"upstream"}),
	}
}

// upstreamMetrics are one upstream's children, looked up once.
type upstreamMetrics struct {
	requests map[string]prometheus.Counter // by result
	duration prometheus.Observer
	up       prometheus.Gauge
	rtt      prometheus.Gauge
}

func (m *metrics) forUpstream(name string) upstreamMetrics {
	um := upstreamMetrics{
		requests: make(map[string]prometheus.Counter, len(allResults)),
		duration: m.duration.WithLabelValues(name),
		up:       m.up.WithLabelValues(name),
		rtt:      m.rtt.WithLabelValues(name),
	}
	for _, r := range allResults {
		um.requests[r] = m.requests.WithLabelValues(name, r)
	}
	return um
}
