package node_test

import (
	"context"
	"math"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/configkv"
	kwmodel "keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// scrape reads the node's /metrics over HTTP and parses it with
// Prometheus's text parser.
func scrape(t *testing.T, e *env) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+e.node.AdminAddr()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// series returns the samples of family name whose labels hold want (a
// label absent from a sample counts as "").
func series(fams map[string]*dto.MetricFamily, name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// value is the one sample's value (counter, gauge or untyped; a
// histogram's count), failing unless exactly one sample matches.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	ms := series(fams, name, want)
	if len(ms) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, want, len(ms))
	}
	m := ms[0]
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	t.Fatalf("%s%v: no value", name, want)
	return 0
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	srv := upstreamServer(t, e.server, e.clients, false, nil)
	e.apply(t, "good", "http1", addr(srv), mtls(e.ca, e.gateway, nil))
	other := testca.New(t, "some other CA")
	e.apply(t, "bad", "http1", addr(srv), mtls(other, e.gateway, nil))

	do(t, "GET", e.url("/good/x")).echo(t)
	if a := do(t, "GET", e.url("/bad/x")); a.status != http.StatusBadGateway {
		t.Fatalf("bad upstream: status %d: %s", a.status, a.body)
	}

	fams := scrape(t, e)
	t.Run("good request", func(t *testing.T) {
		if got := value(t, fams, "keyway_upstream_requests_total", map[string]string{"upstream": "good", "code": "200"}); got != 1 {
			t.Errorf("requests_total{good,200} = %v, want 1", got)
		}
		if got := value(t, fams, "keyway_upstream_request_duration_seconds", map[string]string{"upstream": "good", "class": "2xx"}); got != 1 {
			t.Errorf("request_duration_seconds{good,2xx} count = %v, want 1", got)
		}
		if got := value(t, fams, "keyway_upstream_handshakes_total", map[string]string{"direction": "outbound", "upstream": "good", "result": "ok", "reason": ""}); got < 1 {
			t.Errorf("handshakes_total{good,ok} = %v, want at least 1", got)
		}
		if got := value(t, fams, "keyway_upstream_handshake_duration_seconds", map[string]string{"upstream": "good"}); got < 1 {
			t.Errorf("handshake_duration_seconds{good} count = %v, want at least 1", got)
		}
		if ms := series(fams, "keyway_upstream_errors_total", map[string]string{"upstream": "good"}); len(ms) != 0 {
			t.Errorf("errors_total{good}: %d series, want none", len(ms))
		}
	})
	t.Run("unknown authority", func(t *testing.T) {
		if got := value(t, fams, "keyway_upstream_handshakes_total", map[string]string{"direction": "outbound", "upstream": "bad", "result": "error", "reason": "unknown_authority"}); got < 1 {
			t.Errorf("handshakes_total{bad,error,unknown_authority} = %v, want at least 1", got)
		}
		if got := value(t, fams, "keyway_upstream_errors_total", map[string]string{"upstream": "bad", "reason": "unknown_authority"}); got != 1 {
			t.Errorf("errors_total{bad,unknown_authority} = %v, want 1", got)
		}
		if got := value(t, fams, "keyway_upstream_requests_total", map[string]string{"upstream": "bad", "code": "502"}); got != 1 {
			t.Errorf("requests_total{bad,502} = %v, want 1", got)
		}
		if got := value(t, fams, "keyway_upstream_request_duration_seconds", map[string]string{"upstream": "bad", "class": "error"}); got != 1 {
			t.Errorf("request_duration_seconds{bad,error} count = %v, want 1", got)
		}
	})
	t.Run("config", func(t *testing.T) {
		if got, want := value(t, fams, "keyway_config_revision", nil), float64(e.node.Revision()); got != want {
			t.Errorf("config_revision = %v, want %v", got, want)
		}
		if got := value(t, fams, "keyway_config_skipped", nil); got != 0 {
			t.Errorf("config_skipped = %v, want 0", got)
		}
		// Every put after the node loaded the (empty) bucket is a change.
		if got := value(t, fams, "keyway_config_apply_latency_seconds", nil); got < 1 {
			t.Errorf("config_apply_latency_seconds count = %v, want at least 1", got)
		}
		for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
			if fams[name] == nil {
				t.Errorf("%s missing", name)
			}
		}
	})

	expiry := func(t *testing.T, fams map[string]*dto.MetricFamily, kp *testca.KeyPair) {
		t.Helper()
		labels := map[string]string{"role": "upstream-client", "upstream": "good", "fingerprint": kp.Fingerprint()}
		got := value(t, fams, "keyway_certificate_expiry_seconds", labels)
		if want := time.Until(kp.Cert.NotAfter).Seconds(); math.Abs(got-want) > 5 {
			t.Errorf("certificate_expiry_seconds%v = %v, want %v (±5)", labels, got, want)
		}
		if n := len(series(fams, "keyway_certificate_expiry_seconds", map[string]string{"role": "upstream-client", "upstream": "good"})); n != 1 {
			t.Errorf("certificate_expiry_seconds{role=upstream-client,upstream=good}: %d series, want 1", n)
		}
		// The CA the upstream is verified with has its own series.
		ca := map[string]string{"role": "upstream-ca", "upstream": "good", "fingerprint": certs.Fingerprint(e.ca.Cert)}
		if got, want := value(t, fams, "keyway_certificate_expiry_seconds", ca), time.Until(e.ca.Cert.NotAfter).Seconds(); math.Abs(got-want) > 5 {
			t.Errorf("certificate_expiry_seconds%v = %v, want %v (±5)", ca, got, want)
		}
	}
	t.Run("expiry", func(t *testing.T) { expiry(t, fams, e.gateway) })
	t.Run("expiry after rotation", func(t *testing.T) {
		rotated := e.clients.Issue(testca.Options{CommonName: "gateway-rotated", NotAfter: time.Now().Add(72 * time.Hour)})
		waitRevision(t, e.node, put(t, e.kv, binding(t, "good-mtls", "good", mtls(e.ca, rotated, nil))))
		fams := scrape(t, e)
		expiry(t, fams, rotated)
		if ms := series(fams, "keyway_certificate_expiry_seconds", map[string]string{"upstream": "good", "fingerprint": e.gateway.Fingerprint()}); len(ms) != 0 {
			t.Errorf("the replaced certificate's series is still there")
		}
		if got, want := value(t, fams, "keyway_config_revision", nil), float64(e.node.Revision()); got != want {
			t.Errorf("config_revision = %v, want %v", got, want)
		}
		// The rebuilt Upstream records into the same series.
		if got := value(t, fams, "keyway_upstream_requests_total", map[string]string{"upstream": "good", "code": "200"}); got != 1 {
			t.Errorf("after a rebuild: requests_total{good,200} = %v, want 1", got)
		}
	})
	t.Run("deleted service", func(t *testing.T) {
		if err := e.kv.Delete(context.Background(), configkv.Key(kwmodel.Ref{Kind: kwmodel.KindService, Name: "bad"})); err != nil {
			t.Fatal(err)
		}
		waitRevision(t, e.node, lastRevision(t, e.kv))
		// Its Upstream is drained in the background, at once when idle.
		deadline := time.Now().Add(10 * time.Second)
		for {
			fams := scrape(t, e)
			left := 0
			for name := range fams {
				left += len(series(fams, name, map[string]string{"upstream": "bad"}))
			}
			if left == 0 {
				if len(series(fams, "keyway_upstream_requests_total", map[string]string{"upstream": "good"})) != 1 {
					t.Errorf("the series of the Service left were removed too")
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("10 s after the Service was deleted, %d series still name it", left)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
