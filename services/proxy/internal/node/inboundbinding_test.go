package node_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/publish"
)

// inboundBinding is a tls-inbound binding of Listener listener with cfg,
// decoded by the node with model.Decode.
func inboundBinding(tb testing.TB, name, listener string, cfg map[string]any) *policyv1.Resource {
	res := binding(tb, name, listener, cfg)
	spec := res.GetPolicyBinding().GetSpec()
	spec.TargetRef.Kind, spec.PolicyRef.Name = "Listener", "tls-inbound"
	return res
}

// TestTLSInboundBindingServesListener: a Listener without hosts is served
// once a tls-inbound binding (Flex's inbound tls policy, as Flex writes it)
// gives it a certificate and client CAs; a route restricted to that Listener
// answers there and not on the plain-HTTP port; a second binding claiming the
// same hostname is refused while the first keeps serving.
func TestTLSInboundBindingServesListener(t *testing.T) {
	t.Parallel()
	url, kv := startNATS(t)
	n, logs := startNode(t, url, nil)
	t.Cleanup(func() {
		if t.Failed() {
			logs.mu.Lock()
			defer logs.mu.Unlock()
			t.Log(logs.buf.String())
		}
	})
	servers, clients := testca.New(t, "server CA"), testca.New(t, "client CA")
	serverKP, alice := servers.Server("test.com"), clients.Client("alice")

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("app " + r.URL.Path))
	}))
	t.Cleanup(backend.Close)
	put(t, kv, service("app", "http1", backend.Listener.Addr().String()))
	put(t, kv, route("public", "/public/", "app"))
	admin := route("admin", "/admin/", "app")
	admin.GetRoute().Spec.Listeners = []string{"edge"}
	put(t, kv, admin)

	// The Listener alone has nothing to serve: refused, and said why.
	rev := put(t, kv, listenerResource("edge", "127.0.0.1:0"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sk *publish.SkippedError
	if err := n.WaitRevision(ctx, rev); !errors.As(err, &sk) || sk.Key != "listener.edge" {
		t.Fatalf("WaitRevision(%d) = %v, want listener.edge refused for having no hosts", rev, err)
	}

	waitRevision(t, n, put(t, kv, inboundBinding(t, "edge-tls", "edge", map[string]any{
		"requireClientCertificate": true,
		"trustedCA":                string(clients.CertPEM()),
		"certificate":              map[string]any{"key": string(serverKP.KeyPEM), "crt": string(serverKP.CertPEM)},
	})))
	addr := n.ListenerAddr("edge")
	if addr == "" {
		t.Fatal("listener edge is not served after its tls-inbound binding")
	}
	client := func(kp *testca.KeyPair) *http.Client {
		cfg := &tls.Config{RootCAs: servers.Pool(), ServerName: "test.com"}
		if kp != nil {
			cfg.Certificates = []tls.Certificate{kp.TLS}
		}
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true, DisableKeepAlives: true, TLSClientConfig: cfg}}
	}
	get := func(c *http.Client, url string) (int, string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		return resp.StatusCode, resp.Proto, nil
	}

	for _, path := range []string{"/admin/x", "/public/x"} {
		if code, proto, err := get(client(alice), "https://"+addr+path); err != nil || code != 200 || proto != "HTTP/2.0" {
			t.Errorf("GET %s on the edge Listener with alice's certificate: %d %s %v, want 200 over h2", path, code, proto, err)
		}
	}
	if _, _, err := get(client(nil), "https://"+addr+"/public/x"); err == nil {
		t.Error("a client without a certificate got through requireClientCertificate: true")
	}
	if code, _, err := get(http.DefaultClient, "http://"+n.Addr()+"/admin/x"); err != nil || code != http.StatusNotFound {
		t.Errorf("GET /admin/x on the plain port: %d %v, want 404 (the route serves Listener edge only)", code, err)
	}
	if code, _, err := get(http.DefaultClient, "http://"+n.Addr()+"/public/x"); err != nil || code != 200 {
		t.Errorf("GET /public/x on the plain port: %d %v, want 200", code, err)
	}

	// A second binding for the port-level default: refused, the first
	// keeps serving.
	other := servers.Server("test.com")
	rev = put(t, kv, inboundBinding(t, "edge-tls-2", "edge", map[string]any{
		"certificate": map[string]any{"key": string(other.KeyPEM), "crt": string(other.CertPEM)},
	}))
	if err := n.WaitRevision(ctx, rev); !errors.As(err, &sk) || sk.Key != "policybinding.edge-tls-2" {
		t.Fatalf("WaitRevision(%d) = %v, want policybinding.edge-tls-2 refused", rev, err)
	}
	resp, err := client(alice).Get("https://" + addr + "/public/y")
	if err != nil {
		t.Fatalf("edge after the refused binding: %v", err)
	}
	resp.Body.Close()
	if !resp.TLS.PeerCertificates[0].Equal(serverKP.Cert) {
		t.Errorf("edge serves %s, want the first binding's certificate", resp.TLS.PeerCertificates[0].Subject)
	}
}
