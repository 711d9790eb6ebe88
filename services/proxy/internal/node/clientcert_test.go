package node_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/proxy/internal/forward"
)

// mtlsEnv is a node with a Listener "public" in front of an upstream that
// echoes the X-Forwarded-Client-Cert it receives.
type mtlsEnv struct {
	*env
	servers *testca.CA
	addr    string
}

// newMTLSEnv stores routes (their service set to the echoing upstream) and
// Listener "public" with hosts.
func newMTLSEnv(t *testing.T, hosts func(servers *testca.CA) []*policyv1.ListenerHost, routes ...*policyv1.Resource) *mtlsEnv {
	t.Helper()
	e := newEnv(t, nil)
	t.Cleanup(func() {
		if t.Failed() {
			e.logs.mu.Lock()
			defer e.logs.mu.Unlock()
			t.Log(e.logs.buf.String())
		}
	})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string][]string{"xfcc": r.Header.Values(forward.HeaderXFCC)})
	}))
	t.Cleanup(backend.Close)
	put(t, e.kv, service("app", "http1", backend.Listener.Addr().String()))
	for _, r := range routes {
		r.GetRoute().Spec.Service = "app"
		put(t, e.kv, r)
	}
	m := &mtlsEnv{env: e, servers: testca.New(t, "server CA")}
	m.apply(t, hosts(m.servers))
	m.addr = e.node.ListenerAddr("public")
	if m.addr == "" {
		t.Fatal("listener public is not served")
	}
	return m
}

// apply stores Listener "public" with hosts and waits until it is served.
func (m *mtlsEnv) apply(t *testing.T, hosts []*policyv1.ListenerHost) {
	t.Helper()
	waitRevision(t, m.node, put(t, m.kv, listenerResource("public", "127.0.0.1:0", hosts...)))
}

// identityRoute is Route name on path with clientCertificate and allow
// rules as given ("" and none: any client).
func identityRoute(name, path, clientCertificate string, allow ...*policyv1.IdentityRule) *policyv1.Resource {
	r := route(name, path, "app")
	r.GetRoute().Spec.ClientCertificate, r.GetRoute().Spec.Allow = clientCertificate, allow
	return r
}

// tlsClient presents kp (if not nil) to the Listener for sni, with
// keep-alives as asked; cache (may be nil) resumes sessions.
func (m *mtlsEnv) tlsClient(sni string, kp *testca.KeyPair, keepAlive bool, cache tls.ClientSessionCache) *http.Client {
	cfg := &tls.Config{RootCAs: m.servers.Pool(), ServerName: sni, ClientSessionCache: cache}
	if kp != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp.TLS, nil }
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: cfg, ForceAttemptHTTP2: true, DisableKeepAlives: !keepAlive,
	}}
}

// reply is what a request through the Listener got.
type reply struct {
	status int
	xfcc   []string // as the upstream saw it
	body   forward.ErrorBody
	reused bool // the request went on an already open connection
	tls    *tls.ConnectionState
}

func call(t *testing.T, c *http.Client, url string, header http.Header) (reply, error) {
	t.Helper()
	var rep reply
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { rep.reused = info.Reused },
	}))
	resp, err := c.Do(req)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return rep, err
	}
	rep.status, rep.tls = resp.StatusCode, resp.TLS
	if resp.StatusCode == 200 {
		var e struct{ XFCC []string }
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("upstream body %s: %v", b, err)
		}
		rep.xfcc = e.XFCC
	} else if err := json.Unmarshal(b, &rep.body); err != nil {
		t.Fatalf("error body %s: %v", b, err)
	}
	return rep, nil
}

func TestRouteClientCertificateRules(t *testing.T) {
	t.Parallel()
	clients := testca.New(t, "client CA")
	other := testca.New(t, "other CA")
	opsURI, _ := url.Parse("spiffe://example.org/ns/ops/sa/admin")
	ops := clients.Issue(testca.Options{CommonName: `ops "admin"`, OU: []string{"ops"}, URIs: []*url.URL{opsURI}, DNSNames: []string{"ops.example.com"}})
	alice := clients.Client("alice")

	m := newMTLSEnv(t, func(servers *testca.CA) []*policyv1.ListenerHost {
		return []*policyv1.ListenerHost{
			// Verifies a certificate when the client gives one.
			listenerHost(servers.Server("test.com"), "verify-if-given", []*testca.CA{clients}, "test.com"),
			// Requests one and has no CAs to verify it with.
			listenerHost(servers.Server("nocas.test"), "request", nil, "nocas.test"),
		}
	},
		identityRoute("public", "/public/", ""),
		identityRoute("admin", "/admin/", model.ClientCertificateRequired),
		identityRoute("ops", "/ops/", model.ClientCertificateRequired, &policyv1.IdentityRule{SpiffeId: "spiffe://example.org/*"}, &policyv1.IdentityRule{Ou: "secret-team"}),
	)
	url := func(path string) string { return "https://" + m.addr + path }
	forged := http.Header{forward.HeaderXFCC: {"Hash=forged;Subject=\"CN=root\""}}

	// status 0: the handshake refuses the certificate (verify-if-given
	// verifies one that is given), whatever the route.
	tests := []struct {
		name   string
		sni    string
		client *testca.KeyPair
		path   string
		status int
		reason failure.Reason
		xfcc   *testca.KeyPair // the certificate the upstream must see in XFCC
	}{
		{"public/no-certificate", "test.com", nil, "/public/x", 200, "", nil},
		{"public/trusted", "test.com", alice, "/public/x", 200, "", alice},
		{"public/other-ca", "test.com", other.Client("mallory"), "/public/x", 0, "", nil},
		{"admin/no-certificate", "test.com", nil, "/admin/x", 401, failure.ClientCertificateRequired, nil},
		{"admin/trusted", "test.com", alice, "/admin/x", 200, "", alice},
		{"admin/other-ca", "test.com", other.Client("mallory"), "/admin/x", 0, "", nil},
		{"admin/expired", "test.com", clients.Expired("old"), "/admin/x", 0, "", nil},
		{"admin/host-without-cas", "nocas.test", alice, "/admin/x", 401, failure.ClientCertificateUntrusted, nil},
		{"public/host-without-cas", "nocas.test", other.Client("mallory"), "/public/x", 200, "", nil},
		{"ops/allowed", "test.com", ops, "/ops/x", 200, "", ops},
		{"ops/not-allowed", "test.com", alice, "/ops/x", 403, failure.IdentityNotAllowed, nil},
		{"ops/no-certificate", "test.com", nil, "/ops/x", 401, failure.ClientCertificateRequired, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rep, err := call(t, m.tlsClient(tt.sni, tt.client, false, nil), url(tt.path), forged)
			if tt.status == 0 {
				if err == nil {
					t.Fatalf("got %d %q, want the handshake refused", rep.status, rep.body.Reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.status != tt.status || rep.body.Reason != tt.reason {
				t.Fatalf("got %d %q (%+v), want %d %q", rep.status, rep.body.Reason, rep.body, tt.status, tt.reason)
			}
			if rep.status != 200 {
				if rep.body.Fix == "" {
					t.Errorf("no fix in %+v", rep.body)
				}
				return
			}
			// The client's own header never reaches the upstream.
			if tt.xfcc == nil {
				if len(rep.xfcc) != 0 {
					t.Errorf("upstream saw X-Forwarded-Client-Cert %q, want none", rep.xfcc)
				}
				return
			}
			sum := sha256.Sum256(tt.xfcc.Cert.Raw)
			want := "Hash=" + hex.EncodeToString(sum[:]) + `;Subject="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(tt.xfcc.Cert.Subject.String()) + `"`
			for _, u := range tt.xfcc.Cert.URIs {
				want += ";URI=" + u.String()
			}
			for _, d := range tt.xfcc.Cert.DNSNames {
				want += ";DNS=" + d
			}
			if len(rep.xfcc) != 1 || rep.xfcc[0] != want {
				t.Errorf("upstream saw X-Forwarded-Client-Cert %q, want %q", rep.xfcc, want)
			}
		})
	}

	t.Run("fixes", func(t *testing.T) {
		rep, _ := call(t, m.tlsClient("nocas.test", alice, false, nil), url("/admin/x"), nil)
		if !strings.Contains(rep.body.Fix, "verify-if-given or require-and-verify") {
			t.Errorf("no clientCAs: fix %q does not say to verify clients", rep.body.Fix)
		}
		rep, _ = call(t, m.tlsClient("test.com", alice, false, nil), url("/ops/x"), nil)
		if !strings.Contains(rep.body.Fix, "spiffeID or subject OU") || strings.Contains(rep.body.Fix, "secret-team") || strings.Contains(rep.body.Fix, "example.org") {
			t.Errorf("identity_not_allowed: fix %q should name the rule kinds and no rule value", rep.body.Fix)
		}
	})
	// The ops certificate's Subject holds quotes: escaped in XFCC.
	if !strings.Contains(ops.Cert.Subject.String(), `"`) {
		t.Errorf("ops subject %q holds no quote; the escaping is not exercised", ops.Cert.Subject.String())
	}
}

// A client certificate that expires while its connection is open is
// refused on that connection's next request; a new connection with the
// session saved from before does not get past the handshake.
func TestExpiredClientCertificateRefused(t *testing.T) {
	t.Parallel()
	clients := testca.New(t, "client CA")
	m := newMTLSEnv(t, func(servers *testca.CA) []*policyv1.ListenerHost {
		return []*policyv1.ListenerHost{listenerHost(servers.Server("test.com"), "require-and-verify", []*testca.CA{clients}, "test.com")}
	}, identityRoute("public", "/public/", ""))
	// Issued once the node serves, so that its few seconds of validity
	// are not spent starting the node on a busy machine.
	now := time.Now()
	brief := clients.Issue(testca.Options{CommonName: "brief", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(3 * time.Second)})
	url := "https://" + m.addr + "/public/x"
	cache := tls.NewLRUClientSessionCache(8)
	keep := m.tlsClient("test.com", brief, true, cache)
	rep, err := call(t, keep, url, nil)
	if err != nil || rep.status != 200 || len(rep.xfcc) != 1 {
		t.Fatalf("before expiry: %v %+v", err, rep)
	}
	// The first connection saved a session: a second connection resumes it.
	fresh := m.tlsClient("test.com", brief, false, cache)
	if rep, err := call(t, fresh, url, nil); err != nil || rep.status != 200 || !rep.tls.DidResume {
		t.Fatalf("resuming before expiry: %v, %+v", err, rep)
	}

	// NotAfter is the last valid second; wait until it has passed.
	expiry := time.NewTimer(time.Until(brief.Cert.NotAfter.Add(time.Second)))
	<-expiry.C

	rep, err = call(t, keep, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.reused || rep.status != 401 || rep.body.Reason != failure.ClientCertificateExpired {
		t.Errorf("same connection after expiry: reused %v, %d %q; want 401 %s", rep.reused, rep.status, rep.body.Reason, failure.ClientCertificateExpired)
	}
	// crypto/tls's server itself declines to resume a session whose client
	// certificate has expired; the full handshake then refuses it.
	rep, err = call(t, fresh, url, nil)
	if err == nil {
		t.Errorf("new connection with the saved session after expiry: got %d (resumed %v), want the handshake refused", rep.status, rep.tls.DidResume)
	}
	waitHandshakes(t, m.env, failure.Expired, 1)
}

// Removing a CA from the Listener refuses its certificates on connections
// opened before.
func TestClientCARemovedRefusesOpenConnection(t *testing.T) {
	t.Parallel()
	oldCA, newCA := testca.New(t, "old client CA"), testca.New(t, "new client CA")
	var serverKP *testca.KeyPair
	hosts := func(cas ...*testca.CA) []*policyv1.ListenerHost {
		return []*policyv1.ListenerHost{listenerHost(serverKP, "require-and-verify", cas, "test.com")}
	}
	m := newMTLSEnv(t, func(servers *testca.CA) []*policyv1.ListenerHost {
		serverKP = servers.Server("test.com")
		return hosts(oldCA, newCA)
	}, identityRoute("public", "/public/", ""))
	url := "https://" + m.addr + "/public/x"
	keep := m.tlsClient("test.com", oldCA.Client("legacy"), true, nil)
	if rep, err := call(t, keep, url, nil); err != nil || rep.status != 200 {
		t.Fatalf("before the removal: %v %+v", err, rep)
	}
	m.apply(t, hosts(newCA))
	rep, err := call(t, keep, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.reused || rep.status != 401 || rep.body.Reason != failure.ClientCertificateUntrusted {
		t.Errorf("open connection after the CA's removal: reused %v, %d %q; want 401 %s", rep.reused, rep.status, rep.body.Reason, failure.ClientCertificateUntrusted)
	}
	// The new CA's clients are served.
	if rep, err := call(t, m.tlsClient("test.com", newCA.Client("current"), true, nil), url, nil); err != nil || rep.status != 200 {
		t.Errorf("a client of the CA kept: %v %+v", err, rep)
	}
}

func TestInboundHandshakeFailuresCounted(t *testing.T) {
	t.Parallel()
	clients, other := testca.New(t, "client CA"), testca.New(t, "other CA")
	m := newMTLSEnv(t, func(servers *testca.CA) []*policyv1.ListenerHost {
		return []*policyv1.ListenerHost{listenerHost(servers.Server("test.com"), "require-and-verify", []*testca.CA{clients}, "test.com")}
	}, identityRoute("public", "/public/", ""))
	url := "https://" + m.addr + "/public/x"
	if rep, err := call(t, m.tlsClient("test.com", clients.Client("alice"), false, nil), url, nil); err != nil || rep.status != 200 {
		t.Fatalf("trusted client: %v %+v", err, rep)
	}
	if _, err := call(t, m.tlsClient("test.com", other.Client("mallory"), false, nil), url, nil); err == nil {
		t.Fatal("a client of another CA got through")
	}
	if _, err := call(t, m.tlsClient("test.com", nil, false, nil), url, nil); err == nil {
		t.Fatal("a client without a certificate got through")
	}
	waitHandshakes(t, m.env, failure.UnknownAuthority, 1)
	waitHandshakes(t, m.env, failure.NoClientCertificate, 1)
	waitHandshakes(t, m.env, "", 1)
	logged := 0
	for _, rec := range m.logs.lines("inbound TLS handshake failed") {
		if rec["reason"] == string(failure.UnknownAuthority) {
			logged++
			if rec["client"] == "" || rec["level"] != "INFO" {
				t.Errorf("log record %v: want level INFO and the client address", rec)
			}
		}
	}
	if logged != 1 {
		t.Errorf("%d log records for the unknown_authority failure, want 1", logged)
	}
}

// waitHandshakes waits until keyway_inbound_handshakes_total for listener
// public and reason ("" : completed) reaches want. The count is taken when
// the server is done with the connection, just after the client saw the
// outcome.
func waitHandshakes(t *testing.T, e *env, reason failure.Reason, want float64) {
	t.Helper()
	result := "ok"
	if reason != "" {
		result = "error"
	}
	labels := map[string]string{"listener": "public", "result": result, "reason": string(reason)}
	testwait.Eventually(t, 10*time.Second, func() error {
		ms := series(scrape(t, e), "keyway_inbound_handshakes_total", labels)
		if len(ms) != 1 || ms[0].GetCounter().GetValue() < want {
			return fmt.Errorf("keyway_inbound_handshakes_total%v: %d series %v, want %v", labels, len(ms), ms, want)
		}
		if got := ms[0].GetCounter().GetValue(); got != want {
			t.Errorf("keyway_inbound_handshakes_total%v = %v, want %v", labels, got, want)
		}
		return nil
	})
}
