package node_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/forward"
	"keyway.dev/proxy/internal/node"
	"keyway.dev/proxy/internal/publish"
)

type env struct {
	kv      jetstream.KeyValue
	node    *node.Node
	logs    *logBuffer
	ca      *testca.CA // issues upstream certificates
	clients *testca.CA // issues the gateway's client certificates
	gateway *testca.KeyPair
	server  *testca.KeyPair
}

// newEnv starts NATS and a node; mod (may be nil) changes the node's
// configuration.
func newEnv(t testing.TB, mod func(*node.Config)) *env {
	url, kv := startNATS(t)
	n, logs := startNode(t, url, mod)
	ca := testca.New(t, "upstream CA")
	clients := testca.New(t, "gateway client CA")
	return &env{kv: kv, node: n, logs: logs, ca: ca, clients: clients, gateway: clients.Client("gateway"), server: ca.Server("orders.internal")}
}

// apply stores service, binding (cfg nil: none) and a route "/<name>/" and
// waits until the node serves them.
func (e *env) apply(t testing.TB, name, protocol, endpoint string, cfg map[string]any) {
	t.Helper()
	put(t, e.kv, service(name, protocol, endpoint))
	if cfg != nil {
		put(t, e.kv, binding(t, name+"-mtls", name, cfg))
	}
	waitRevision(t, e.node, put(t, e.kv, route(name, "/"+name+"/", name)))
}

func (e *env) url(path string) string { return "http://" + e.node.Addr() + path }

// TestForwardsWithClientCertificate also checks which HTTP version the
// upstream is spoken to in: h2 only when the Service is h2 (or gRPC) or
// the binding's alpn offers it, even to an upstream that speaks h2.
func TestForwardsWithClientCertificate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for _, tt := range []struct {
		name     string
		h2       bool // the upstream speaks h2 (and HTTP/1.1)
		protocol string
		alpn     []any // the binding's, nil for none
		want     string
	}{
		{"orders-h1", false, "http1", nil, "HTTP/1.1"},
		{"orders-h2-capable", true, "http1", nil, "HTTP/1.1"},
		{"orders-h2-service", true, "h2", nil, "HTTP/2.0"},
		{"orders-h2-alpn", true, "http1", []any{"h2", "http/1.1"}, "HTTP/2.0"},
		{"orders-h1-alpn", true, "h2", []any{"http/1.1"}, "HTTP/1.1"},
	} {
		name := tt.name
		t.Run(name, func(t *testing.T) {
			srv := upstreamServer(t, e.server, e.clients, tt.h2, nil)
			var more map[string]any
			if tt.alpn != nil {
				more = map[string]any{"alpn": tt.alpn}
			}
			e.apply(t, name, tt.protocol, addr(srv), mtls(e.ca, e.gateway, more))
			a := do(t, "GET", e.url("/"+name+"/42"))
			got := a.echo(t)
			if got.Fingerprint != e.gateway.Fingerprint() || got.CN != "gateway" {
				t.Errorf("upstream saw %q %s, want the gateway's certificate %s", got.CN, got.Fingerprint, e.gateway.Fingerprint())
			}
			if got.Proto != tt.want {
				t.Errorf("upstream protocol %s, want %s", got.Proto, tt.want)
			}
			if got.Path != "/"+name+"/42" || got.Forwarded != "127.0.0.1" {
				t.Errorf("upstream saw path %q, X-Forwarded-For %q", got.Path, got.Forwarded)
			}
			if id := a.header.Get("X-Request-Id"); id == "" || id != got.RequestID || len(a.header.Values("X-Request-Id")) != 1 {
				t.Errorf("request id: response %q, upstream %q", a.header.Values("X-Request-Id"), got.RequestID)
			}
		})
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	other := testca.New(t, "some other CA")
	tls12 := func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }
	tests := []struct {
		name     string
		endpoint func(t *testing.T) string
		cfg      map[string]any
		reason   string
		status   int
		fix      string // in the body's fix
		// handshakeTimeout, when set, runs the case on a node of its own
		// with that timeout (the shared node's is long).
		handshakeTimeout time.Duration
	}{
		{name: "unknown-authority", reason: "unknown_authority", status: 502,
			endpoint: func(t *testing.T) string { return addr(upstreamServer(t, e.server, e.clients, false, nil)) },
			cfg:      mtls(other, e.gateway, nil)},
		{name: "no-client-cert-tls12", reason: "no_client_certificate", status: 502,
			endpoint: func(t *testing.T) string { return addr(upstreamServer(t, e.server, e.clients, false, tls12)) },
			cfg:      mtls(e.ca, nil, map[string]any{"maxversion": "1.2"})},
		{name: "no-client-cert-tls13", reason: "no_client_certificate", status: 502,
			endpoint: func(t *testing.T) string {
				return addr(upstreamServer(t, e.server, e.clients, false, func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }))
			},
			cfg: mtls(e.ca, nil, nil)},
		{name: "client-cert-rejected", reason: "client_certificate_rejected", status: 502,
			endpoint: func(t *testing.T) string { return addr(upstreamServer(t, e.server, e.clients, false, nil)) },
			cfg:      mtls(e.ca, other.Client("gateway"), nil)},
		{name: "san-mismatch", reason: "san_mismatch", status: 502,
			endpoint: func(t *testing.T) string { return addr(upstreamServer(t, e.server, e.clients, false, nil)) },
			cfg:      mtls(e.ca, e.gateway, map[string]any{"sni": "billing.internal"})},
		{name: "legacy-cn", reason: "legacy_common_name", status: 502, fix: `-addext "subjectAltName=DNS:orders.internal"`,
			endpoint: func(t *testing.T) string {
				return addr(upstreamServer(t, e.ca.CNOnly("orders.internal"), e.clients, false, nil))
			},
			cfg: mtls(e.ca, e.gateway, nil)},
		{name: "protocol-version", reason: "protocol_version", status: 502,
			endpoint: func(t *testing.T) string {
				return addr(upstreamServer(t, e.server, e.clients, false, func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }))
			},
			cfg: mtls(e.ca, e.gateway, map[string]any{"maxversion": "1.2"})},
		{name: "no-shared-cipher", reason: "no_shared_cipher", status: 502,
			endpoint: func(t *testing.T) string {
				return addr(upstreamServer(t, e.server, e.clients, false, func(c *tls.Config) {
					c.MaxVersion = tls.VersionTLS12
					c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
				}))
			},
			cfg: mtls(e.ca, e.gateway, map[string]any{"maxversion": "1.2", "ciphers": []any{"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"}})},
		{name: "refused", reason: "connection_refused", status: 503,
			endpoint: func(t *testing.T) string { return closedPort(t) }, cfg: mtls(e.ca, e.gateway, nil)},
		{name: "handshake-timeout", reason: "handshake_timeout", status: 504, handshakeTimeout: 500 * time.Millisecond,
			endpoint: func(t *testing.T) string { return silent(t) }, cfg: mtls(e.ca, e.gateway, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e
			if tt.handshakeTimeout != 0 {
				e = newEnv(t, func(c *node.Config) { c.HandshakeTimeout = tt.handshakeTimeout })
			}
			e.apply(t, tt.name, "http1", tt.endpoint(t), tt.cfg)
			a := do(t, "GET", e.url("/"+tt.name+"/x"))
			var body forward.ErrorBody
			if err := json.Unmarshal(a.body, &body); err != nil {
				t.Fatalf("status %d body %s: %v", a.status, a.body, err)
			}
			if a.status != tt.status || string(body.Reason) != tt.reason {
				t.Fatalf("status %d reason %s (%s), want %d %s", a.status, body.Reason, a.body, tt.status, tt.reason)
			}
			if body.Upstream != tt.name || body.RequestID == "" || body.RequestID != a.header.Get("X-Request-Id") || body.Fix == "" {
				t.Errorf("body %s", a.body)
			}
			if !strings.Contains(body.Fix, tt.fix) {
				t.Errorf("fix %q does not contain %q", body.Fix, tt.fix)
			}
			if strings.Contains(string(a.body), "PRIVATE KEY") || strings.Contains(string(a.body), "BEGIN") {
				t.Errorf("body carries PEM: %s", a.body)
			}
			var logged map[string]any
			for _, rec := range e.logs.lines("upstream request failed") {
				if rec["request_id"] == body.RequestID {
					logged = rec
				}
			}
			if logged == nil {
				t.Fatalf("no log line for request %s", body.RequestID)
			}
			if logged["upstream"] != tt.name || logged["reason"] != tt.reason || logged["endpoint"] == "" || logged["fingerprint"] == "" {
				t.Errorf("log line %v", logged)
			}
			if !strings.Contains(fmt.Sprint(logged["detail"]), tt.fix) {
				t.Errorf("log detail %q does not contain %q", logged["detail"], tt.fix)
			}
		})
	}
}

// A binding replaced 100 times under load: no request fails, and the
// upstream sees the new client certificate once the node serves it.
func TestBindingRotationUnderLoad(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	srv := upstreamServer(t, e.server, e.clients, false, nil)
	e.apply(t, "rot", "http1", addr(srv), mtls(e.ca, e.gateway, nil))

	var ok, failed atomic.Int64
	var seen sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(e.url("/rot/x"))
				if err != nil {
					failed.Add(1)
					t.Errorf("request: %v", err)
					continue
				}
				var got echo
				err = json.NewDecoder(resp.Body).Decode(&got)
				resp.Body.Close()
				if resp.StatusCode != 200 || err != nil {
					failed.Add(1)
					t.Errorf("status %d: %v", resp.StatusCode, err)
					continue
				}
				ok.Add(1)
				seen.Store(got.Fingerprint, true)
			}
		})
	}
	var last *testca.KeyPair
	for i := range 100 {
		last = e.clients.Client(fmt.Sprintf("gateway-%d", i))
		waitRevision(t, e.node, put(t, e.kv, binding(t, "rot-mtls", "rot", mtls(e.ca, last, nil))))
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during rotation", failed.Load(), failed.Load()+ok.Load())
	}
	if got := do(t, "GET", e.url("/rot/x")).echo(t); got.Fingerprint != last.Fingerprint() {
		t.Errorf("after rotation the upstream sees %s, want %s", got.Fingerprint, last.Fingerprint())
	}
	n := 0
	seen.Range(func(any, any) bool { n++; return true })
	t.Logf("%d requests, %d distinct client certificates seen, 0 failed", ok.Load(), n)
	if n < 2 {
		t.Errorf("only %d client certificate seen during rotation", n)
	}
}

func TestBootstrapFromFilledBucket(t *testing.T) {
	t.Parallel()
	url, kv := startNATS(t)
	ca, clients := testca.New(t, "upstream CA"), testca.New(t, "clients")
	gw := clients.Client("gateway")
	srv := upstreamServer(t, ca.Server("orders.internal"), clients, false, nil)
	put(t, kv, route("orders", "/orders/{id}", "orders", "GET"))
	put(t, kv, binding(t, "orders-mtls", "orders", mtls(ca, gw, nil)))
	put(t, kv, service("orders", "http1", addr(srv)))
	// Conflicting and invalid resources: reported and skipped.
	put(t, kv, route("orders-dup", "/orders/{num}", "orders", "GET"))
	brokenRev := put(t, kv, binding(t, "broken", "orders", map[string]any{"trustedCA": "not PEM"}))
	rev := lastRevision(t, kv)

	n, _ := startNode(t, url, nil)
	<-n.Ready()
	if n.Revision() != rev {
		t.Errorf("ready at revision %d, want %d", n.Revision(), rev)
	}
	const brokenKey, goodKey = "policybinding.broken", "policybinding.orders-mtls"
	if got := waitSkipped(t, n, rev); len(got) != 1 || got[0].Key != brokenKey || got[0].Revision != brokenRev {
		t.Errorf("WaitRevision(%d) refused %v, want %s at %d", rev, got, brokenKey, brokenRev)
	}
	if got := do(t, "GET", "http://"+n.Addr()+"/orders/7").echo(t); got.Fingerprint != gw.Fingerprint() {
		t.Errorf("fingerprint %s", got.Fingerprint)
	}
	if a := do(t, "POST", "http://"+n.Addr()+"/orders/7"); a.status != 404 || !strings.Contains(string(a.body), `"no_route"`) {
		t.Errorf("POST: %d %s", a.status, a.body)
	}
	if a := do(t, "GET", "http://"+n.AdminAddr()+"/healthz"); a.status != 200 {
		t.Errorf("healthz %d", a.status)
	}
	st := status(t, n)
	if st.Revision != rev || len(st.Upstreams) != 1 || st.Upstreams[0].ClientCertificate != gw.Fingerprint() || st.Upstreams[0].Fingerprint == "" {
		t.Errorf("status %+v", st)
	}
	if len(st.RouteErrors) != 1 || !strings.Contains(st.RouteErrors[0], "orders-dup") {
		t.Errorf("route errors %q", st.RouteErrors)
	}
	if len(st.Skipped) != 1 || st.Skipped[0].Key != brokenKey || st.Skipped[0].Revision != brokenRev || !strings.Contains(st.Skipped[0].Error, "trustedCA") {
		t.Errorf("skipped %+v", st.Skipped)
	}

	// A later invalid version of a good binding keeps the last good one
	// in service; the node has seen the revision, and says it refused it.
	badRev := put(t, kv, binding(t, "orders-mtls", "orders", map[string]any{"trustedCA": "not PEM"}))
	got := waitSkipped(t, n, badRev)
	if len(got) != 2 || got[0].Key != brokenKey || got[1].Key != goodKey || got[1].Revision != badRev {
		t.Errorf("WaitRevision(%d) refused %v, want %s and %s at %d", badRev, got, brokenKey, goodKey, badRev)
	}
	if got := do(t, "GET", "http://"+n.Addr()+"/orders/7").echo(t); got.Fingerprint != gw.Fingerprint() {
		t.Errorf("after an invalid update: fingerprint %s", got.Fingerprint)
	}
	st = status(t, n)
	if st.Revision != badRev || len(st.Skipped) != 2 || st.Skipped[1].Key != goodKey || st.Skipped[1].Revision != badRev || st.Skipped[1].Error == "" {
		t.Errorf("status after an invalid update: revision %d, skipped %+v", st.Revision, st.Skipped)
	}

	// A good value clears the key's refusal; so does a delete.
	rev = put(t, kv, binding(t, "orders-mtls", "orders", mtls(ca, gw, nil)))
	if got := waitSkipped(t, n, rev); len(got) != 1 || got[0].Key != brokenKey {
		t.Errorf("after a good value: refused %v, want only %s", got, brokenKey)
	}
	if err := kv.Delete(context.Background(), brokenKey); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, n, lastRevision(t, kv))
	if st := status(t, n); len(st.Skipped) != 0 {
		t.Errorf("after fixing and deleting: skipped %+v", st.Skipped)
	}

	// Deleting the route answers 404.
	if err := kv.Delete(context.Background(), configkv.Key(model.Ref{Kind: model.KindRoute, Name: "orders"})); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, n, lastRevision(t, kv))
	// orders-dup now has the pattern to itself.
	if got := do(t, "GET", "http://"+n.Addr()+"/orders/7").echo(t); got.Fingerprint != gw.Fingerprint() {
		t.Errorf("after delete: %v", got)
	}
	if err := kv.Purge(context.Background(), configkv.Key(model.Ref{Kind: model.KindRoute, Name: "orders-dup"})); err != nil {
		t.Fatal(err)
	}
	waitRevision(t, n, lastRevision(t, kv))
	if a := do(t, "GET", "http://"+n.Addr()+"/orders/7"); a.status != http.StatusNotFound {
		t.Errorf("after purge: %d %s", a.status, a.body)
	}
}

func status(t testing.TB, n *node.Node) node.Status {
	t.Helper()
	var st node.Status
	if err := json.Unmarshal(do(t, "GET", "http://"+n.AdminAddr()+"/status").body, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitSkipped waits for revision rev and returns the refusals WaitRevision
// reports, failing on any other error.
func waitSkipped(t testing.TB, n *node.Node, rev uint64) []*publish.SkippedError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := n.WaitRevision(ctx, rev)
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out []*publish.SkippedError
	for _, err := range errs {
		var sk *publish.SkippedError
		if !errors.As(err, &sk) {
			t.Fatalf("WaitRevision(%d): %v", rev, err)
		}
		out = append(out, sk)
	}
	return out
}
