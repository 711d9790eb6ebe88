package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/testca"
	"keyway.dev/tests/harness"
)

// goodService is a valid Service for an Apply.
func goodService(name string) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "Service",
		Metadata: &policyv1.ObjectMeta{Name: name},
		Spec:     &policyv1.ServiceSpec{Address: name + ".internal:443"},
	}}}
}

// vmHWM is the peak resident set size of process pid, from /proc.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

// TestPolicyMemoryUnderHugeBodies has 3 clients at once send 30 MB bodies
// to the real keyway-policy binary, with and without a Content-Length,
// for a few rounds: every one is refused with ResourceExhausted, the
// process's peak RSS stays under 256 MiB, and a good apply works after.
func TestPolicyMemoryUnderHugeBodies(t *testing.T) {
	natsURL, _ := harness.NATS(t)
	url, p := harness.Policy(t, natsURL)
	base := vmHWM(t, p.Pid())
	const clients, rounds, size = 3, 3, 30 << 20
	body := []byte(`{"resources":[{"service":{"apiVersion":"keyway.dev/v1alpha1","kind":"Service","metadata":{"name":"x"},"spec":{"address":"` +
		strings.Repeat("a", size) + `"}}}]}`)
	send := func(chunked bool) (int, string, error) {
		var r io.Reader = bytes.NewReader(body)
		if chunked {
			r = io.MultiReader(r) // hides the length: sent chunked
		}
		req, err := http.NewRequest(http.MethodPost, url+policyv1connect.PolicyServiceApplyProcedure, r)
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := harness.Operator(t).HTTP.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, string(b), nil
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var refused, resets int
	for c := range clients {
		wg.Go(func() {
			for r := range rounds {
				code, msg, err := send((c+r)%2 == 1)
				mu.Lock()
				switch {
				case err != nil:
					// The server answered and closed the connection while
					// the client was still writing: refused, unread.
					resets++
				case strings.Contains(msg, "resource_exhausted"):
					refused++
				default:
					t.Errorf("30 MB body: HTTP %d %.300s; want resource_exhausted", code, msg)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	peak := vmHWM(t, p.Pid())
	t.Logf("%d bodies of 30 MB from %d clients: %d refused with resource_exhausted, %d cut while sending; keyway-policy peak RSS (VmHWM) %.1f MiB (%.1f MiB before)",
		clients*rounds, clients, refused, resets, float64(peak)/(1<<20), float64(base)/(1<<20))
	if refused == 0 {
		t.Error("no body was answered with resource_exhausted")
	}
	if peak >= 256<<20 {
		t.Errorf("keyway-policy peak RSS %.1f MiB; want under 256 MiB", float64(peak)/(1<<20))
	}
	c := policyv1connect.NewPolicyServiceClient(harness.Operator(t).HTTP, url)
	if _, err := c.Apply(t.Context(), connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{goodService("after")}})); err != nil {
		t.Fatalf("a good apply after the huge bodies: %v", err)
	}
}

// TestPolicyHealthFollowsNATS stops NATS under the real keyway-policy
// binary: gRPC health for PolicyService turns NOT_SERVING, and SERVING
// again once NATS is back, when applies work again.
func TestPolicyHealthFollowsNATS(t *testing.T) {
	n := harness.StartNATS(t)
	url, _ := harness.Policy(t, n.URL)
	cc, err := grpc.NewClient(strings.TrimPrefix(url, "https://"), grpc.WithTransportCredentials(credentials.NewTLS(harness.Operator(t).TLS)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: policyv1connect.PolicyServiceName})
		if err != nil {
			t.Fatalf("health check: %v", err)
		}
		return r.GetStatus()
	}
	if s := status(); s != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health at start: %v", s)
	}
	n.Stop()
	eventually(t, "health NOT_SERVING while NATS is down", func() (bool, string) {
		s := status()
		return s == healthpb.HealthCheckResponse_NOT_SERVING, s.String()
	})
	n.Start(t)
	eventually(t, "health SERVING once NATS is back", func() (bool, string) {
		s := status()
		return s == healthpb.HealthCheckResponse_SERVING, s.String()
	})
	c := policyv1connect.NewPolicyServiceClient(harness.Operator(t).HTTP, url)
	eventually(t, "an apply after NATS is back", func() (bool, string) {
		_, err := c.Apply(t.Context(), connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{goodService("back")}}))
		return err == nil, fmt.Sprint(err)
	})
}

// TestCLIBadInputTable runs keywayctl against the real policy service
// with bad manifests and names: each run fails, names the field, and
// stores nothing; the service still applies a good manifest after.
func TestCLIBadInputTable(t *testing.T) {
	natsURL, _ := harness.NATS(t)
	url, _ := harness.Policy(t, natsURL)
	dir := t.TempDir()
	ctl := func(args ...string) (string, string, int) {
		return harness.Run(t, harness.Bin(t, "keywayctl"), append(append([]string{"--server", url}, harness.Operator(t).Args...), args...)...)
	}
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	svc := func(name, spec string) string {
		return fmt.Sprintf("apiVersion: keyway.dev/v1alpha1\nkind: Service\nmetadata:\n  name: %s\nspec:\n%s", name, spec)
	}
	addr := "  address: orders.internal:443\n"
	bind := func(config string) string {
		return "apiVersion: keyway.dev/v1alpha1\nkind: Service\nmetadata:\n  name: orders\nspec:\n" + addr + "---\n" +
			"apiVersion: gateway.mulesoft.com/v1alpha1\nkind: PolicyBinding\nmetadata:\n  name: orders-mtls\nspec:\n  targetRef: {kind: Service, name: orders}\n  policyRef: {name: tls-outbound}\n  config:\n" + config
	}
	ca := testca.New(t, "CLI bad input CA")
	indent := func(s, pad string) string {
		return pad + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n"+pad) + "\n"
	}
	hugePEM := strings.Repeat(string(ca.CertPEM()), (600<<10)/len(ca.CertPEM()))
	deep := "    a:\n"
	for i := range 9 {
		deep += strings.Repeat("  ", i+3) + "b:\n"
	}
	deep += strings.Repeat("  ", 12) + "c: x\n"
	cases := []struct {
		name  string
		field string
		args  []string
	}{
		{"unknown field", "adress", []string{"apply", "-f", file("unknown.yaml", svc("orders", "  adress: orders.internal:443\n"))}},
		{"unknown kind", "kind", []string{"apply", "-f", file("kind.yaml", strings.Replace(svc("orders", addr), "kind: Service", "kind: Servise", 1))}},
		{"missing apiVersion", "apiVersion", []string{"apply", "-f", file("noversion.yaml", strings.Replace(svc("orders", addr), "apiVersion: keyway.dev/v1alpha1\n", "", 1))}},
		{"missing kind", "kind", []string{"apply", "-f", file("nokind.yaml", strings.Replace(svc("orders", addr), "kind: Service\n", "", 1))}},
		{"name 4100 chars", "name", []string{"apply", "-f", file("long.yaml", svc(strings.Repeat("a", 4100), addr))}},
		{"name wildcard", "name", []string{"apply", "-f", file("star.yaml", svc(`"*"`, addr))}},
		{"name subject wildcard >", "name", []string{"apply", "-f", file("gt.yaml", svc(`"a.>"`, addr))}},
		{"name dot", "name", []string{"apply", "-f", file("dot.yaml", svc("a.b", addr))}},
		{"name unicode", "name", []string{"apply", "-f", file("uni.yaml", svc("ördérs", addr))}},
		{"name path separator", "name", []string{"apply", "-f", file("slash.yaml", svc("a/b", addr))}},
		{"name 4 MB", "name", []string{"apply", "-f", file("4mb.yaml", svc(strings.Repeat("n", 4<<20), addr))}},
		{"label value too long", "labels", []string{"apply", "-f", file("label.yaml", strings.Replace(svc("orders", addr), "  name: orders\n", "  name: orders\n  labels:\n    app: "+strings.Repeat("v", 64)+"\n", 1))}},
		{"label key invalid", "labels", []string{"apply", "-f", file("labelkey.yaml", strings.Replace(svc("orders", addr), "  name: orders\n", "  name: orders\n  labels:\n    \"Bad_Prefix/app\": v\n", 1))}},
		{"address too long", "address", []string{"apply", "-f", file("addr.yaml", svc("orders", "  address: "+strings.Repeat("h", 300)+":443\n"))}},
		{"port 99999", "address", []string{"apply", "-f", file("port.yaml", svc("orders", "  address: orders.internal:99999\n"))}},
		{"port negative", "address", []string{"apply", "-f", file("portneg.yaml", svc("orders", "  address: orders.internal:-1\n"))}},
		{"huge PEM", "trustedCA", []string{"apply", "-f", file("hugepem.yaml", bind("    trustedCA: |\n"+indent(hugePEM, "      ")))}},
		{"malformed PEM", "trustedCA", []string{"apply", "-f", file("badpem.yaml", bind("    skipValidation: false\n    trustedCA: |\n      -----BEGIN CERTIFICATE-----\n      bm90IGEgY2VydA==\n      -----END CERTIFICATE-----\n"))}},
		{"deep nesting", "config", []string{"apply", "-f", file("deep.yaml", bind("    skipValidation: true\n"+deep))}},
		{"unknown field (JSON)", "adress", []string{"apply", "-f", file("unknown.json", `{"apiVersion":"keyway.dev/v1alpha1","kind":"Service","metadata":{"name":"orders"},"spec":{"adress":"o:1"}}`)}},
		{"body over the limit", "request body", []string{"apply", "-f", file("30mb.yaml", bind("    skipValidation: true\n    sni: "+strings.Repeat("s", 30<<20)+"\n"))}},
		{"get name 4100 chars", "name", []string{"get", "service", strings.Repeat("a", 4100)}},
		{"get name subject wildcard", "name", []string{"get", "service", "orders.>"}},
		{"get name path separator", "name", []string{"get", "service", "../orders"}},
		{"delete name wildcard", "name", []string{"delete", "service", "*"}},
		{"delete name 4100 chars", "name", []string{"delete", "service", strings.Repeat("a", 4100)}},
	}
	c := policyv1connect.NewPolicyServiceClient(harness.Operator(t).HTTP, url)
	stored := func() int {
		resp, err := c.List(t.Context(), connect.NewRequest(&policyv1.ListRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Msg.GetResources())
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := ctl(tc.args...)
			if code == 0 {
				t.Fatalf("keywayctl %s succeeded; want a failure naming %s\n%s", tc.args[0], tc.field, out)
			}
			t.Logf("%.300s", strings.TrimSpace(out+errOut))
			if !strings.Contains(out+errOut, tc.field) {
				t.Errorf("the error does not name %s:\n%.600s", tc.field, out+errOut)
			}
			if n := len(out + errOut); n > 4096 {
				t.Errorf("keywayctl printed %d bytes for one bad value", n)
			}
			if n := stored(); n != 0 {
				t.Errorf("%d resources stored", n)
			}
		})
	}
	t.Logf("bad-input table: %d cases through keywayctl", len(cases))
	if _, errOut, code := ctl("apply", "-f", file("good.yaml", svc("orders", addr))); code != 0 {
		t.Fatalf("a good apply after the table: %s", errOut)
	}
}
