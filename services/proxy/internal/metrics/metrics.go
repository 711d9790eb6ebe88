// Package metrics is a proxy node's Prometheus metrics: upstream and
// Listener (inbound) handshakes,
// requests and failures, the client certificates' time to expiry, and how
// current the node's configuration is. Each node owns its registry (no
// process-wide default registry), served by [Metrics.Handler].
//
// The request path only increments metrics whose label children were looked
// up before: an Upstream's recorder keeps its counters by status code in a
// small map and its duration histograms by status class, so recording a
// request does not allocate. The series of an upstream go once the last
// Upstream built for it is drained: a deleted Service leaves none behind.
package metrics

import (
	"crypto/x509"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"keyway.dev/internal/certfiles"
	"keyway.dev/internal/certs"
	"keyway.dev/internal/failure"
	"keyway.dev/internal/secretref"
	"keyway.dev/proxy/internal/publish"
	"keyway.dev/proxy/internal/upstream"
)

// Source gives the node's current configuration snapshot: cheap (an atomic
// load), never nil. watch.Watcher.Snapshot is one.
type Source func() *publish.Snapshot

// Metrics holds a node's metrics and their registry. Safe for concurrent use.
type Metrics struct {
	reg          *prometheus.Registry
	handshakes   *prometheus.CounterVec
	handshakeDur *prometheus.HistogramVec
	inbound      *prometheus.CounterVec
	clientChains *prometheus.CounterVec
	requests     *prometheus.CounterVec
	requestDur   *prometheus.HistogramVec
	errors       *prometheus.CounterVec
	applyLatency prometheus.Histogram
	panics       *prometheus.CounterVec
	expiryEvents *prometheus.CounterVec

	mu        sync.Mutex
	recorders map[string]*recorder // by upstream name; they outlive rebuilds
}

// latencyBuckets span 1ms to about 16s: handshakes and configuration
// changes are fast on a LAN and slow when something is wrong.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 15)

// Option adjusts what the metrics report.
type Option func(*options)

type options struct {
	own map[string]func() *x509.Certificate
}

// WithOwnCertificates reports the expiry of the node's own certificates by
// role ("internal-client": for the secrets service; "admin-server"), as
// each func returns it at scrape time (nil leaves it out).
func WithOwnCertificates(byRole map[string]func() *x509.Certificate) Option {
	return func(o *options) { o.own = byRole }
}

// New registers the node's metrics, reading configuration state from src at
// scrape time, and the Go runtime and process collectors.
func New(src Source, opts ...Option) *Metrics {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_upstream_handshakes_total",
			Help: "Outbound TLS handshakes (including their TCP connection) with upstream endpoints, by result and failure reason.",
		}, []string{"direction", "upstream", "result", "reason"}),
		handshakeDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyway_upstream_handshake_duration_seconds",
			Help:    "Time to connect to an upstream endpoint and complete the TLS handshake, successful or not.",
			Buckets: latencyBuckets,
		}, []string{"upstream"}),
		inbound: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_inbound_handshakes_total",
			Help: "TLS handshakes of clients with a Listener, by result and failure reason (no_client_certificate, unknown_authority, expired, protocol_version, ...).",
		}, []string{"listener", "result", "reason"}),
		clientChains: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_inbound_client_chain_verifications_total",
			Help: "Client certificate chains presented to Listener hosts that verify them, by whether the chain was verified at the handshake (verified) or an earlier verification of the same chain was reused (cached).",
		}, []string{"listener", "result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_upstream_requests_total",
			Help: "Requests forwarded to an upstream, by the status code the client got (the upstream's, or the failure's).",
		}, []string{"upstream", "code"}),
		requestDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyway_upstream_request_duration_seconds",
			Help:    "Time from forwarding a request to an upstream to the end of the response body sent to the client, by the class of the status the client got (1xx for an upgraded connection, 2xx to 5xx, error when the gateway answered with a failure body).",
			Buckets: prometheus.DefBuckets,
		}, []string{"upstream", "class"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_upstream_errors_total",
			Help: "Requests answered with a failure body (502, 503, 504) because the upstream could not be reached, by failure reason.",
		}, []string{"upstream", "reason"}),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "keyway_config_apply_latency_seconds",
			Help:    "Time from a configuration change's creation in the store to the node serving a snapshot with it.",
			Buckets: latencyBuckets,
		}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_config_panics_total",
			Help: "Panics recovered while decoding or building one stored value (the value is then refused, see /status), by source (config, secrets) and stage.",
		}, []string{"source", "stage"}),
		expiryEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_certificate_expiry_events_total",
			Help: "Certificate expiry events this node published on keyway.events.cert.expiring, by the threshold crossed (30d, 7d, 1d by default: --cert-expiry-thresholds).",
		}, []string{"threshold"}),
		recorders: make(map[string]*recorder),
	}
	m.reg.MustRegister(
		m.handshakes, m.handshakeDur, m.inbound, m.clientChains, m.requests, m.requestDur, m.errors, m.applyLatency, m.panics, m.expiryEvents,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyway_config_revision",
			Help: "The store revision of the configuration the node has applied.",
		}, func() float64 { return float64(src().Revision) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyway_config_skipped",
			Help: "Stored values the node refused and does not serve (see /status), 0 when it serves the bucket as of its revision.",
		}, func() float64 { return float64(len(src().Skipped)) }),
		&expiry{src: src, own: o.own, now: time.Now},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Handler serves the metrics in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the node's registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveConfigPanic counts a panic the configuration watcher recovered
// (watch.Options.Panicked).
func (m *Metrics) ObserveConfigPanic(stage string) {
	m.panics.WithLabelValues("config", stage).Inc()
}

// ObserveExpiryEvent counts one expiry event published for threshold (one
// of the node's configured thresholds, so the label is bounded).
func (m *Metrics) ObserveExpiryEvent(threshold string) {
	m.expiryEvents.WithLabelValues(threshold).Inc()
}

// ObserveSecretsPanic counts a panic the secrets source recovered
// (secrets.Options.Panicked).
func (m *Metrics) ObserveSecretsPanic(stage string) {
	m.panics.WithLabelValues("secrets", stage).Inc()
}

// ObserveHandshake implements outbound.Observer.
func (m *Metrics) ObserveHandshake(upstreamName string, reason failure.Reason, elapsed time.Duration) {
	result := "ok"
	if reason != "" {
		result = "error"
	}
	m.handshakes.WithLabelValues("outbound", upstreamName, result, string(reason)).Inc()
	m.handshakeDur.WithLabelValues(upstreamName).Observe(elapsed.Seconds())
}

// ObserveInboundHandshake implements inbound.HandshakeObserver: one
// handshake on a Listener, reason "" when it completed.
func (m *Metrics) ObserveInboundHandshake(listener string, reason failure.Reason) {
	result := "ok"
	if reason != "" {
		result = "error"
	}
	m.inbound.WithLabelValues(listener, result, string(reason)).Inc()
}

// ObserveClientChain implements inbound.ChainObserver: one client chain
// presented to a Listener host that verifies client certificates.
func (m *Metrics) ObserveClientChain(listener string, cached bool) {
	result := "verified"
	if cached {
		result = "cached"
	}
	m.clientChains.WithLabelValues(listener, result).Inc()
}

// ObserveApplyLatency records one configuration change's apply latency
// (watch.Options.ApplyLatency).
func (m *Metrics) ObserveApplyLatency(d time.Duration) { m.applyLatency.Observe(d.Seconds()) }

// Recorder returns the request recorder of an upstream
// (upstream.Options.Recorder): the same one for every Upstream built for
// that name, so its cached label children survive rebuilds. Each Upstream
// releases it once drained; the last release removes the upstream's series.
func (m *Metrics) Recorder(upstreamName string) upstream.Recorder {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.recorders[upstreamName]
	if r == nil {
		r = &recorder{m: m, name: upstreamName}
		m.recorders[upstreamName] = r
	}
	r.refs++
	return r
}

// release drops one Upstream's hold on r; the last one removes every
// series of r's upstream (requests, durations, errors and handshakes).
func (m *Metrics) release(r *recorder) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.refs--; r.refs > 0 {
		return
	}
	// Requests still running on a drain cut short record nothing more:
	// they would bring series back.
	r.released.Store(true)
	delete(m.recorders, r.name)
	l := prometheus.Labels{"upstream": r.name}
	m.requests.DeletePartialMatch(l)
	m.requestDur.DeletePartialMatch(l)
	m.errors.DeletePartialMatch(l)
	m.handshakes.DeletePartialMatch(l)
	m.handshakeDur.DeletePartialMatch(l)
}

// Status classes: the class label of the request duration histogram.
const (
	classError = iota
	class1xx
	class2xx
	class3xx
	class4xx
	class5xx
	numClasses
)

var classNames = [numClasses]string{"error", "1xx", "2xx", "3xx", "4xx", "5xx"}

// classOf is the class of a request answered with code: error when the
// gateway answered with a failure body (reason set).
func classOf(code int, reason failure.Reason) int {
	if reason != "" || code < 100 || code > 599 {
		return classError
	}
	return code / 100
}

// recorder counts one upstream's requests. The request path reads its
// counters with one atomic load and a lookup in a small map, and its
// histograms with one atomic load; the rare first request of a status code
// or class creates the child under mu.
type recorder struct {
	m    *Metrics
	name string
	// refs counts the Upstreams holding r; under m.mu.
	refs     int
	released atomic.Bool

	mu sync.Mutex
	// codes is replaced, never modified, when a status code is first seen.
	codes     atomic.Pointer[map[int]prometheus.Counter]
	durations [numClasses]atomic.Pointer[observer]
}

type observer struct{ prometheus.Observer }

func (r *recorder) Request(code int, reason failure.Reason, elapsed time.Duration) {
	if r.released.Load() {
		return
	}
	r.codeCounter(code).Inc()
	r.duration(classOf(code, reason)).Observe(elapsed.Seconds())
	if reason != "" && (code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout) {
		// The failure path allocates anyway (its JSON body).
		r.m.errors.WithLabelValues(r.name, string(reason)).Inc()
	}
}

// Release implements upstream.Recorder.
func (r *recorder) Release() { r.m.release(r) }

func (r *recorder) codeCounter(code int) prometheus.Counter {
	if codes := r.codes.Load(); codes != nil {
		if c, ok := (*codes)[code]; ok {
			return c
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.codes.Load()
	var next map[int]prometheus.Counter
	if prev != nil {
		if c, ok := (*prev)[code]; ok {
			return c // a racing twin added it
		}
		next = maps.Clone(*prev)
	} else {
		next = make(map[int]prometheus.Counter, 1)
	}
	// Bounded: net/http reads three-digit status codes only.
	c := r.m.requests.WithLabelValues(r.name, strconv.Itoa(code))
	next[code] = c
	r.codes.Store(&next)
	return c
}

func (r *recorder) duration(class int) prometheus.Observer {
	if o := r.durations[class].Load(); o != nil {
		return o.Observer
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if o := r.durations[class].Load(); o != nil {
		return o.Observer
	}
	o := &observer{r.m.requestDur.WithLabelValues(r.name, classNames[class])}
	r.durations[class].Store(o)
	return o.Observer
}

// expiry reports, at scrape time, the seconds until each certificate the
// node presents or trusts expires: every Listener host's server
// certificate and client CAs, every upstream's client certificate and
// trusted CAs (not the system's roots), and the node's own certificates
// (for the secrets service, and the admin port). It reads the snapshot, so
// the series of replaced and deleted things drop out.
type expiry struct {
	src Source
	own map[string]func() *x509.Certificate
	now func() time.Time
}

func (e *expiry) Describe(ch chan<- *prometheus.Desc) { ch <- certfiles.ExpiryDesc }

func (e *expiry) Collect(ch chan<- prometheus.Metric) {
	now := e.now()
	emit := func(cert *x509.Certificate, role, upstream, listener, host string, ref *secretref.Ref, truststore string) {
		var keystore, alias string
		if ref != nil {
			keystore, alias = ref.Keystore, ref.Alias
		}
		ch <- prometheus.MustNewConstMetric(certfiles.ExpiryDesc, prometheus.GaugeValue, cert.NotAfter.Sub(now).Seconds(),
			role, upstream, listener, host, keystore, alias, truststore, certs.Fingerprint(cert))
	}
	snap := e.src()
	for name, u := range snap.Upstreams.All() {
		t := u.TLS()
		if t == nil {
			continue
		}
		if t.Certificate != nil && t.Certificate.Leaf != nil {
			emit(t.Certificate.Leaf, "upstream-client", name, "", "", t.CertificateRef, "")
		}
		for _, ca := range t.TrustedCAs {
			emit(ca, "upstream-ca", name, "", "", nil, t.Truststore)
		}
	}
	for _, l := range snap.Listeners {
		for i := range l.Hosts {
			h := &l.Hosts[i]
			host := "*"
			if len(h.Hostnames) > 0 {
				host = h.Hostnames[0]
			}
			if h.Certificate != nil && h.Certificate.Leaf != nil {
				emit(h.Certificate.Leaf, "listener-server", "", l.Name, host, h.CertificateRef, "")
			}
			for _, ca := range h.ClientCAs {
				emit(ca, "listener-client-ca", "", l.Name, host, nil, h.ClientTruststore)
			}
		}
	}
	for role, cert := range e.own {
		if c := cert(); c != nil {
			emit(c, role, "", "", "", nil, "")
		}
	}
}
