package node_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/publish"
)

// listenerResource is Listener name on address (127.0.0.1:0 in these
// tests: the node decodes with model.AllowPortZero) with hosts.
func listenerResource(name, address string, hosts ...*policyv1.ListenerHost) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "Listener", Metadata: meta(name),
		Spec: &policyv1.ListenerSpec{Address: address, Hosts: hosts},
	}}}
}

// listenerHost serves names with kp (inline PEM), asking client
// certificates as clientAuth says ("none", "request", "require-and-verify"…)
// and verifying them against clientCAs.
func listenerHost(kp *testca.KeyPair, clientAuth string, clientCAs []*testca.CA, names ...string) *policyv1.ListenerHost {
	h := &policyv1.ListenerHost{Hostnames: names, ClientAuth: clientAuth,
		Certificate: &policyv1.KeyPair{Crt: string(kp.CertPEM), Key: string(kp.KeyPEM)}}
	for _, ca := range clientCAs {
		h.ClientCas += string(ca.CertPEM())
	}
	return h
}

func TestListenerServesRoutesOverMutualTLS(t *testing.T) {
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
	servers := testca.New(t, "server CA")
	clients := testca.New(t, "client CA")
	alice := clients.Client("alice")

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("orders " + r.URL.Path))
	}))
	t.Cleanup(backend.Close)
	put(t, kv, service("orders", "http1", backend.Listener.Addr().String()))
	put(t, kv, route("orders", "/orders/", "orders"))

	host := func(kp *testca.KeyPair) *policyv1.ListenerHost {
		return listenerHost(kp, "require-and-verify", []*testca.CA{clients}, "test.com")
	}
	first := servers.Server("test.com")
	waitRevision(t, n, put(t, kv, listenerResource("public", "127.0.0.1:0", host(first))))
	addr := n.ListenerAddr("public")
	if addr == "" {
		t.Fatal("listener public is not served")
	}

	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true, DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: servers.Pool(), ServerName: "test.com", Certificates: []tls.Certificate{alice.TLS}}}}
	resp, err := c.Get("https://" + addr + "/orders/42")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !resp.TLS.PeerCertificates[0].Equal(first.Cert) {
		t.Errorf("GET /orders/42 on the listener: %d over %s", resp.StatusCode, resp.Proto)
	}

	st := status(t, n)
	if len(st.Listeners) != 1 {
		t.Fatalf("status listeners: %+v", st.Listeners)
	}
	l := st.Listeners[0]
	if l.Name != "public" || l.Address != "127.0.0.1:0" || l.Bound != addr || l.Error != "" || len(l.Hosts) != 1 {
		t.Errorf("status listener: %+v", l)
	}
	if h := l.Hosts[0]; h.Certificate != first.Fingerprint() || !h.NotAfter.Equal(first.Cert.NotAfter) || h.ClientAuth != "require-and-verify" || !h.Default {
		t.Errorf("status host: %+v", h)
	}

	// A new certificate through the store: served by the same server.
	second := servers.Server("test.com")
	waitRevision(t, n, put(t, kv, listenerResource("public", "127.0.0.1:0", host(second))))
	resp, err = c.Get("https://" + addr + "/orders/43")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !resp.TLS.PeerCertificates[0].Equal(second.Cert) {
		t.Errorf("after the update the listener presents %s", resp.TLS.PeerCertificates[0].Subject)
	}
	if after := status(t, n).Listeners[0]; !after.Since.Equal(l.Since) || after.Bound != addr {
		t.Errorf("the listener was restarted: %+v, before %+v", after, l)
	}

	// Every certificate the Listener presents or trusts has its expiry,
	// the replaced one's series gone.
	fams := scrape(t, &env{node: n})
	for _, c := range []struct {
		role, fingerprint string
		want              int
	}{
		{"listener-server", second.Fingerprint(), 1},
		{"listener-server", first.Fingerprint(), 0},
		{"listener-client-ca", certs.Fingerprint(clients.Cert), 1},
	} {
		labels := map[string]string{"role": c.role, "listener": "public", "host": "test.com", "fingerprint": c.fingerprint}
		if got := len(series(fams, "keyway_certificate_expiry_seconds", labels)); got != c.want {
			t.Errorf("keyway_certificate_expiry_seconds%v: %d series, want %d", labels, got, c.want)
		}
	}

	// The node's status (what keywayctl certs joins) names both, with
	// subject, issuer and names.
	var server, trust int
	for _, c := range n.NodeStatus().GetCertificates() {
		if c.GetScope() != "listener" || c.GetName() != "public" {
			continue
		}
		switch c.GetRole() {
		case "server":
			server++
			if c.GetSha256Fingerprint() != second.Fingerprint() || !slices.Contains(c.GetSans(), "test.com") || c.GetIssuer() != servers.Cert.Subject.String() {
				t.Errorf("status: listener server certificate %v, want the second one, for test.com, issued by %s", c, servers.Cert.Subject)
			}
		case "trust":
			trust++
			if c.GetSha256Fingerprint() != certs.Fingerprint(clients.Cert) || c.GetSubject() != clients.Cert.Subject.String() {
				t.Errorf("status: listener client CA %v, want the client CA", c)
			}
		}
	}
	if server != 1 || trust != 1 {
		t.Errorf("status lists %d server certificates and %d client CAs for listener public, want 1 and 1", server, trust)
	}

	// An address another process holds: refused, reported, the rest served.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	rev := put(t, kv, listenerResource("blocked", taken.Addr().String(), host(second)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var sk *publish.SkippedError
	if err := n.WaitRevision(ctx, rev); !errors.As(err, &sk) || sk.Key != "listener.blocked" || sk.Revision != rev {
		t.Fatalf("WaitRevision(%d) = %v, want listener.blocked refused", rev, err)
	}
	st = status(t, n)
	if len(st.Listeners) != 2 || st.Listeners[0].Name != "blocked" || st.Listeners[0].Error == "" || st.Listeners[0].Bound != "" {
		t.Errorf("status listeners: %+v", st.Listeners)
	}
	if len(st.Skipped) != 1 || st.Skipped[0].Key != "listener.blocked" {
		t.Errorf("status skipped: %+v", st.Skipped)
	}
	if resp, err := c.Get("https://" + addr + "/orders/44"); err != nil || resp.StatusCode != 200 {
		t.Errorf("public while blocked is refused: %v", err)
	} else {
		resp.Body.Close()
	}

	// Deleting the Listeners stops serving them.
	for _, key := range []string{"listener.blocked", "listener.public"} {
		if err := kv.Delete(context.Background(), key); err != nil {
			t.Fatal(err)
		}
	}
	waitRevision(t, n, lastRevision(t, kv))
	if st := status(t, n); len(st.Listeners) != 0 || len(st.Skipped) != 0 || n.ListenerAddr("public") != "" {
		t.Errorf("after the deletes: listeners %+v, skipped %+v", st.Listeners, st.Skipped)
	}
}

// A client that closes its connection to a Listener while its request
// waits on a silent upstream ends the upstream request too: the node reads
// a watched HTTP/1.1 connection for the client's close, and cancels the
// round trip when it comes.
func TestListenerClientCloseCancelsUpstream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	started, ended := make(chan struct{}), make(chan error, 1)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(20 * time.Second):
			ended <- nil
		}
	}))
	up.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	up.TLS = &tls.Config{Certificates: []tls.Certificate{e.server.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: e.clients.Pool()}
	up.StartTLS()
	t.Cleanup(up.Close)
	e.apply(t, "poll", "http1", addr(up), mtls(e.ca, e.gateway, nil))
	servers, clients := testca.New(t, "server CA"), testca.New(t, "client CA")
	waitRevision(t, e.node, put(t, e.kv, listenerResource("public", "127.0.0.1:0",
		listenerHost(servers.Server("gw.test"), "require-and-verify", []*testca.CA{clients}, "gw.test"))))

	conn, err := tls.Dial("tcp", e.node.ListenerAddr("public"), &tls.Config{RootCAs: servers.Pool(), ServerName: "gw.test",
		Certificates: []tls.Certificate{clients.Client("poller").TLS}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET /poll/wait HTTP/1.1\r\nHost: gw.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the upstream within 10 s")
	}
	conn.Close()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the upstream request ran for 20 s after the client closed its connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request did not end within 10 s of the client's close")
	}
}
