package resolver

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sinkd/sinkd/sinkhole"
)

// Label values come from closed sets, so every counter of the hot path is
// resolved once here and incremented without a map lookup or allocation.

type proto uint8

const (
	protoUDP proto = iota
	protoTCP
	numProtos
)

var protoNames = [numProtos]string{"udp", "tcp"}

func (p proto) String() string { return protoNames[p] }

// qtypeLabels are the query types counted by name; others are "other".
var qtypeLabels = []struct {
	t    uint16
	name string
}{
	{1, "A"}, {28, "AAAA"}, {5, "CNAME"}, {15, "MX"}, {16, "TXT"}, {2, "NS"}, {6, "SOA"},
	{12, "PTR"}, {33, "SRV"}, {64, "SVCB"}, {65, "HTTPS"}, {255, "ANY"}, {43, "DS"}, {48, "DNSKEY"},
}

const numQtypes = 15 // len(qtypeLabels) + "other"

func qtypeIndex(t uint16) int {
	for i, l := range qtypeLabels {
		if l.t == t {
			return i
		}
	}
	return len(qtypeLabels)
}

// rcode label indexes: the six classic rcodes, "other", and "none" (no reply
// sent: drop action, dropped garbage).
const (
	rcodeOther = 6
	rcodeNone  = 7
	numRcodes  = 8
)

var rcodeNames = [numRcodes]string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other", "none"}

func rcodeIndex(rc int) int {
	if rc >= 0 && rc < rcodeOther {
		return rc
	}
	return rcodeOther
}

type metrics struct {
	queries   [numProtos][numQtypes][numRcodes]prometheus.Counter
	duration  [numProtos]prometheus.Observer
	hits      prometheus.Counter
	misses    prometheus.Counter
	stale     prometheus.Counter
	prefetch  prometheus.Counter
	coalesced prometheus.Counter
	limited   prometheus.Counter
	refused   prometheus.Counter
	policy    [5][7]prometheus.Counter // [trigger][action]
	tcpConns  prometheus.Gauge
	tcpReject prometheus.Counter // reason="max_conns"
	// tcpRejectClient is reason="max_conns_per_client".
	tcpRejectClient prometheus.Counter
	overload        prometheus.Counter
	scrubbed        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, entries func() float64) *metrics {
	f := promauto.With(reg)
	m := &metrics{}
	queries := f.NewCounterVec(prometheus.CounterOpts{
		Name: "sinkd_queries_total",
		Help: "DNS queries answered, by transport, query type and response code (none: no reply sent).",
	}, []string{"proto", "qtype", "rcode"})
	duration := f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sinkd_query_duration_seconds",
		Help:    "Time from reading a query to writing its reply.",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"proto"})
	for p := range numProtos {
		m.duration[p] = duration.WithLabelValues(p.String())
		for qi := range numQtypes {
			qn := "other"
			if qi < len(qtypeLabels) {
				qn = qtypeLabels[qi].name
			}
			for rc := range numRcodes {
				m.queries[p][qi][rc] = queries.WithLabelValues(p.String(), qn, rcodeNames[rc])
			}
		}
	}
	m.hits = f.NewCounter(prometheus.CounterOpts{Name: "sinkd_cache_hits_total", Help: "Queries answered from a fresh cache entry."})
	m.misses = f.NewCounter(prometheus.CounterOpts{Name: "sinkd_cache_misses_total", Help: "Queries that needed an upstream answer."})
	m.stale = f.NewCounter(prometheus.CounterOpts{Name: "sinkd_cache_stale_answers_total", Help: "Expired entries served because every upstream failed (RFC 8767)."})
	m.prefetch = f.NewCounter(prometheus.CounterOpts{Name: "sinkd_cache_prefetches_total", Help: "Popular entries refreshed before they expired."})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "sinkd_cache_entries", Help: "Entries in the answer cache."}, entries)
	m.coalesced = f.NewCounter(prometheus.CounterOpts{Name: "sinkd_upstream_coalesced_total", Help: "Cache misses that joined an identical query already in flight upstream."})
	m.limited = f.NewCounter(prometheus.CounterOpts{Name: "sinkd_ratelimited_total", Help: "Queries dropped by the per-client rate limit."})
	m.refused = f.NewCounter(prometheus.CounterOpts{Name: "sinkd_refused_total", Help: "Queries refused because the client is not in access.allow."})
	policy := f.NewCounterVec(prometheus.CounterOpts{Name: "sinkd_policy_hits_total", Help: "Policy hits, by trigger and action."}, []string{"trigger", "action"})
	for t := range m.policy {
		for a := range m.policy[t] {
			if t > 0 && a > 0 {
				m.policy[t][a] = policy.WithLabelValues(triggerLabels[t], actionLabels[a])
			}
		}
	}
	m.tcpConns = f.NewGauge(prometheus.GaugeOpts{Name: "sinkd_tcp_connections", Help: "Open DNS-over-TCP client connections."})
	reject := f.NewCounterVec(prometheus.CounterOpts{Name: "sinkd_tcp_rejected_connections_total",
		Help: "TCP connections closed at once: listen.tcp_max_conns were open (max_conns), or listen.tcp_max_conns_per_client of the client's address (max_conns_per_client)."}, []string{"reason"})
	m.tcpReject = reject.WithLabelValues("max_conns")
	m.tcpRejectClient = reject.WithLabelValues("max_conns_per_client")
	m.overload = f.NewCounter(prometheus.CounterOpts{Name: "sinkd_overload_servfail_total", Help: "Cache misses answered SERVFAIL at once because too many queries were already waiting on upstream."})
	m.scrubbed = f.NewCounter(prometheus.CounterOpts{Name: "sinkd_upstream_scrubbed_records_total", Help: "Records removed from upstream replies before caching: outside the answer's CNAME/DNAME chain, its zone and the zone's glue (cache poisoning), or malformed."})
	return m
}

// Label values of sinkd_policy_hits_total, indexed by sinkhole.Trigger and
// sinkhole.Action.
var (
	triggerLabels = [5]string{"", "qname", "cname", "ip", "client"}
	actionLabels  = [7]string{"", "sinkhole", "nxdomain", "nodata", "refuse", "drop", "log"}
)

func (m *metrics) policyHit(t sinkhole.Trigger, a sinkhole.Action) {
	if int(t) < len(m.policy) && int(a) < len(m.policy[t]) && m.policy[t][a] != nil {
		m.policy[t][a].Inc()
	}
}
