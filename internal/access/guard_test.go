package access_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/access"
	"keyway.dev/internal/testca"
)

// world is a policy API (an unimplemented PolicyService: an admitted call
// answers Unimplemented) behind the access control, served over real TLS.
type world struct {
	url        string
	serverCA   *testca.CA
	operatorCA *testca.CA
	srv        *access.Server
	policyFile string
	// seen is the caller the handler saw last.
	mu   sync.Mutex
	seen *access.Caller
}

const tokenOp = "token-for-operator"

func policyDoc(extra string) string {
	return fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: AccessPolicy
spec:
  bindings:
    - role: viewer
      subjects: [{spiffeID: "spiffe://test/viewer"}]
    - role: operator
      subjects: [{spiffeID: "spiffe://test/operator"}, {tokenSHA256: %s}]
%s`, access.TokenDigest(tokenOp), extra)
}

func start(t *testing.T) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{serverCA: testca.New(t, "server CA"), operatorCA: testca.New(t, "operator CA")}
	server := w.serverCA.Server("localhost")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	w.policyFile = write("policy.yaml", []byte(policyDoc("")))
	opts := access.Options{CertFile: write("s.crt", server.CertPEM), KeyFile: write("s.key", server.KeyPEM), ClientCAFile: write("ca.crt", w.operatorCA.CertPEM()), PolicyFile: w.policyFile}
	srv, err := access.NewServer(opts, "127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	w.srv = srv
	ln, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(policyv1connect.NewPolicyServiceHandler(policyv1connect.UnimplementedPolicyServiceHandler{}))
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics\n") })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	record := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.seen = access.FromContext(r.Context())
		w.mu.Unlock()
		mux.ServeHTTP(rw, r)
	})
	hs := &http.Server{Handler: srv.Handler(access.PolicyAPI(), record), Protocols: srv.Protocols()}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	w.url = "https://" + ln.Addr().String()
	return w
}

// client presents cert (nil: none) and token ("": none).
func (w *world) client(cert *testca.KeyPair, token string) *http.Client {
	cfg := &tls.Config{RootCAs: w.serverCA.Pool()}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{cert.TLS}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	var rt http.RoundTripper = tr
	if token != "" {
		rt = roundTripper(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+token)
			return tr.RoundTrip(r)
		})
	}
	return &http.Client{Transport: rt}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (w *world) identity(name string) *testca.KeyPair {
	u, _ := url.Parse("spiffe://test/" + name)
	return w.operatorCA.Issue(testca.Options{CommonName: name, URIs: []*url.URL{u}})
}

func TestMiddlewareAnswersEachProtocolWithTheCode(t *testing.T) {
	t.Parallel()
	w := start(t)
	viewer, operator := w.identity("viewer"), w.identity("operator")
	nobody := w.identity("nobody")
	protocols := map[string][]connect.ClientOption{"connect": nil, "grpc": {connect.WithGRPC()}, "grpc-web": {connect.WithGRPCWeb()}}
	cases := []struct {
		name   string
		cert   *testca.KeyPair
		token  string
		call   string // "get" or "apply"
		want   connect.Code
		inMsg  string
		caller string
	}{
		{"no credential", nil, "", "get", connect.CodeUnauthenticated, "no credential: present a client certificate", ""},
		{"wrong token", nil, "guess", "get", connect.CodeUnauthenticated, "the bearer token is not in the access policy", ""},
		{"viewer reads", viewer, "", "get", connect.CodeUnimplemented, "", "spiffe://test/viewer"},
		{"viewer writes", viewer, "", "apply", connect.CodePermissionDenied, "keyway.policy.v1.PolicyService/Apply needs the operator role; you are spiffe://test/viewer (certificate), with the roles viewer", ""},
		{"no role", nobody, "", "get", connect.CodePermissionDenied, "needs the viewer role; you are spiffe://test/nobody (certificate), with no role", ""},
		{"operator reads", operator, "", "get", connect.CodeUnimplemented, "", "spiffe://test/operator"},
		{"operator writes", operator, "", "apply", connect.CodeUnimplemented, "", "spiffe://test/operator"},
		{"token writes", nil, tokenOp, "apply", connect.CodeUnimplemented, "", "token sha256:" + access.TokenDigest(tokenOp)[:12]},
	}
	for proto, opts := range protocols {
		for _, tc := range cases {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				c := policyv1connect.NewPolicyServiceClient(w.client(tc.cert, tc.token), w.url, opts...)
				var err error
				if tc.call == "get" {
					_, err = c.Get(context.Background(), connect.NewRequest(&policyv1.GetRequest{Kind: "Service", Name: "x"}))
				} else {
					_, err = c.Apply(context.Background(), connect.NewRequest(&policyv1.ApplyRequest{}))
				}
				if got := connect.CodeOf(err); got != tc.want {
					t.Fatalf("code %v (%v), want %v", got, err, tc.want)
				}
				if tc.inMsg != "" && !strings.Contains(err.Error(), tc.inMsg) {
					t.Errorf("message %q lacks %q", err, tc.inMsg)
				}
				if tc.caller != "" {
					w.mu.Lock()
					seen := w.seen
					w.mu.Unlock()
					if seen == nil || seen.Identity != tc.caller {
						t.Errorf("handler saw caller %v, want %s", seen, tc.caller)
					}
				}
			})
		}
	}
}

func TestMiddlewarePlainHTTPPaths(t *testing.T) {
	t.Parallel()
	w := start(t)
	cases := []struct {
		name   string
		client *http.Client
		path   string
		want   int
	}{
		{"healthz open", w.client(nil, ""), "/healthz", 200},
		{"grpc health open", w.client(nil, ""), "/grpc.health.v1.Health/Check", 415}, // reaches the mux: no health handler here
		{"metrics without credential", w.client(nil, ""), "/metrics", 401},
		{"metrics with no role", w.client(w.identity("nobody"), ""), "/metrics", 403},
		{"metrics viewer", w.client(w.identity("viewer"), ""), "/metrics", 200},
		{"unknown path", w.client(w.identity("operator"), ""), "/debug/pprof/", 403},
		{"unknown procedure", w.client(w.identity("operator"), ""), "/keyway.policy.v1.PolicyService/Drop", 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp, err := tc.client.Get(w.url + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tc.want == 415 {
				if resp.StatusCode == 401 || resp.StatusCode == 403 {
					t.Errorf("%s: %d %s, want it past the access control", tc.path, resp.StatusCode, body)
				}
				return
			}
			if resp.StatusCode != tc.want {
				t.Errorf("%s: %d %s, want %d", tc.path, resp.StatusCode, body, tc.want)
			}
		})
	}
}

// A certificate from a CA the server does not list: Go's client does not
// send it (the server names its CAs), so the caller is unauthenticated; a
// client that sends it anyway is refused at the handshake.
func TestOtherCAIsNotACredential(t *testing.T) {
	t.Parallel()
	w := start(t)
	stranger := testca.New(t, "other CA").Client("mallory")
	resp, err := w.client(stranger, "").Get(w.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a certificate from another CA: %d, want 401", resp.StatusCode)
	}
	insistent := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: w.serverCA.Pool(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger.TLS, nil }}}}
	_, err = insistent.Get(w.url + "/metrics")
	if err == nil || !strings.Contains(err.Error(), "tls: unknown certificate authority") {
		t.Fatalf("a certificate from another CA sent anyway: %v, want the handshake refused", err)
	}
}

func TestReloadKeepsTheOldPolicyOnError(t *testing.T) {
	t.Parallel()
	w := start(t)
	alice := w.identity("alice")
	get := func() int {
		resp, err := w.client(alice, "").Get(w.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(); got != 403 {
		t.Fatalf("alice before: %d, want 403", got)
	}
	// A bad file: refused, the old policy stays.
	if err := os.WriteFile(w.policyFile, []byte(policyDoc("    - role: admin\n      subjects: [{cn: alice}]\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.srv.Reload(); err == nil || !strings.Contains(err.Error(), "keeping the access policy in force") || !strings.Contains(err.Error(), "spec.bindings[2].role") {
		t.Errorf("Reload of a bad policy: %v", err)
	}
	if got := get(); got != 403 {
		t.Errorf("alice after a refused reload: %d, want 403", got)
	}
	// A good one: in force at once.
	if err := os.WriteFile(w.policyFile, []byte(policyDoc("    - role: viewer\n      subjects: [{cn: alice}]\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != 200 {
		t.Errorf("alice after the reload: %d, want 200", got)
	}
}

func TestNewServerRefusesToStartOpen(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		opts   access.Options
		listen string
		want   string
	}{
		{"nothing", access.Options{}, "127.0.0.1:8081", "--tls-cert, --tls-key, --client-ca, --access-policy are not given: give --tls-cert"},
		{"no policy", access.Options{CertFile: "a", KeyFile: "b", ClientCAFile: "c"}, "127.0.0.1:8081", "--access-policy is not given"},
		{"insecure on every interface", access.Options{InsecureNoAuth: true}, "0.0.0.0:8081", `binds loopback only, not "0.0.0.0:8081"`},
		{"insecure on no host", access.Options{InsecureNoAuth: true}, ":8081", "binds loopback only"},
		{"insecure with TLS", access.Options{InsecureNoAuth: true, CertFile: "a"}, "127.0.0.1:8081", "drop it, or drop --tls-cert"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := access.NewServer(tc.opts, tc.listen, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	for _, ok := range []string{"127.0.0.1:0", "[::1]:8081", "localhost:8081"} {
		if _, err := access.NewServer(access.Options{InsecureNoAuth: true}, ok, nil); err != nil {
			t.Errorf("--insecure-no-auth on %s: %v", ok, err)
		}
	}
}

// Every procedure of the generated services is in a table: a new RPC
// cannot be served unguarded or forgotten.
func TestTablesCoverEveryProcedure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		table access.Table
		fd    string
	}{
		{access.PolicyAPI(), "keyway.policy.v1.PolicyService"},
		{access.SecretsAPI(), "keyway.secrets.v1.SecretsService"},
		{access.MaterialAPI(), "keyway.secrets.v1.MaterialService"},
	} {
		for _, m := range methods(t, tc.fd) {
			rule, ok := tc.table.Lookup("/" + tc.fd + "/" + m)
			if !ok || rule.Open || rule.Role == "" {
				t.Errorf("%s/%s: rule %+v %v, want a role", tc.fd, m, rule, ok)
			}
		}
	}
}

// A page refused is answered by the page's own writer, with the guard's
// message and status; an admitted request reaches the page with its
// caller.
func TestPageMiddlewareHandsRefusalsToThePage(t *testing.T) {
	t.Parallel()
	p, err := access.ParsePolicy([]byte(policyDoc("")))
	if err != nil {
		t.Fatal(err)
	}
	g := access.NewGuardFor(p, nil)
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "page for "+access.FromContext(r.Context()).Identity)
	})
	refused := func(w http.ResponseWriter, _ *http.Request, ref access.Refusal) {
		w.WriteHeader(ref.Status)
		fmt.Fprintf(w, "refusal page %s: %v", ref.Code, ref.Err)
	}
	h := g.PageMiddleware(access.Table{"/": {Role: access.Operator}}, page, refused)
	for _, tc := range []struct {
		name, token string
		status      int
		want        string
	}{
		{"no credential", "", http.StatusUnauthorized, "refusal page unauthenticated: no credential"},
		{"unknown token", "nobody's", http.StatusUnauthorized, "not in the access policy"},
		{"operator", tokenOp, http.StatusOK, "page for token sha256:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/nodes", nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("%d %q, want %d and %q", rec.Code, rec.Body.String(), tc.status, tc.want)
			}
			if tc.status == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("a 401 without WWW-Authenticate")
			}
		})
	}
}
