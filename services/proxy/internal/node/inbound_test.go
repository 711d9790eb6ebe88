package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/common/model"
	"keyway.dev/common/testca"
	"keyway.dev/proxy/internal/config"
	"keyway.dev/proxy/internal/node"
)

// listenerModels decodes stored Listeners to models the test registered under
// their names, because these tests bind port 0, which model.Decode rightly
// refuses in an address; every other kind goes through model.Decode. The real
// decode of a Listener is exercised end to end in tests/e2e (TestLocalStack).
type listenerModels struct{ m sync.Map }

func (lm *listenerModels) set(l *model.Listener) { lm.m.Store(l.Name, l) }

func (lm *listenerModels) decode(res *policyv1.Resource) (model.Object, error) {
	if k, ok := res.Kind.(*policyv1.Resource_Listener); ok {
		name := k.Listener.GetMetadata().GetName()
		l, ok := lm.m.Load(name)
		if !ok {
			return model.Object{}, errors.New("test: no model for listener " + name)
		}
		return model.Object{Listener: l.(*model.Listener)}, nil
	}
	return model.Decode(res)
}

func listenerResource(name, address string) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "Listener", Metadata: meta(name),
		Spec: &policyv1.ListenerSpec{Address: address},
	}}}
}

func TestListenerServesRoutesOverMutualTLS(t *testing.T) {
	t.Parallel()
	url, kv := startNATS(t)
	models := &listenerModels{}
	n, logs := startNode(t, url, func(c *node.Config) { c.Decode = models.decode })
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

	public := func(kp *testca.KeyPair) *model.Listener {
		return &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{{
			Hostnames: []string{"test.com"}, Certificate: &kp.TLS, Fingerprint: kp.Fingerprint(),
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: []*x509.Certificate{clients.Cert},
		}}}
	}
	first := servers.Server("test.com")
	models.set(public(first))
	waitRevision(t, n, put(t, kv, listenerResource("public", "127.0.0.1:0")))
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
	models.set(public(second))
	waitRevision(t, n, put(t, kv, listenerResource("public", "127.0.0.1:0")))
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

	// An address another process holds: refused, reported, the rest served.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	models.set(&model.Listener{Name: "blocked", Address: taken.Addr().String(), Hosts: public(second).Hosts})
	rev := put(t, kv, listenerResource("blocked", taken.Addr().String()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var sk *config.SkippedError
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
