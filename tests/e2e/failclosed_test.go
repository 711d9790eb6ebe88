package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"keyway.dev/tests/harness"
)

// A Route that needs a client certificate and names no Listeners is
// applied with a warning, and the node's plain-HTTP port answers it 401
// client_certificate_required without forwarding; the route without rules
// next to it is still served there.
func TestIdentityRouteFailsClosedOnPlainPort(t *testing.T) {
	w := newWorldEnv(t, nil, 1)
	px := w.proxies[0]
	admin := `---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata:
  name: admin
spec:
  path: /admin/
  service: orders
  clientCertificate: required
`
	f := w.write(t, "admin.yaml", w.manifest(w.upstreamCA.CertPEM(), w.gateway, "")+admin)
	stdout, stderr, code := w.ctl(t, "apply", "-f", f)
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, stdout, stderr)
	}
	var warned bool
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "warning: ") && strings.Contains(line, `route "admin"`) &&
			strings.Contains(line, "plain-HTTP port") && strings.Contains(line, "listeners: [") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("apply did not warn that route admin is reachable on the plain-HTTP port:\n%s", stderr)
	}

	eventually(t, "the node serves /orders/", func() (bool, string) {
		code, body := get(t, px.URL+"/orders/42")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	code, body := get(t, px.URL+"/admin/x")
	if code != http.StatusUnauthorized || jsonReason(body) != "client_certificate_required" {
		t.Fatalf("plain port, route with clientCertificate: required: %d %s; want 401 client_certificate_required", code, body)
	}
	if !strings.Contains(string(body), `route \"admin\"`) {
		t.Errorf("the fix does not name the route: %s", body)
	}
	if strings.Contains(px.Output(), "upstream request failed") {
		t.Errorf("the node tried the upstream for a refused request:\n%s", px.Output())
	}
}

// --max-header-bytes bounds the request headers a node accepts.
func TestMaxHeaderBytesFlag(t *testing.T) {
	w := newWorldEnv(t, nil, 0)
	f := w.write(t, "orders.yaml", w.manifest(w.upstreamCA.CertPEM(), w.gateway, ""))
	if stdout, stderr, code := w.ctl(t, "apply", "-f", f); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, stdout, stderr)
	}
	small := harness.StartProxy(t, w.natsURL, "small", append(w.secrets.ClientArgs(t, "small"), "--max-header-bytes", "2048")...)
	send := func(size int) int {
		req, _ := http.NewRequest("GET", small.URL+"/orders/42", nil)
		req.Header.Set("X-Padding", strings.Repeat("a", size))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, "the node serves /orders/", func() (bool, string) {
		c := send(1024)
		return c == http.StatusOK, fmt.Sprint(c)
	})
	// net/http reads up to 4 KiB past the limit before it decides.
	if c := send(16 << 10); c != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("16 KiB of headers with --max-header-bytes 2048: %d, want 431", c)
	}
	if _, stderr, code := harness.Run(t, harness.Bin(t, "keyway-proxy"), "--max-header-bytes", "12"); code == 0 || !strings.Contains(stderr, "--max-header-bytes") {
		t.Errorf("--max-header-bytes 12: exit %d, stderr %q; want a refusal naming the flag", code, stderr)
	}
}
