package natsjs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the event log's Prometheus metrics.
type Metrics struct {
	appended      *prometheus.CounterVec
	conflicts     prometheus.Counter
	appendSeconds prometheus.Histogram
	ackSeconds    prometheus.Histogram
	syncSeconds   prometheus.Histogram
	syncGroup     prometheus.Histogram
	reads         *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg (nil: a private registry, for tests and tools).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	return &Metrics{
		appended: f.NewCounterVec(prometheus.CounterOpts{
			Name: "anchorage_events_appended_total", Help: "Events appended to the event log, by type.",
		}, []string{"type"}),
		conflicts: f.NewCounter(prometheus.CounterOpts{
			Name: "anchorage_event_append_conflicts_total", Help: "Appends rejected by an optimistic-concurrency check.",
		}),
		appendSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name: "anchorage_event_append_seconds", Help: "Time from append to durable acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		ackSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name: "anchorage_event_ack_seconds", Help: "Time from append to the server's acknowledgement, before the wait for its fsync (the rest of anchorage_event_append_seconds).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		syncSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name: "anchorage_event_fsync_seconds", Help: "Duration of group-commit fsyncs of the event stream.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		syncGroup: f.NewHistogram(prometheus.HistogramOpts{
			Name: "anchorage_event_fsync_group_size", Help: "Appends made durable by one group-commit fsync.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		reads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "anchorage_event_log_reads_total",
			Help: "Reads of a range of the event log, by path: wire (the fast read), wire_fallback (a fast read that failed and was finished by the ordered consumer), ordered.",
		}, []string{"path"}),
	}
}

func (m *Metrics) observeSync(d time.Duration, waiters int) {
	m.syncSeconds.Observe(d.Seconds())
	m.syncGroup.Observe(float64(waiters))
}
