// Package metrics is the policy service's Prometheus metrics: applies by
// result and their duration, and live probes by result and failure reason.
// The service owns its registry (no process-wide default registry), served
// by [Metrics.Handler].
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"keyway.dev/internal/failure"
	"keyway.dev/policy/internal/server"
)

// Metrics holds the policy service's metrics and their registry. Safe for
// concurrent use. It implements [server.Observer].
type Metrics struct {
	reg      *prometheus.Registry
	applies  *prometheus.CounterVec
	duration prometheus.Histogram
	probes   *prometheus.CounterVec
}

var _ server.Observer = (*Metrics)(nil)

// New registers the service's metrics and the Go runtime and process
// collectors in a registry of its own.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_policy_applies_total",
			Help: "Apply requests, by result (applied, refused, conflict, error) and whether they were dry runs.",
		}, []string{"result", "dry_run"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyway_policy_apply_duration_seconds",
			Help:    "Time to answer an Apply request: validation, live probes and the store write.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_policy_probes_total",
			Help: "Live probe handshakes with upstream endpoints, by result (ok, error) and failure reason.",
		}, []string{"result", "reason"}),
	}
	m.reg.MustRegister(m.applies, m.duration, m.probes,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Register adds collectors to the service's registry (the audit writer's).
func (m *Metrics) Register(cs ...prometheus.Collector) { m.reg.MustRegister(cs...) }

// Swap unregisters old and registers cs: the series of a part that was
// replaced (the audit writer of a new NATS connection).
func (m *Metrics) Swap(old, cs []prometheus.Collector) {
	for _, c := range old {
		m.reg.Unregister(c)
	}
	m.reg.MustRegister(cs...)
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ObserveApply implements [server.Observer].
func (m *Metrics) ObserveApply(result server.ApplyResult, dryRun bool, elapsed time.Duration) {
	m.applies.WithLabelValues(string(result), strconv.FormatBool(dryRun)).Inc()
	m.duration.Observe(elapsed.Seconds())
}

// ObserveProbe implements [server.Observer].
func (m *Metrics) ObserveProbe(reason failure.Reason) {
	result := "ok"
	if reason != "" {
		result = "error"
	}
	m.probes.WithLabelValues(result, string(reason)).Inc()
}
