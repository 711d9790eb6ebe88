package server_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/testca"
)

// scrapeMetrics reads the service's /metrics over HTTP and parses it with
// Prometheus's text parser.
func scrapeMetrics(t *testing.T, s *stack) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(s.url + "/metrics")
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

// counter is the value of the counter name with exactly these labels (0
// when there is none).
func counter(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
next:
	for _, m := range fams[name].GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		return m.GetCounter().GetValue()
	}
	return 0
}

func TestMetricsCountApplies(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	if _, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{
		Resources: []*policyv1.Resource{service("orders", "orders.internal:8443")},
	})); err != nil {
		t.Fatal(err)
	}
	_, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{
		Resources: []*policyv1.Resource{route("orders", "/orders/", "nowhere")},
	}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("apply of a route to a missing service: %v, want InvalidArgument", err)
	}
	stale := service("orders", "orders.internal:9443")
	stale.GetService().Metadata.Revision = 99
	_, err = s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{stale}}))
	if connect.CodeOf(err) != connect.CodeAborted {
		t.Fatalf("apply at a stale revision: %v, want Aborted", err)
	}

	fams := scrapeMetrics(t, s)
	for _, c := range []struct {
		result string
		want   float64
	}{{"applied", 1}, {"refused", 1}, {"conflict", 1}, {"error", 0}} {
		if got := counter(fams, "keyway_policy_applies_total", map[string]string{"result": c.result, "dry_run": "false"}); got != c.want {
			t.Errorf("applies_total{result=%q,dry_run=false} = %v, want %v", c.result, got, c.want)
		}
	}
	if got := fams["keyway_policy_apply_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); got != 3 {
		t.Errorf("apply_duration_seconds count = %d, want 3", got)
	}
	if fams["go_goroutines"] == nil {
		t.Error("go_goroutines missing")
	}
}

func TestMetricsCountProbes(t *testing.T) {
	t.Parallel()
	s := startStack(t, withKeyStore(t))
	ca := testca.New(t, "upstream CA")
	gateway := ca.Client("keyway-gateway")
	up := mtlsUpstream(t, ca.Server("orders.internal"), ca, tls.VersionTLS13)
	cfg := func(trusted *testca.CA) map[string]any {
		return map[string]any{"skipValidation": false, "trustedCA": string(trusted.CertPEM()), "sni": "orders.internal",
			"certificate": map[string]any{"key": string(gateway.KeyPEM), "crt": string(gateway.CertPEM)}}
	}
	validate := func(trusted *testca.CA) error {
		_, err := s.connect.Apply(context.Background(), connect.NewRequest(&policyv1.ApplyRequest{
			Resources: []*policyv1.Resource{service("orders", up), binding(t, "orders-mtls", "orders", cfg(trusted))},
			DryRun:    true, // probes by default
		}))
		return err
	}
	if err := validate(ca); err != nil {
		t.Fatalf("dry run with the right CA: %v", err)
	}
	if err := validate(testca.New(t, "some other CA")); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("dry run with another CA: %v, want InvalidArgument", err)
	}

	fams := scrapeMetrics(t, s)
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"result": "ok", "reason": ""}, 1},
		{map[string]string{"result": "error", "reason": "unknown_authority"}, 1},
	} {
		if got := counter(fams, "keyway_policy_probes_total", c.labels); got != c.want {
			t.Errorf("probes_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	for _, c := range []struct {
		result string
		want   float64
	}{{"applied", 1}, {"refused", 1}} {
		if got := counter(fams, "keyway_policy_applies_total", map[string]string{"result": c.result, "dry_run": "true"}); got != c.want {
			t.Errorf("applies_total{result=%q,dry_run=true} = %v, want %v", c.result, got, c.want)
		}
	}
}
