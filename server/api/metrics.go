package api

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the collector's Prometheus metrics.
type Metrics struct {
	reg           prometheus.Registerer
	enrollments   *prometheus.CounterVec
	reports       *prometheus.CounterVec
	events        *prometheus.CounterVec
	reportSeconds prometheus.Histogram
	rpcs          *prometheus.CounterVec
	logins        *prometheus.CounterVec
	// streamsReplaced counts Subscribe streams ended by a newer stream of
	// the same terminal.
	streamsReplaced prometheus.Counter
	// batchReports and batchSeconds describe the group commit of
	// reports: reports per transaction and the transaction's time.
	batchReports prometheus.Histogram
	batchSeconds prometheus.Histogram
}

// NewMetrics registers the metrics with reg; nil reg keeps them unregistered
// (tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg: reg,
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mnguard_enrollments_total", Help: "Enrollment attempts by result.",
		}, []string{"result"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mnguard_reports_total", Help: "Agent reports by result.",
		}, []string{"result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mnguard_events_total", Help: "Agent events received, stored or duplicate.",
		}, []string{"result"}),
		reportSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mnguard_report_duration_seconds", Help: "Time to validate and store one report.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mnguard_grpc_requests_total", Help: "gRPC requests by method and status code.",
		}, []string{"method", "code"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mnguard_login_verifications_total",
			Help: "TOTP login verifications by result: accepted, rejected, locked, unknown_user, invalid (malformed request) or error.",
		}, []string{"result"}),
		streamsReplaced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mnguard_agent_streams_replaced_total",
			Help: "Subscribe streams ended because a newer stream of the same terminal took their place.",
		}),
		batchReports: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mnguard_report_batch_size", Help: "Agent reports stored per transaction (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mnguard_report_batch_duration_seconds", Help: "Time to store and commit one batch of agent reports.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.enrollments, m.reports, m.events, m.reportSeconds, m.rpcs, m.logins, m.streamsReplaced, m.batchReports, m.batchSeconds)
	}
	return m
}

// subscribers exposes the number of live Subscribe streams.
func (m *Metrics) subscribers(count func() int) {
	if m.reg == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mnguard_agent_streams", Help: "Agents connected through Subscribe.",
	}, func() float64 { return float64(count()) }))
}

// observeBatch records one committed batch of n reports.
func (m *Metrics) observeBatch(n int, took time.Duration) {
	m.batchReports.Observe(float64(n))
	m.batchSeconds.Observe(took.Seconds())
}
