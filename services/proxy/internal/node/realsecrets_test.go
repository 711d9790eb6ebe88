package node_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/material/materialtest"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/proxy/internal/node"
	"keyway.dev/proxy/internal/secrets"
)

// startRealSecrets runs the real keyway-secrets against the test's NATS.
func startRealSecrets(t *testing.T, natsURL string) *realSecrets {
	t.Helper()
	return &realSecrets{materialtest.StartService(t, natsURL)}
}

type realSecrets struct{ *materialtest.Service }

// source is a node's Source over the real service's internal port, with a
// client certificate from its internal CA.
func (r *realSecrets) source(t *testing.T) *secrets.Source {
	return secrets.New(r.Client(t, "proxy-node"), secrets.Options{RetryInterval: 100 * time.Millisecond})
}

// A tls-inbound binding whose certificate is an alias and whose trustedCA is
// a truststore of the real secrets service gives its Listener a host; a
// rotation of the alias reaches new handshakes on the same server.
func TestTLSInboundBindingWithReferences(t *testing.T) {
	t.Parallel()
	url, kv := startNATS(t)
	real := startRealSecrets(t, url)
	n, _ := startNode(t, url, func(c *node.Config) { c.Secrets = real.source(t) })
	servers, clients := testca.New(t, "server CA"), testca.New(t, "client CA")
	first, alice := servers.Server("test.com"), clients.Client("alice")
	real.PutAlias(t, "edge", "web", first, secretsv1.Usage_USAGE_SERVER)
	real.PutTruststore(t, "clients", clients)

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(backend.Close)
	put(t, kv, service("app", "http1", backend.Listener.Addr().String()))
	put(t, kv, route("public", "/public/", "app"))
	put(t, kv, listenerResource("edge", "127.0.0.1:0"))
	waitRevision(t, n, put(t, kv, inboundBinding(t, "edge-tls", "edge", map[string]any{
		"hostnames":                []any{"test.com"},
		"requireClientCertificate": true,
		"trustedCA":                map[string]any{"truststore": "clients"},
		"certificate":              map[string]any{"keystore": "edge", "alias": "web"},
	})))
	addr := n.ListenerAddr("edge")
	if addr == "" {
		t.Fatalf("listener edge is not served: %+v", status(t, n).Skipped)
	}
	served := func(kp *testca.KeyPair) string {
		cfg := &tls.Config{RootCAs: servers.Pool(), ServerName: "test.com"}
		if kp != nil {
			cfg.Certificates = []tls.Certificate{kp.TLS}
		}
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: cfg}}
		resp, err := c.Get("https://" + addr + "/public/x")
		if err != nil {
			return ""
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return ""
		}
		return certs.Fingerprint(resp.TLS.PeerCertificates[0])
	}
	if got := served(alice); got != first.Fingerprint() {
		t.Fatalf("the listener presents %q, want the alias's certificate", got)
	}
	if served(nil) != "" {
		t.Error("a client without a certificate got through requireClientCertificate: true")
	}
	second := servers.Server("test.com")
	real.PutAlias(t, "edge", "web", second, secretsv1.Usage_USAGE_SERVER)
	testwait.Until(t, 60*time.Second, "the listener to present the rotated certificate", func() bool { return served(alice) == second.Fingerprint() })
}
