// Package e2e drives Keyway as a user does: the built binaries as processes,
// the real nats-server, keywayctl, buf curl and curl, over real TLS on
// loopback.
package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"keyway.dev/devstack/echo"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/tests/harness"
)

// world is one Keyway deployment: NATS, the policy service, two proxy nodes,
// and an upstream that demands client certificates from upstreamCA.
type world struct {
	natsURL, policyURL string
	proxies            []*harness.Proxy
	upstream           *echo.Server
	upstreamCA         *testca.CA // signs the upstream's certificate and the clients it accepts
	gateway            *testca.KeyPair
	dir                string
	secrets            *harness.Secrets
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldEnv(t, nil, 2)
}

// newWorldEnv is newWorld with env added to the environment of the policy
// service and of the nodes proxy nodes.
func newWorldEnv(t *testing.T, env []string, nodes int) *world {
	t.Helper()
	w := &world{dir: t.TempDir()}
	w.natsURL, _ = harness.NATS(t)
	// Inline private keys are moved into the secrets service at apply; the
	// nodes fetch them back from it.
	w.secrets = harness.StartSecrets(t, w.natsURL, nil)
	w.policyURL, _ = harness.PolicyEnv(t, w.natsURL, env, w.secrets.PolicyArgs(t, "keyway-policy")...)
	w.upstreamCA = testca.New(t, "upstream CA")
	server := w.upstreamCA.Server("orders.internal")
	w.gateway = w.upstreamCA.Client("keyway-gateway")
	up, err := echo.Start("127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{server.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    w.upstreamCA.Pool(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	w.upstream = up
	for i := range nodes {
		id := fmt.Sprintf("node-%d", i+1)
		w.proxies = append(w.proxies, harness.StartProxyEnv(t, w.natsURL, id, env, w.secrets.ClientArgs(t, id)...))
	}
	return w
}

// manifest is a Service, a Route and a Flex tls-outbound binding.
func (w *world) manifest(trustedCA []byte, client *testca.KeyPair, extra string) string {
	pem := func(b []byte) string {
		return "      " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n      ") + "\n"
	}
	cert := ""
	if client != nil {
		cert = "    certificate:\n      key: |\n  " + strings.ReplaceAll(pem(client.KeyPEM), "\n      ", "\n        ") +
			"      crt: |\n  " + strings.ReplaceAll(pem(client.CertPEM), "\n      ", "\n        ")
	}
	return fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: Service
metadata:
  name: orders
spec:
  address: %s
---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata:
  name: orders
spec:
  path: /orders/
  service: orders
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata:
  name: orders-mtls
spec:
  targetRef:
    kind: Service
    name: orders
  policyRef:
    name: tls-outbound
  config:
    skipValidation: false
    sni: orders.internal
    trustedCA: |
%s%s%s`, w.upstream.Addr(), pem(trustedCA), cert, extra)
}

func (w *world) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(w.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *world) ctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return harness.Run(t, harness.Bin(t, "keywayctl"), append(append([]string{"--server", w.policyURL}, harness.Operator(t).Args...), args...)...)
}

// get sends one request through a proxy node.
func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// eventually retries f until it returns true or five seconds pass: proxy
// nodes are other processes that apply configuration asynchronously.
func eventually(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	testwait.Eventually(t, 5*time.Second, func() error {
		if ok, last := f(); !ok {
			return fmt.Errorf("%s; last: %s", what, last)
		}
		return nil
	})
}

func TestApplyWithKeywayctlReachesMTLSUpstreamThroughTwoNodes(t *testing.T) {
	w := newWorld(t)

	// A bad binding first: refused with file, line and field; nothing stored.
	bad := w.write(t, "bad.yaml", w.manifest(w.upstreamCA.CertPEM(), w.gateway, "    minversion: \"1.3\"\n    maxversion: \"1.2\"\n    ciphers: [TLS_FOO]\n"))
	_, stderr, code := w.ctl(t, "apply", "-f", bad)
	if code == 0 {
		t.Fatalf("apply of a bad binding succeeded")
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`bad\.yaml:\d+:\d+: .*spec\.config\.ciphers\[0\].*TLS_FOO`),
		regexp.MustCompile(`bad\.yaml:\d+:\d+: .*spec\.config\.(minversion|maxversion)`),
	} {
		if !want.MatchString(stderr) {
			t.Errorf("keywayctl stderr does not match %s:\n%s", want, stderr)
		}
	}
	stdout, _, _ := w.ctl(t, "get", "services", "-o", "json")
	if strings.Contains(stdout, "orders") {
		t.Fatalf("a refused apply stored something: %s", stdout)
	}

	// The good binding: both nodes reach the upstream with the gateway's certificate.
	good := w.write(t, "good.yaml", w.manifest(w.upstreamCA.CertPEM(), w.gateway, ""))
	stdout, stderr, code = w.ctl(t, "apply", "-f", good)
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(strings.ToLower(stdout), "created") {
		t.Errorf("apply output does not say created:\n%s", stdout)
	}
	for _, px := range w.proxies {
		eventually(t, "node "+px.Name+" serves the binding", func() (bool, string) {
			code, body := get(t, px.URL+"/orders/42")
			if code != http.StatusOK {
				return false, fmt.Sprintf("%d %s", code, body)
			}
			var rep echo.Reply
			if err := json.Unmarshal(body, &rep); err != nil {
				return false, err.Error()
			}
			if rep.ClientFingerprint != w.gateway.Fingerprint() {
				t.Fatalf("upstream saw client certificate %s, want the gateway's %s", rep.ClientFingerprint, w.gateway.Fingerprint())
			}
			if rep.SNI != "orders.internal" {
				t.Errorf("upstream saw SNI %q, want orders.internal", rep.SNI)
			}
			return true, ""
		})
	}

	// The real curl, through node 2, when the machine has it.
	if curl, err := exec.LookPath("curl"); err == nil {
		out, _, code := harness.Run(t, curl, "-sS", "-i", w.proxies[1].URL+"/orders/7")
		if code != 0 || !strings.Contains(out, " 200") || !strings.Contains(strings.ToLower(out), "x-request-id:") {
			t.Errorf("curl through node-2: exit %d\n%s", code, out)
		}
	}

	// keywayctl get lists it, as JSON for scripts.
	stdout, _, code = w.ctl(t, "get", "policybindings", "-o", "json")
	if code != 0 || !json.Valid([]byte(stdout)) || !strings.Contains(stdout, "orders-mtls") {
		t.Errorf("get policybindings -o json: exit %d, %s", code, stdout)
	}

	// validate runs the live probe: a real handshake with the binding's context.
	stdout, stderr, code = w.ctl(t, "validate", "-f", good)
	if code != 0 || !regexp.MustCompile(`probe 127\.0\.0\.1:\d+ \(SNI orders\.internal\): ok, TLS 1\.3, .*client certificate requested and sent`).MatchString(stdout) {
		t.Errorf("validate with probe: exit %d\n%s%s", code, stdout, stderr)
	}
	other := testca.New(t, "some other CA")
	wrong := w.write(t, "wrong-ca.yaml", w.manifest(other.CertPEM(), w.gateway, ""))
	_, stderr, code = w.ctl(t, "validate", "-f", wrong)
	if code == 0 || !regexp.MustCompile(`wrong-ca\.yaml:\d+:\d+: .*live probe .*unknown_authority`).MatchString(stderr) {
		t.Errorf("validate of a binding trusting the wrong CA: exit %d\n%s", code, stderr)
	}

	// Applied anyway, without the probe: both nodes answer 502
	// unknown_authority.
	if out, errOut, code := w.ctl(t, "apply", "--probe=false", "-f", wrong); code != 0 {
		t.Fatalf("apply --probe=false wrong CA: %s%s", out, errOut)
	}
	for _, px := range w.proxies {
		eventually(t, "node "+px.Name+" reports unknown_authority", func() (bool, string) {
			code, body := get(t, px.URL+"/orders/1")
			return code == http.StatusBadGateway && jsonReason(body) == "unknown_authority", fmt.Sprintf("%d %s", code, body)
		})
	}

	// Deleting the binding is allowed; deleting a Service a Route still
	// uses is refused, naming the route.
	if out, errOut, code := w.ctl(t, "delete", "policybinding", "orders-mtls"); code != 0 {
		t.Fatalf("delete binding: %s%s", out, errOut)
	}
	if _, errOut, code := w.ctl(t, "delete", "service", "orders"); code == 0 || !strings.Contains(errOut, "Route/orders") {
		t.Errorf("deleting a service a route still uses: exit %d, %s", code, errOut)
	}
}

// apply probes by default: a binding whose upstream refuses Keyway's client
// certificate is refused with the reason and the fix, and nothing is
// stored; --probe=false (or the deprecated --no-probe) stores it, and the
// nodes then answer with the same reason. An endpoint the policy service
// cannot reach is a warning, and the apply succeeds.
func TestApplyProbesByDefault(t *testing.T) {
	w := newWorldEnv(t, nil, 1)
	px := w.proxies[0]
	rogue := testca.New(t, "rogue CA").Client("keyway-gateway") // the upstream trusts client certificates of upstreamCA only
	refused := w.write(t, "refused.yaml", w.manifest(w.upstreamCA.CertPEM(), rogue, ""))

	stdout, stderr, code := w.ctl(t, "apply", "-f", refused)
	if code == 0 {
		t.Fatalf("apply of a binding whose upstream refuses its client certificate: exit 0\n%s%s", stdout, stderr)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`error: .*refused\.yaml:\d+:\d+: .*live probe of Service "orders" at ` + regexp.QuoteMeta(w.upstream.Addr()) + ` .*client_certificate_rejected`),
		regexp.MustCompile(`fix: make the upstream trust the CA that issued the binding's client certificate`),
		regexp.MustCompile(`nothing applied: 1 problem`),
	} {
		if !want.MatchString(stderr) {
			t.Errorf("apply stderr does not match %s:\n%s", want, stderr)
		}
	}
	for _, ref := range [][]string{{"service", "orders"}, {"route", "orders"}, {"policybinding", "orders-mtls"}} {
		if _, errOut, code := w.ctl(t, "get", ref[0], ref[1]); code == 0 || !strings.Contains(errOut, "not found") {
			t.Errorf("get %s %s after the refused apply: exit %d, %s; want not found", ref[0], ref[1], code, errOut)
		}
	}

	stdout, stderr, code = w.ctl(t, "apply", "--probe=false", "-f", refused)
	if code != 0 || !strings.Contains(stdout, "policybinding/orders-mtls created") || strings.Contains(stdout, "probe ") {
		t.Fatalf("apply --probe=false: exit %d\n%s%s", code, stdout, stderr)
	}
	eventually(t, "the node answers 502 client_certificate_rejected", func() (bool, string) {
		code, body := get(t, px.URL+"/orders/1")
		return code == http.StatusBadGateway && jsonReason(body) == "client_certificate_rejected", fmt.Sprintf("%d %s", code, body)
	})
	// The deprecated spelling still works, and says what replaces it.
	stdout, stderr, code = w.ctl(t, "apply", "--no-probe", "-f", refused)
	if code != 0 || !strings.Contains(stdout, "unchanged") || !strings.Contains(stderr, "note: --no-probe is deprecated: use --probe=false") {
		t.Errorf("apply --no-probe: exit %d\n%s%s", code, stdout, stderr)
	}

	// A Service the policy service cannot reach: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	unreachable := w.write(t, "unreachable.yaml", strings.Replace(w.manifest(w.upstreamCA.CertPEM(), w.gateway, ""), "address: "+w.upstream.Addr(), "address: "+closed, 1))
	stdout, stderr, code = w.ctl(t, "apply", "-f", unreachable)
	if code != 0 {
		t.Fatalf("apply of an unreachable endpoint: exit %d, want 0 with a warning\n%s%s", code, stdout, stderr)
	}
	if want := regexp.MustCompile(`warning: .*unreachable\.yaml:\d+:\d+: .*live probe could not reach Service "orders" at ` + regexp.QuoteMeta(closed) + `: connection_refused`); !want.MatchString(stderr) {
		t.Errorf("apply stderr does not match %s:\n%s", want, stderr)
	}
	if want := "probe " + closed + " (SNI orders.internal): not reached: connection_refused"; !strings.Contains(stdout, want) || !strings.Contains(stdout, "service/orders updated") {
		t.Errorf("apply stdout lacks %q and the update:\n%s", want, stdout)
	}
	if stdout, _, code := w.ctl(t, "get", "service", "orders", "-o", "yaml"); code != 0 || !strings.Contains(stdout, closed) {
		t.Errorf("the Service with the unreachable endpoint is not stored: exit %d\n%s", code, stdout)
	}
}

func TestBufCurl(t *testing.T) {
	w := newWorld(t)
	buf := harness.Tool(t, "buf", "KEYWAY_BUF")
	// buf curl as the README shows it: https, the operator's certificate.
	bufCurl := func(args ...string) (string, string, int) {
		return harness.Run(t, buf, append(append([]string{"curl"}, harness.Operator(t).BufArgs...), args...)...)
	}

	out, errOut, code := bufCurl("--list-methods", w.policyURL)
	if code != 0 {
		t.Fatalf("buf curl --list-methods: %s%s", out, errOut)
	}
	for _, m := range []string{"Apply", "Get", "List", "Delete"} {
		if !strings.Contains(out, "keyway.policy.v1.PolicyService/"+m) {
			t.Errorf("--list-methods lacks %s:\n%s", m, out)
		}
	}

	apply := func(config map[string]any) (string, string, int) {
		req := map[string]any{"resources": []any{
			map[string]any{"service": map[string]any{"apiVersion": "keyway.dev/v1alpha1", "kind": "Service", "metadata": map[string]any{"name": "orders"}, "spec": map[string]any{"address": w.upstream.Addr()}}},
			map[string]any{"route": map[string]any{"apiVersion": "keyway.dev/v1alpha1", "kind": "Route", "metadata": map[string]any{"name": "orders"}, "spec": map[string]any{"path": "/orders/", "service": "orders"}}},
			map[string]any{"policyBinding": map[string]any{
				"apiVersion": "gateway.mulesoft.com/v1alpha1", "kind": "PolicyBinding",
				"metadata": map[string]any{"name": "orders-mtls"},
				"spec": map[string]any{
					"targetRef": map[string]any{"kind": "Service", "name": "orders"},
					"policyRef": map[string]any{"name": "tls-outbound"},
					"config":    config,
				}}},
		}}
		body, _ := json.Marshal(req)
		return bufCurl("-d", string(body), w.policyURL+"/keyway.policy.v1.PolicyService/Apply")
	}

	// Invalid: InvalidArgument naming the field; nothing stored.
	out, errOut, code = apply(map[string]any{"trustedCA": string(w.upstreamCA.CertPEM()), "alpn": []string{"h3"}})
	if code == 0 || !strings.Contains(errOut+out, "invalid_argument") || !strings.Contains(errOut+out, "skipValidation") || !strings.Contains(errOut+out, "alpn[0]") {
		t.Errorf("buf curl invalid apply: exit %d\n%s%s", code, out, errOut)
	}

	// Valid: stored, and a node serves it.
	out, errOut, code = apply(map[string]any{
		"skipValidation": false, "sni": "orders.internal",
		"trustedCA":   string(w.upstreamCA.CertPEM()),
		"certificate": map[string]any{"key": string(w.gateway.KeyPEM), "crt": string(w.gateway.CertPEM)},
	})
	if code != 0 || !strings.Contains(out, "ACTION_CREATED") {
		t.Fatalf("buf curl apply: exit %d\n%s%s", code, out, errOut)
	}
	eventually(t, "node serves the binding applied with buf curl", func() (bool, string) {
		code, body := get(t, w.proxies[0].URL+"/orders/1")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})

	out, _, code = bufCurl("-d", `{"kind":"PolicyBinding","name":"orders-mtls"}`, w.policyURL+"/keyway.policy.v1.PolicyService/Get")
	if code != 0 || !strings.Contains(out, `"orders-mtls"`) || !strings.Contains(out, `"revision"`) {
		t.Errorf("buf curl Get: %s", out)
	}
}

func jsonReason(body []byte) string {
	var v struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(body, &v)
	return v.Reason
}
