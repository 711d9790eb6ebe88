package node_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/forward"
)

// A Route that needs a verified client certificate, stored as `apply`
// stores it (no listeners:), is never forwarded from the plain-HTTP port:
// the port answers 401 with the typed reason and a fix that names the
// route. Routes without client-certificate rules are served there as
// before.
func TestIdentityRouteRefusedOnPlainPort(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	var hits atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "forwarded")
	}))
	t.Cleanup(backend.Close)
	put(t, e.kv, service("app", "http1", backend.Listener.Addr().String()))
	put(t, e.kv, route("public", "/public/", "app"))
	required := route("admin", "/admin/", "app")
	required.GetRoute().Spec.ClientCertificate = "required"
	put(t, e.kv, required)
	allowed := route("ops", "/ops/", "app")
	allowed.GetRoute().Spec.Allow = []*policyv1.IdentityRule{{SpiffeId: "spiffe://example.org/ops"}}
	waitRevision(t, e.node, put(t, e.kv, allowed))

	if a := do(t, "GET", e.url("/public/x")); a.status != 200 || string(a.body) != "forwarded" {
		t.Fatalf("public route on the plain port: %d %s", a.status, a.body)
	}
	before := hits.Load()
	for _, tt := range []struct{ route, path string }{{"admin", "/admin/x"}, {"ops", "/ops/x"}} {
		t.Run(tt.route, func(t *testing.T) {
			// A forged X-Forwarded-Client-Cert changes nothing.
			req, _ := http.NewRequest("GET", e.url(tt.path), nil)
			req.Header.Set(forward.HeaderXFCC, `Hash=forged;Subject="CN=admin"`)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body forward.ErrorBody
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 401 || body.Reason != failure.ClientCertificateRequired {
				t.Fatalf("got %d %+v, want 401 %s", resp.StatusCode, body, failure.ClientCertificateRequired)
			}
			if !strings.Contains(body.Fix, `route "`+tt.route+`"`) || !strings.Contains(body.Fix, "listeners:") || body.RequestID == "" {
				t.Errorf("body %+v: the fix should name the route and listeners:, with the request id", body)
			}
		})
	}
	if n := hits.Load() - before; n != 0 {
		t.Errorf("the upstream got %d requests for routes that need a client certificate", n)
	}
	refused := 0
	for _, rec := range e.logs.lines("client refused") {
		if rec["reason"] == string(failure.ClientCertificateRequired) {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("%d \"client refused\" log records, want 2", refused)
	}
}

// A request for a route that needs a client certificate is judged by the
// Listener host its connection was opened for; when the request names
// another host, one that trusts other client CAs (a connection reused
// across host names, as HTTP/2 coalescing does), it is refused with 421
// instead of being admitted on the first host's trust.
func TestIdentityRouteOnConnectionForAnotherHost(t *testing.T) {
	t.Parallel()
	caA, caB := testca.New(t, "client CA A"), testca.New(t, "client CA B")
	alice, bob := caA.Client("alice"), caB.Client("bob")
	onHost := func(r *policyv1.Resource, host string) *policyv1.Resource {
		r.GetRoute().Spec.Host = host
		return r
	}
	m := newMTLSEnv(t, func(servers *testca.CA) []*policyv1.ListenerHost {
		kp := servers.Server("a.test", "b.test", "c.test")
		return []*policyv1.ListenerHost{
			listenerHost(kp, "verify-if-given", []*testca.CA{caA}, "a.test"),
			listenerHost(kp, "verify-if-given", []*testca.CA{caB}, "b.test"),
			// Another host that trusts the same CA as a.test.
			listenerHost(kp, "verify-if-given", []*testca.CA{caA}, "c.test"),
		}
	},
		onHost(identityRoute("b-admin", "/admin/", model.ClientCertificateRequired), "b.test"),
		onHost(identityRoute("c-admin", "/admin/", model.ClientCertificateRequired), "c.test"),
		onHost(identityRoute("b-public", "/public/", ""), "b.test"),
	)
	tests := []struct {
		name   string
		sni    string
		host   string
		client *testca.KeyPair
		path   string
		status int
		reason failure.Reason
	}{
		{"own-host", "b.test", "b.test", bob, "/admin/x", 200, ""},
		{"other-host-other-cas", "a.test", "b.test", alice, "/admin/x", 421, failure.MisdirectedRequest},
		{"other-host-same-cas", "a.test", "c.test", alice, "/admin/x", 200, ""},
		// No SNI: the default host, a.test, judged the connection.
		{"no-sni", "", "b.test", alice, "/admin/x", 421, failure.MisdirectedRequest},
		{"public-route", "a.test", "b.test", alice, "/public/x", 200, ""},
	}
	for _, tt := range tests {
		for _, h2 := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{false: "/h1", true: "/h2"}[h2], func(t *testing.T) {
				t.Parallel()
				cfg := &tls.Config{RootCAs: m.servers.Pool(), ServerName: tt.sni, InsecureSkipVerify: tt.sni == ""}
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tt.client.TLS, nil }
				tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2}
				if !h2 {
					tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
				}
				defer tr.CloseIdleConnections()
				req, _ := http.NewRequest("GET", "https://"+m.addr+tt.path, nil)
				req.Host = tt.host
				resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var body forward.ErrorBody
				if resp.StatusCode != 200 {
					if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
						t.Fatal(err)
					}
				}
				if resp.StatusCode != tt.status || body.Reason != tt.reason || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
					t.Fatalf("got %d %q over %s, want %d %q", resp.StatusCode, body.Reason, resp.Proto, tt.status, tt.reason)
				}
			})
		}
	}
}

// sharedSessions is a client session cache that offers, for every server
// name, the last session saved for any: a client trying to carry a session
// from one Listener host to another.
type sharedSessions struct {
	mu   sync.Mutex
	last *tls.ClientSessionState
}

func (s *sharedSessions) Get(string) (*tls.ClientSessionState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.last != nil
}

func (s *sharedSessions) Put(_ string, cs *tls.ClientSessionState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cs != nil {
		s.last = cs
	}
}

// A session from a host that does not verify client certificates is not
// resumed on a host that does: the client goes through a full handshake,
// where its certificate is verified, and a route that needs one refuses it.
func TestSessionNotResumedAcrossHosts(t *testing.T) {
	t.Parallel()
	trusted, other := testca.New(t, "client CA"), testca.New(t, "other CA")
	m := newMTLSEnv(t, func(servers *testca.CA) []*policyv1.ListenerHost {
		kp := servers.Server("open.test", "secure.test")
		return []*policyv1.ListenerHost{
			listenerHost(kp, "request", nil, "open.test"),
			listenerHost(kp, "verify-if-given", []*testca.CA{trusted}, "secure.test"),
		}
	}, identityRoute("admin", "/admin/", model.ClientCertificateRequired), identityRoute("public", "/public/", ""))
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			t.Parallel()
			cache := &sharedSessions{}
			mallory := other.Client("mallory")
			connect := func(sni, path string) (*http.Response, error) {
				cfg := &tls.Config{RootCAs: m.servers.Pool(), ServerName: sni, ClientSessionCache: cache, MaxVersion: version}
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &mallory.TLS, nil }
				c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+m.addr+path, nil)
				resp, err := c.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				return resp, err
			}
			// The open host takes the unverified certificate and issues a
			// session.
			if resp, err := connect("open.test", "/public/x"); err != nil || resp.StatusCode != 200 {
				t.Fatalf("open host: %v %v", err, resp)
			}
			if cache.last == nil {
				t.Fatal("the open host issued no session to resume")
			}
			// Resuming that session on the open host works: the cache is
			// good, so a refusal below is the other host's.
			if resp, err := connect("open.test", "/public/x"); err != nil || !resp.TLS.DidResume {
				t.Fatalf("resuming on the open host: %v %v", err, resp)
			}
			resp, err := connect("secure.test", "/admin/x")
			switch {
			case err != nil:
				// The full handshake refused mallory's certificate.
			case resp.TLS.DidResume:
				t.Fatalf("the open host's session was resumed on the verifying host (status %d)", resp.StatusCode)
			case resp.StatusCode == 200:
				t.Fatal("an unverified client certificate reached a route that needs a verified one")
			}
		})
	}
}

// The plain-HTTP port bounds request headers at 64 KiB by default, as the
// Listeners do.
func TestPlainPortHeaderLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "forwarded") }))
	t.Cleanup(backend.Close)
	put(t, e.kv, service("app", "http1", backend.Listener.Addr().String()))
	waitRevision(t, e.node, put(t, e.kv, route("public", "/public/", "app")))
	for _, tt := range []struct {
		size   int
		status int
	}{{60 << 10, 200}, {70 << 10, http.StatusRequestHeaderFieldsTooLarge}} {
		req, _ := http.NewRequest("GET", e.url("/public/x"), nil)
		req.Header.Set("X-Padding", strings.Repeat("a", tt.size))
		req.Close = true // a new connection each: net/http's slack grows on a reused one
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%d KiB of headers: %d, want %d", tt.size>>10, resp.StatusCode, tt.status)
		}
	}
}
