package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"keyway.dev/internal/revocation"
)

// Revocation is a node's metrics of revocation checks of client and
// upstream certificates:
// checks by mode, phase and result, fetches of CRLs and OCSP responses, and
// at scrape time the CRLs held. Every label takes a handful of values. Safe
// for concurrent use; counting a check does not allocate.
type Revocation struct {
	// checks are indexed by mode (soft-fail, hard-fail), phase
	// (handshake, request) and result (unknown, good, revoked).
	checks  [2][2][3]prometheus.Counter
	fetches [2][2]prometheus.Counter // kind (crl, ocsp), result (ok, error)
}

// RevocationSource reads what is held at scrape time: the CRLs and the
// number of OCSP responses (inbound.Manager's RevocationLists and
// RevocationOCSP, whose cache the Upstreams share).
type RevocationSource struct {
	Lists func() []revocation.ListStatus
	OCSP  func() int
}

var revocationModes = [2]revocation.Mode{revocation.SoftFail, revocation.HardFail}

// NewRevocation registers the revocation metrics in m's registry.
func (m *Metrics) NewRevocation(src RevocationSource) *Revocation {
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyway_revocation_checks_total",
		Help: "Revocation checks of client certificates on Listener hosts and of upstream certificates (tls-outbound bindings), by mode (soft-fail, hard-fail), phase (handshake: a new connection; request: each request on an open connection, Listener hosts only) and result (good, revoked, unknown). A revoked certificate is refused; an unknown one is refused in hard-fail mode and allowed in soft-fail mode.",
	}, []string{"mode", "phase", "result"})
	fetches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyway_revocation_fetches_total",
		Help: "Fetches of CRLs and OCSP responses, by kind (crl, ocsp) and result (ok: a verified list or response, or a CRL unchanged since the last fetch; error: see the node's log).",
	}, []string{"kind", "result"})
	r := &Revocation{}
	for i, mode := range revocationModes {
		for j, phase := range []string{"handshake", "request"} {
			for k, result := range []revocation.Result{revocation.Unknown, revocation.Good, revocation.Revoked} {
				r.checks[i][j][k] = checks.WithLabelValues(string(mode), phase, result.String())
			}
		}
	}
	for i, kind := range []string{"crl", "ocsp"} {
		for j, result := range []string{"ok", "error"} {
			r.fetches[i][j] = fetches.WithLabelValues(kind, result)
		}
	}
	m.reg.MustRegister(checks, fetches, &revocationLists{src: src, now: time.Now})
	return r
}

// ObserveRevocationCheck implements inbound.RevocationObserver and
// upstream.RevocationObserver.
func (r *Revocation) ObserveRevocationCheck(mode revocation.Mode, phase string, result revocation.Result) {
	i := 0
	if mode == revocation.HardFail {
		i = 1
	}
	j := 0
	if phase == "request" {
		j = 1
	}
	if int(result) < len(r.checks[i][j]) {
		r.checks[i][j][result].Inc()
	}
}

// ObserveFetch counts one fetch (revocation.Options.OnFetch).
func (r *Revocation) ObserveFetch(e revocation.FetchEvent) {
	i, j := 0, 0
	if e.Kind == "ocsp" {
		i = 1
	}
	if e.Err != nil {
		j = 1
	}
	r.fetches[i][j].Inc()
}

// revocationLists reports at scrape time the CRLs held by state, the
// revoked serials they list, and the OCSP responses held.
type revocationLists struct {
	src RevocationSource
	now func() time.Time
}

var (
	crlsDesc = prometheus.NewDesc("keyway_revocation_crls",
		"CRLs the node holds for its Listener hosts and Upstreams, by state: current (verified, before its nextUpdate), stale (verified, past its nextUpdate: certificates it does not list have an unknown status) or missing (no list verified yet: not fetched, or every fetch failed).",
		[]string{"state"}, nil)
	revokedDesc = prometheus.NewDesc("keyway_revocation_crl_revoked_entries",
		"Revoked certificates listed by the CRLs the node holds.", nil, nil)
	ocspDesc = prometheus.NewDesc("keyway_revocation_ocsp_responses",
		"OCSP responses the node holds (or is asking for), one per client certificate checked recently.", nil, nil)
)

func (l *revocationLists) Describe(ch chan<- *prometheus.Desc) {
	ch <- crlsDesc
	ch <- revokedDesc
	ch <- ocspDesc
}

func (l *revocationLists) Collect(ch chan<- prometheus.Metric) {
	now := l.now()
	var current, stale, missing, revoked float64
	for _, s := range l.src.Lists() {
		switch {
		case s.NextUpdate.IsZero():
			missing++
		case s.Current(now):
			current++
		default:
			stale++
		}
		revoked += float64(s.Revoked)
	}
	ch <- prometheus.MustNewConstMetric(crlsDesc, prometheus.GaugeValue, current, "current")
	ch <- prometheus.MustNewConstMetric(crlsDesc, prometheus.GaugeValue, stale, "stale")
	ch <- prometheus.MustNewConstMetric(crlsDesc, prometheus.GaugeValue, missing, "missing")
	ch <- prometheus.MustNewConstMetric(revokedDesc, prometheus.GaugeValue, revoked)
	ch <- prometheus.MustNewConstMetric(ocspDesc, prometheus.GaugeValue, float64(l.src.OCSP()))
}
