// Package metrics is the secrets service's Prometheus metrics: the expiry
// of every certificate it holds (computed at scrape time), whether the
// backend answers, bucket publications, PKI issuances and leadership, and
// backend versions rejected. The service owns its registry, served by
// [Metrics.Handler].
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"keyway.dev/internal/certs"
	"keyway.dev/secrets/internal/store"
	"keyway.dev/secrets/internal/validate"
)

// Source is what the expiry collector reads: the store's view.
type Source interface {
	Aliases() []*store.Alias
	Truststores() []*store.Truststore
	RejectedCounts() (aliases, truststores int)
}

// Metrics holds the service's metrics. Safe for concurrent use; it
// implements [store.Observer].
type Metrics struct {
	reg       *prometheus.Registry
	backendUp prometheus.Gauge
	published *prometheus.CounterVec
	issued    *prometheus.CounterVec
	leader    prometheus.Gauge
	rejected  *prometheus.CounterVec
}

var _ store.Observer = (*Metrics)(nil)

// New registers the metrics; SetSource adds the expiry collector.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		backendUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyway_secrets_backend_up",
			Help: "1 when the secrets backend (Vault or the local directory) answered the last poll, 0 when it did not (the service then serves the material it last fetched).",
		}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_secrets_published_total",
			Help: "Writes of secret versions into the keyway-secret-versions bucket, by result (ok, error).",
		}, []string{"result"}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_secrets_pki_issued_total",
			Help: "Certificates issued from Vault PKI (first issue and renewals), by result (ok, error).",
		}, []string{"result"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyway_secrets_pki_leader",
			Help: "1 on the replica that issues and renews Vault PKI certificates (it holds the lease in keyway-secrets-leader, or runs without one), 0 on the others.",
		}),
		// Labelled by class, not by secret: reasons are a closed set,
		// and the API names the secrets (keywayctl secrets list).
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_secrets_rejected_versions_total",
			Help: "Backend versions of aliases and truststores the service refused to serve (written outside it and breaking the rules of a put), by kind (alias, truststore) and reason (key_mismatch, weak_key, expired, not_yet_valid, unparsable, missing_field, usage, chain, pki, invalid). The last good version stays served.",
		}, []string{"kind", "reason"}),
	}
	// Every series exists from the start, so that rate() and alerts see
	// the first rejection.
	for _, kind := range []string{"alias", "truststore"} {
		for _, r := range validate.Reasons {
			m.rejected.WithLabelValues(kind, string(r))
		}
	}
	m.reg.MustRegister(m.backendUp, m.published, m.issued, m.leader, m.rejected,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Register adds collectors to the service's registry (the audit writer's).
func (m *Metrics) Register(cs ...prometheus.Collector) { m.reg.MustRegister(cs...) }

// SetSource registers the per-certificate expiry collector and the
// rejected-secrets gauge over src.
func (m *Metrics) SetSource(src Source) {
	m.reg.MustRegister(&expiry{src: src}, &rejectedNow{src: src})
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// BackendUp implements [store.Observer].
func (m *Metrics) BackendUp(up bool) {
	if up {
		m.backendUp.Set(1)
	} else {
		m.backendUp.Set(0)
	}
}

// SetLeader records whether this replica is the PKI leader.
func (m *Metrics) SetLeader(leading bool) {
	if leading {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

// Published implements [store.Observer].
func (m *Metrics) Published(ok bool) { m.published.WithLabelValues(result(ok)).Inc() }

// Renewed implements [store.Observer].
func (m *Metrics) Renewed(ok bool) { m.issued.WithLabelValues(result(ok)).Inc() }

// Rejected implements [store.Observer].
func (m *Metrics) Rejected(kind string, reason validate.Reason) {
	m.rejected.WithLabelValues(kind, string(reason)).Inc()
}

func result(ok bool) string {
	if ok {
		return "ok"
	}
	return "error"
}

var expiryDesc = prometheus.NewDesc(
	"keyway_secrets_certificate_expiry_seconds",
	"Seconds until each certificate the service holds expires (negative once expired): every certificate of an alias's chain (leaf first) and of a truststore.",
	[]string{"keystore", "alias", "truststore", "fingerprint"}, nil)

// expiry computes the gauge at scrape time, so a replaced certificate's
// series goes away with it.
type expiry struct{ src Source }

func (e *expiry) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (e *expiry) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	seen := make(map[[4]string]bool)
	emit := func(labels [4]string, notAfter time.Time) {
		if seen[labels] {
			return
		}
		seen[labels] = true
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, notAfter.Sub(now).Seconds(), labels[:]...)
	}
	for _, a := range e.src.Aliases() {
		for _, c := range a.Chain {
			emit([4]string{a.Record.Keystore, a.Record.Alias, "", certs.Fingerprint(c)}, c.NotAfter)
		}
	}
	for _, t := range e.src.Truststores() {
		for _, c := range t.Certs {
			emit([4]string{"", "", t.Record.Name, certs.Fingerprint(c)}, c.NotAfter)
		}
	}
}

var rejectedDesc = prometheus.NewDesc(
	"keyway_secrets_rejected",
	"Aliases and truststores whose current backend version is rejected now (the service serves the last good version, or none), by kind (alias, truststore); keywayctl secrets list names them.",
	[]string{"kind"}, nil)

// rejectedNow reads the gauge at scrape time from the store.
type rejectedNow struct{ src Source }

func (r *rejectedNow) Describe(ch chan<- *prometheus.Desc) { ch <- rejectedDesc }

func (r *rejectedNow) Collect(ch chan<- prometheus.Metric) {
	aliases, truststores := r.src.RejectedCounts()
	ch <- prometheus.MustNewConstMetric(rejectedDesc, prometheus.GaugeValue, float64(aliases), "alias")
	ch <- prometheus.MustNewConstMetric(rejectedDesc, prometheus.GaugeValue, float64(truststores), "truststore")
}
