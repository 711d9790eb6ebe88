package server_test

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
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

	fams := scrapeMetrics(t, s)
	for _, c := range []struct {
		result string
		want   float64
	}{{"applied", 1}, {"refused", 1}, {"conflict", 0}, {"error", 0}} {
		if got := counter(fams, "keyway_policy_applies_total", map[string]string{"result": c.result, "dry_run": "false"}); got != c.want {
			t.Errorf("applies_total{result=%q,dry_run=false} = %v, want %v", c.result, got, c.want)
		}
	}
	if got := fams["keyway_policy_apply_duration_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); got != 2 {
		t.Errorf("apply_duration_seconds count = %d, want 2", got)
	}
	if fams["go_goroutines"] == nil {
		t.Error("go_goroutines missing")
	}
}
