package bench

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/access"
	"keyway.dev/internal/testwait"
	"keyway.dev/tests/harness"
)

// BenchmarkAuthCost: what authentication costs per API call. One Get
// through the real policy binary, sequential on one keep-alive HTTP/2
// connection, against two policy services on the same NATS: one with
// access control (the operator's client certificate over TLS; and a bearer
// token over TLS), one with --insecure-no-auth (h2c). Rounds alternate
// between them; the metrics are medians over all calls of each mode, and
// the server's CPU time per call.
func BenchmarkAuthCost(b *testing.B) {
	const (
		rounds    = 5
		roundTime = time.Second
	)
	natsURL, _ := harness.NATS(b)
	securedURL, secured := harness.Policy(b, natsURL)
	openURL, open := harness.Policy(b, natsURL, "--insecure-no-auth")

	h2c := &http.Client{Transport: &http.Transport{Protocols: func() *http.Protocols {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		return &p
	}()}}
	modes := []struct {
		name   string
		client policyv1connect.PolicyServiceClient
		pid    int
	}{
		{"insecure-no-auth", policyv1connect.NewPolicyServiceClient(h2c, openURL), open.Pid()},
		{"mtls", policyv1connect.NewPolicyServiceClient(harness.Operator(b).HTTP, securedURL), secured.Pid()},
		{"token", policyv1connect.NewPolicyServiceClient(harness.TokenClient(b, harness.Suite(b).Tokens[access.Operator]), securedURL), secured.Pid()},
	}
	ctx := context.Background()
	svc := &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{ApiVersion: "keyway.dev/v1alpha1", Kind: "Service",
		Metadata: &policyv1.ObjectMeta{Name: "orders"}, Spec: &policyv1.ServiceSpec{Address: "127.0.0.1:9443"}}}}
	if _, err := modes[1].client.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{svc}})); err != nil {
		b.Fatal(err)
	}
	req := &policyv1.GetRequest{Kind: "Service", Name: "orders"}
	// Both services see the Service (one bucket); warm each connection.
	for _, m := range modes {
		testwait.Eventually(b, 10*time.Second, func() error {
			if _, err := m.client.Get(ctx, connect.NewRequest(req)); err != nil {
				return fmt.Errorf("%s: Get: %w", m.name, err)
			}
			return nil
		})
	}

	lat := make([][]float64, len(modes))
	cpu := make([][]float64, len(modes))
	b.ResetTimer()
	for r := range rounds {
		for i := range modes {
			// Alternate the order too, so that neither mode always
			// follows the other.
			m := modes[(i+r)%len(modes)]
			idx := (i + r) % len(modes)
			cpu0, _ := harness.CPUTime(m.pid)
			n := 0
			end := time.Now().Add(roundTime)
			for time.Now().Before(end) {
				began := time.Now()
				if _, err := m.client.Get(ctx, connect.NewRequest(req)); err != nil {
					b.Fatalf("%s: Get: %v", m.name, err)
				}
				lat[idx] = append(lat[idx], float64(time.Since(began).Microseconds()))
				n++
			}
			cpu1, _ := harness.CPUTime(m.pid)
			cpu[idx] = append(cpu[idx], float64((cpu1-cpu0).Microseconds())/float64(n))
		}
	}
	b.StopTimer()
	for i, m := range modes {
		b.ReportMetric(median(lat[i]), m.name+"-µs/call")
		b.ReportMetric(median(cpu[i]), m.name+"-server-cpu-µs/call")
	}
	b.ReportMetric(median(lat[1])-median(lat[0]), "mtls-extra-µs/call")
	b.ReportMetric(median(lat[2])-median(lat[0]), "token-extra-µs/call")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("auth cost: median Get %.0f µs (--insecure-no-auth), %.0f µs (mTLS), %.0f µs (token over TLS); %d calls per mode\n",
		median(lat[0]), median(lat[1]), median(lat[2]), len(lat[0]))
}
