package console_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "keyway.dev/gen/keyway/node/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/access"
	"keyway.dev/internal/natstest"
	"keyway.dev/internal/nodekv"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/policy/internal/app"
	"keyway.dev/policy/internal/store"
)

// Bearer tokens: the access policy binds the first three to viewer,
// operator and node (a role without viewer's rights); it does not list
// the stranger's.
const (
	tokenViewer   = "console-viewer-token"
	tokenOperator = "console-operator-token"
	tokenNode     = "console-node-token"
	tokenStranger = "console-unknown-token"
)

// world is the policy service with its console, over TLS and the access
// control, on an embedded NATS server; nodes report into its node bucket
// as proxy nodes do.
type world struct {
	api, console string
	apiClient    policyv1connect.PolicyServiceClient
	http         *http.Client
	kv           jetstream.KeyValue
	upstreamCA   *testca.CA
}

func start(t *testing.T) *world {
	t.Helper()
	ns := natstest.Start(t)
	dir := t.TempDir()
	serverCA, operatorCA := testca.New(t, "server CA"), testca.New(t, "operator CA")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	policy := fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: AccessPolicy
spec:
  bindings:
    - role: viewer
      subjects: [{tokenSHA256: %s}]
    - role: operator
      subjects: [{tokenSHA256: %s}]
    - role: node
      subjects: [{tokenSHA256: %s}]
`, access.TokenDigest(tokenViewer), access.TokenDigest(tokenOperator), access.TokenDigest(tokenNode))
	srvKP := serverCA.Server("localhost")
	opts := access.Options{CertFile: write("api.crt", srvKP.CertPEM), KeyFile: write("api.key", srvKP.KeyPEM),
		ClientCAFile: write("operator-ca.crt", operatorCA.CertPEM()), PolicyFile: write("policy.yaml", []byte(policy))}
	apiAddr, consoleAddr := make(chan net.Addr, 1), make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Config{Listen: "127.0.0.1:0", ConsoleListen: "127.0.0.1:0", NATSURL: ns.URL, Store: store.Config{}, Access: opts,
			OnListen: func(a net.Addr) { apiAddr <- a }, OnConsoleListen: func(a net.Addr) { consoleAddr <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("policy service: %v", err)
		}
	})
	w := &world{upstreamCA: testca.New(t, "upstream CA")}
	for _, ch := range []chan net.Addr{apiAddr, consoleAddr} {
		select {
		case a := <-ch:
			if ch == apiAddr {
				w.api = "https://" + a.String()
			} else {
				w.console = "https://" + a.String()
			}
		case err := <-done:
			t.Fatalf("policy service did not start: %v", err)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: serverCA.Pool(), MinVersion: tls.VersionTLS12}
	tr.ForceAttemptHTTP2 = true
	w.http = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	w.apiClient = policyv1connect.NewPolicyServiceClient(w.http, w.api, connect.WithInterceptors(bearer(tokenOperator)))
	js, err := jetstream.New(ns.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	if w.kv, err = nodekv.Open(context.Background(), js, "", 0); err != nil {
		t.Fatal(err)
	}
	return w
}

type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}
func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}
func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// get asks the console for path with token ("" sends none).
func (w *world) get(t *testing.T, method, path, token string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, w.console+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := w.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// report writes a node's status into the node bucket, as a proxy node's
// registry does (same key, same encoding).
func (w *world) report(t *testing.T, st *nodev1.NodeStatus) {
	t.Helper()
	b, err := nodekv.Encode(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.kv.Put(context.Background(), nodekv.Key(st.GetId()), b); err != nil {
		t.Fatal(err)
	}
}

// upstream is a TLS upstream the live probe can reach, with a certificate
// from the upstream CA.
func (w *world) upstream(t *testing.T) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{w.upstreamCA.Server("orders.internal").TLS}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func (w *world) apply(t *testing.T, probe bool, resources ...*policyv1.Resource) *policyv1.ApplyResponse {
	t.Helper()
	mode := policyv1.ProbeMode_PROBE_MODE_OFF
	if probe {
		mode = policyv1.ProbeMode_PROBE_MODE_ON
	}
	resp, err := w.apiClient.Apply(context.Background(), connect.NewRequest(&policyv1.ApplyRequest{Resources: resources, Probe: mode}))
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return resp.Msg
}

func service(name, addr string) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "Service", Metadata: &policyv1.ObjectMeta{Name: name}, Spec: &policyv1.ServiceSpec{Address: addr}}}}
}

func binding(t *testing.T, name, target string, ca *testca.CA) *policyv1.Resource {
	t.Helper()
	cfg, err := structpb.NewStruct(map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal"})
	if err != nil {
		t.Fatal(err)
	}
	return &policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "PolicyBinding", Metadata: &policyv1.ObjectMeta{Name: name},
		Spec: &policyv1.PolicyBindingSpec{TargetRef: &policyv1.TargetRef{Kind: "Service", Name: target},
			PolicyRef: &policyv1.PolicyRef{Name: "tls-outbound"}, Config: cfg}}}}
}

// row is the table row of the page whose data attribute is key=value.
func row(t *testing.T, body, attr, value string) string {
	t.Helper()
	re := regexp.MustCompile(`(?s)<tr ` + regexp.QuoteMeta(attr) + `="` + regexp.QuoteMeta(value) + `">(.*?)</tr>`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no row %s=%q in the page:\n%s", attr, value, body)
	}
	return m[1]
}

func mustContain(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s does not show %q:\n%s", what, w, s)
		}
	}
}

func TestPagesShowWhatTheAPIAnswers(t *testing.T) {
	w := start(t)
	up := w.upstream(t)
	// Applied with the probe: the bindings page shows its result.
	applied := w.apply(t, true, service("orders", up), binding(t, "orders-tls", "orders", w.upstreamCA))
	if p := applied.GetResults()[1].GetProbes(); len(p) != 1 || !p[0].GetOk() {
		t.Fatalf("the probe at apply: %v", p)
	}
	now := time.Now()
	w.report(t, &nodev1.NodeStatus{Id: "node-a", Version: "v-test", ProxyAddress: "127.0.0.1:1", Revision: applied.GetRevision(),
		HeartbeatTime: timestamppb.New(now), StartTime: timestamppb.New(now.Add(-time.Hour)),
		Certificates: []*nodev1.ServedCertificate{{Scope: "listener", Name: "edge", Host: "edge.example", Role: "server",
			Sha256Fingerprint: "aa:bb:cc", NotAfter: timestamppb.New(now.Add(72 * time.Hour)), Subject: "CN=edge.example", Issuer: "CN=upstream CA", Sans: []string{"edge.example"},
			Revocation: "good", RevocationDetail: "ocsp http://ocsp.example"}}})
	w.report(t, &nodev1.NodeStatus{Id: "node-b", ProxyAddress: "127.0.0.1:2", Revision: applied.GetRevision() - 1,
		HeartbeatTime: timestamppb.New(now),
		Errors:        []*nodev1.NodeError{{Key: "policybinding.orders-tls", Message: `<script>alert("x")</script>` + strings.Repeat("long ", 400), Time: timestamppb.New(now)}},
		Certificates: []*nodev1.ServedCertificate{{Scope: "listener", Name: "edge", Host: "edge.example", Role: "server",
			Sha256Fingerprint: "aa:bb:cc", NotAfter: timestamppb.New(now.Add(72 * time.Hour)), Subject: "CN=edge.example", Issuer: "CN=upstream CA",
			Revocation: "revoked", RevocationDetail: `<b>CRL</b> ` + strings.Repeat("reason ", 300)},
			{Scope: "upstream", Name: "orders", Role: "trust", Sha256Fingerprint: "dd:ee:ff", NotAfter: timestamppb.New(now.Add(-time.Hour)), Subject: "CN=old CA", Truststore: "orders-ca"}}})
	var ro *policyv1.Rollout
	testwait.Eventually(t, 10*time.Second, func() error {
		resp, err := w.apiClient.GetRollout(context.Background(), connect.NewRequest(&policyv1.GetRolloutRequest{}))
		if err != nil {
			return err
		}
		if ro = resp.Msg.GetRollout(); len(ro.GetServing())+len(ro.GetPending()) != 2 {
			return fmt.Errorf("%d live nodes, want 2", len(ro.GetServing())+len(ro.GetPending()))
		}
		return nil
	})

	t.Run("certificates", func(t *testing.T) {
		resp, body := w.get(t, http.MethodGet, "/certificates", tokenViewer)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %s:\n%s", resp.Status, body)
		}
		// Soonest to expire first: the expired CA before the server
		// certificate, as keywayctl certs sorts them.
		if i, j := strings.Index(body, `data-fingerprint="dd:ee:ff"`), strings.Index(body, `data-fingerprint="aa:bb:cc"`); i < 0 || j < 0 || i > j {
			t.Errorf("certificates not by time left (expired at %d, valid at %d)", i, j)
		}
		mustContain(t, "the expired CA's row", row(t, body, "data-fingerprint", "dd:ee:ff"), "EXPIRED", "CN=old CA", "truststore orders-ca", "upstream/orders (trust)", "1/2", "node-b", "keywayctl certs --nodes")
		// Revocation: the fleet's state is the most telling of the nodes',
		// with how many say it, as keywayctl certs shows it; under it each
		// node's, its detail escaped and bounded.
		server := row(t, body, "data-fingerprint", "aa:bb:cc")
		mustContain(t, "the server certificate's row", server, "CN=edge.example", "listener/edge edge.example (server)", "2/2", "node-a", "node-b",
			`<td class="bad">revoked (1/2 nodes)`, "node-a: good (ocsp http://ocsp.example)", "node-b: revoked (&lt;b&gt;CRL&lt;/b&gt; reason", "…")
		if strings.Contains(server, "<b>") || strings.Count(server, "reason ") > 40 {
			t.Errorf("a node's revocation detail of 2100 bytes is shown unescaped or whole (%d words)", strings.Count(server, "reason "))
		}
		ca := row(t, body, "data-fingerprint", "dd:ee:ff")
		mustContain(t, "the expired CA's row", ca, `<td class="unknown">not checked</td>`)
		mustContain(t, "the page", body, "<em>not checked</em> for the others")
	})

	t.Run("nodes", func(t *testing.T) {
		resp, body := w.get(t, http.MethodGet, "/nodes", tokenViewer)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %s:\n%s", resp.Status, body)
		}
		mustContain(t, "the nodes page", body, `<meta http-equiv="refresh" content="5">`, fmt.Sprintf("serve revision %d", ro.GetRevision()))
		for _, n := range append(ro.GetServing(), ro.GetPending()...) {
			r := row(t, body, "data-node", n.GetId())
			mustContain(t, n.GetId()+"'s row", r, fmt.Sprintf("<td>%d</td>", n.GetRevision()), "keywayctl status", "ago")
		}
		b := row(t, body, "data-node", "node-b")
		mustContain(t, "node-b's row", b, "policybinding.orders-tls", "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", "…")
		if strings.Contains(body, "<script>") {
			t.Error("a node's error reached the page unescaped")
		}
		if strings.Count(b, "long ") > 220 {
			t.Errorf("a node's error of 2000 bytes is shown whole (%d words)", strings.Count(b, "long "))
		}
	})

	t.Run("rollouts", func(t *testing.T) {
		resp, body := w.get(t, http.MethodGet, "/rollouts", tokenViewer)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %s:\n%s", resp.Status, body)
		}
		cur := row(t, body, "data-revision", fmt.Sprint(ro.GetRevision()))
		mustContain(t, "the current rollout", cur, "in progress", "1/2", fmt.Sprintf("node-b (at %d)", applied.GetRevision()-1), "keywayctl status")
		rec := row(t, body[strings.Index(body, `id="recent"`):], "data-revision", fmt.Sprint(applied.GetResults()[1].GetRevision()))
		mustContain(t, "the binding's write", rec, "apply PolicyBinding orders-tls", "keywayctl history policybinding orders-tls", "token sha256:")
	})

	t.Run("bindings", func(t *testing.T) {
		resp, body := w.get(t, http.MethodGet, "/bindings", tokenViewer)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %s:\n%s", resp.Status, body)
		}
		r := row(t, body, "data-binding", "orders-tls")
		mustContain(t, "the binding's row", r, "tls-outbound", "Service orders", fmt.Sprintf("<td>%d</td>", applied.GetResults()[1].GetRevision()),
			"ok", up, "TLS 1.3", "orders.internal", ", apply", "keywayctl get policybinding orders-tls")
	})

	t.Run("a failed probe at validate is the binding's last", func(t *testing.T) {
		other := testca.New(t, "another CA")
		_, err := w.apiClient.Apply(context.Background(), connect.NewRequest(&policyv1.ApplyRequest{DryRun: true,
			Resources: []*policyv1.Resource{binding(t, "orders-tls", "orders", other)}}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("validate with a CA that does not sign the upstream: %v, want InvalidArgument", err)
		}
		_, body := w.get(t, http.MethodGet, "/bindings", tokenViewer)
		mustContain(t, "the binding's row", row(t, body, "data-binding", "orders-tls"), "refused", "validate", "unknown_authority", "Fix:")
	})
}

func TestRefusalsAndHeaders(t *testing.T) {
	w := start(t)
	for _, tc := range []struct {
		name, method, path, token string
		status                    int
		want                      []string
	}{
		{"no credential", http.MethodGet, "/nodes", "", http.StatusUnauthorized, []string{"no credential", "client certificate", "Authorization: Bearer"}},
		{"unknown token", http.MethodGet, "/nodes", tokenStranger, http.StatusUnauthorized, []string{"not in the access policy", "tokenSHA256"}},
		{"a role without viewer", http.MethodGet, "/certificates", tokenNode, http.StatusForbidden, []string{"needs the viewer role", "with the roles node", "--access-policy"}},
		{"the stylesheet, open to a refusal page", http.MethodGet, "/assets/console.css", "", http.StatusOK, []string{"Keyway console"}},
		{"no listing of the assets", http.MethodGet, "/assets/", "", http.StatusNotFound, nil},
		{"viewer", http.MethodGet, "/rollouts", tokenViewer, http.StatusOK, []string{"Rollouts"}},
		{"operator", http.MethodGet, "/bindings", tokenOperator, http.StatusOK, []string{"Bindings"}},
		{"unknown page", http.MethodGet, "/secrets", tokenViewer, http.StatusNotFound, []string{"not a page of the console"}},
		{"a write", http.MethodPost, "/nodes", tokenOperator, http.StatusMethodNotAllowed, []string{"read-only"}},
		{"index", http.MethodGet, "/", tokenViewer, http.StatusSeeOther, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := w.get(t, tc.method, tc.path, tc.token)
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s: %s, want %d:\n%s", tc.method, tc.path, resp.Status, tc.status, body)
			}
			mustContain(t, "the answer", body, tc.want...)
			for h, want := range map[string]string{
				"Content-Security-Policy":   "default-src 'self'; script-src 'none'",
				"X-Frame-Options":           "DENY",
				"X-Content-Type-Options":    "nosniff",
				"Referrer-Policy":           "no-referrer",
				"Cache-Control":             "no-store",
				"Strict-Transport-Security": "max-age=",
			} {
				if got := resp.Header.Get(h); !strings.Contains(got, want) {
					t.Errorf("%s: %q, want it to hold %q", h, got, want)
				}
			}
			if tc.status == http.StatusUnauthorized || tc.status == http.StatusForbidden {
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
					t.Errorf("refusal as %q, want an HTML page", ct)
				}
				mustContain(t, "the refusal page", body, "How to fix it")
			}
		})
	}
	t.Run("the stylesheet is the binary's", func(t *testing.T) {
		resp, body := w.get(t, http.MethodGet, "/assets/console.css", tokenViewer)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") || !strings.Contains(body, "Keyway console") {
			t.Errorf("GET /assets/console.css: %s %q", resp.Status, resp.Header.Get("Content-Type"))
		}
	})
	t.Run("pages ask for nothing from elsewhere", func(t *testing.T) {
		for _, p := range []string{"/certificates", "/nodes", "/rollouts", "/bindings"} {
			_, body := w.get(t, http.MethodGet, p, tokenViewer)
			for _, bad := range []string{"http://", "https://", "<script", "style="} {
				if strings.Contains(body, bad) {
					t.Errorf("%s holds %q", p, bad)
				}
			}
		}
	})
}

// Without authentication the console, like the API, binds loopback only.
func TestInsecureConsoleOnLoopbackOnly(t *testing.T) {
	ns := natstest.Start(t)
	err := app.Run(context.Background(), app.Config{Listen: "127.0.0.1:0", ConsoleListen: "0.0.0.0:0", NATSURL: ns.URL,
		Access: access.Options{InsecureNoAuth: true}})
	if err == nil || !strings.Contains(err.Error(), "--console-listen") || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("the console without authentication on 0.0.0.0: %v, want a refusal naming --console-listen and loopback", err)
	}
}
