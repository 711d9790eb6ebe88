package node_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/telemetry"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/proxy/internal/forward"
	"keyway.dev/proxy/internal/node"
)

// recorded is the spans a node's tracer ended.
type recorded struct{ rec *tracetest.SpanRecorder }

// traced returns a node configuration change that records every span
// (always sampled) in the returned recorder.
func traced() (*recorded, func(*node.Config)) {
	r := &recorded{rec: tracetest.NewSpanRecorder()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.rec), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	return r, func(c *node.Config) { c.Tracing = telemetry.New(tp) }
}

// wait polls until find returns a span (spans end after the client has its
// answer), failing after a generous deadline.
func (r *recorded) wait(t testing.TB, what string, find func([]sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	testwait.Eventually(t, 20*time.Second, func() error {
		if found = find(r.rec.Ended()); found == nil {
			return fmt.Errorf("no %s among the spans recorded:\n%s", what, dump(r.rec.Ended()))
		}
		return nil
	})
	return found
}

// request finds the request span of request id.
func (r *recorded) request(t testing.TB, id string) sdktrace.ReadOnlySpan {
	t.Helper()
	return r.wait(t, "request span for "+id, func(ss []sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
		for _, s := range ss {
			if s.Name() == telemetry.SpanRequest && attrs(s)["keyway.request_id"].AsString() == id {
				return s
			}
		}
		return nil
	})
}

// child finds the span named name whose parent is parent.
func (r *recorded) child(t testing.TB, parent sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	return r.wait(t, name+" under "+parent.Name(), func(ss []sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
		for _, s := range ss {
			if s.Name() == name && s.Parent().SpanID() == parent.SpanContext().SpanID() && s.SpanContext().TraceID() == parent.SpanContext().TraceID() {
				return s
			}
		}
		return nil
	})
}

func attrs(s sdktrace.ReadOnlySpan) map[string]attribute.Value {
	m := map[string]attribute.Value{}
	for _, a := range s.Attributes() {
		m[string(a.Key)] = a.Value
	}
	return m
}

func dump(ss []sdktrace.ReadOnlySpan) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "  %s trace=%s span=%s parent=%s status=%v %v\n", s.Name(), s.SpanContext().TraceID(), s.SpanContext().SpanID(), s.Parent().SpanID(), s.Status(), s.Attributes())
	}
	return b.String()
}

// want checks attributes of s by key; a value "*" only asks for presence.
func want(t testing.TB, s sdktrace.ReadOnlySpan, kv map[string]any) {
	t.Helper()
	got := attrs(s)
	for k, v := range kv {
		a, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s: no attribute %s (has %v)", s.Name(), k, s.Attributes())
		case v == "*":
		case fmt.Sprint(a.AsInterface()) != fmt.Sprint(v):
			t.Errorf("%s: %s = %v, want %v", s.Name(), k, a.AsInterface(), v)
		}
	}
}

func TestTraceOfAForwardedRequest(t *testing.T) {
	t.Parallel()
	rec, mod := traced()
	e := newEnv(t, mod)
	srv := upstreamServer(t, e.server, e.clients, false, nil)
	e.apply(t, "orders", "http1", addr(srv), mtls(e.ca, e.gateway, nil))

	a := do(t, "GET", e.url("/orders/42"))
	got := a.echo(t)
	req := rec.request(t, a.header.Get("X-Request-Id"))
	if req.SpanKind() != trace.SpanKindServer || req.Status().Code == codes.Error {
		t.Errorf("request span: kind %v status %v", req.SpanKind(), req.Status())
	}
	want(t, req, map[string]any{
		"http.request.method": "GET", "url.path": "/orders/42", "http.route": "/orders/",
		"keyway.route": "orders", "keyway.upstream": "orders", "http.response.status_code": 200,
	})
	if ev := req.Events(); len(ev) != 1 || ev[0].Name != telemetry.EventRouteMatch {
		t.Errorf("request span events %v, want one %s", ev, telemetry.EventRouteMatch)
	}

	up := rec.child(t, req, telemetry.SpanUpstreamRequest)
	if up.SpanKind() != trace.SpanKindClient {
		t.Errorf("upstream span kind %v", up.SpanKind())
	}
	host, port := strings.Split(addr(srv), ":")[0], strings.Split(addr(srv), ":")[1]
	want(t, up, map[string]any{"server.address": host, "server.port": port, "http.response.status_code": 200, "keyway.upstream": "orders"})
	// The upstream's parent is our upstream span.
	if wantTP := fmt.Sprintf("00-%s-%s-01", up.SpanContext().TraceID(), up.SpanContext().SpanID()); got.Traceparent != wantTP {
		t.Errorf("upstream received traceparent %q, want %q", got.Traceparent, wantTP)
	}

	want(t, up, map[string]any{"keyway.conn.reused": false, "keyway.conn.wait": "*"})
	hs := rec.child(t, up, telemetry.SpanOutboundHandshake)
	want(t, hs, map[string]any{
		"tls.protocol.version": "1.3", "tls.cipher": "*", "tls.resumed": false, "tls.established": true,
		"tls.server.subject":                      e.server.Cert.Subject.String(),
		"tls.server.hash.sha256":                  strings.ToUpper(e.server.Fingerprint()),
		"tls.server.not_after":                    e.server.Cert.NotAfter.UTC().Format(time.RFC3339),
		"keyway.tls.server.sans":                  "[DNS:orders.internal IP:127.0.0.1 IP:::1]",
		"tls.client.hash.sha256":                  strings.ToUpper(e.gateway.Fingerprint()),
		"keyway.tls.client_certificate.requested": true, "keyway.tls.client_certificate.sent": true,
		"keyway.tls.server_name": "orders.internal", "server.address": host, "keyway.upstream": "orders",
	})
	if hs.Status().Code == codes.Error {
		t.Errorf("handshake span status %v", hs.Status())
	}

	// The second request reuses the pooled connection: no handshake.
	a = do(t, "GET", e.url("/orders/43"))
	req2 := rec.request(t, a.header.Get("X-Request-Id"))
	up2 := rec.child(t, req2, telemetry.SpanUpstreamRequest)
	want(t, up2, map[string]any{"keyway.conn.reused": true, "keyway.conn.was_idle": true, "keyway.conn.idle_time": "*"})
	for _, s := range rec.rec.Ended() {
		if s.Name() == telemetry.SpanOutboundHandshake && s.Parent().SpanID() == up2.SpanContext().SpanID() {
			t.Errorf("a handshake under the second request: %v", s.Attributes())
		}
	}

	// A client's traceparent is the request span's parent.
	parent := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	r, _ := http.NewRequest("GET", e.url("/orders/44"), nil)
	r.Header.Set("Traceparent", parent)
	resp, err := client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req3 := rec.request(t, resp.Header.Get("X-Request-Id"))
	if req3.SpanContext().TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || req3.Parent().SpanID().String() != "b7ad6b7169203331" {
		t.Errorf("request span trace %s parent %s, want the client's", req3.SpanContext().TraceID(), req3.Parent().SpanID())
	}

	// No route: the reason on the request span, without Error (a 404 is
	// the client's).
	a = do(t, "GET", e.url("/nowhere"))
	nr := rec.request(t, a.header.Get("X-Request-Id"))
	want(t, nr, map[string]any{"keyway.failure.reason": "no_route", "http.response.status_code": 404})
	if nr.Status().Code == codes.Error {
		t.Errorf("no_route span status %v", nr.Status())
	}
}

// Every outbound failure reason we can produce on loopback is on the
// request's spans, with status Error.
func TestTraceOfUpstreamFailures(t *testing.T) {
	t.Parallel()
	rec, mod := traced()
	e := newEnv(t, mod)
	other := testca.New(t, "some other CA")
	tls12 := func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }
	tls13 := func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }
	tests := []struct {
		name     string
		endpoint func(t *testing.T) string
		cfg      map[string]any
		reason   string
		// afterHandshake: the handshake itself succeeded (TLS 1.3
		// refuses the client certificate afterwards); the reason is on
		// the request spans only.
		afterHandshake bool
		// handshakeTimeout, when set, runs the case on a node of its own.
		handshakeTimeout time.Duration
	}{
		{name: "unknown-authority", reason: "unknown_authority",
			endpoint: func(t *testing.T) string { return addr(upstreamServer(t, e.server, e.clients, false, nil)) },
			cfg:      mtls(other, e.gateway, nil)},
		{name: "expired", reason: "expired",
			endpoint: func(t *testing.T) string {
				return addr(upstreamServer(t, e.ca.Expired("orders.internal"), e.clients, false, nil))
			},
			cfg: mtls(e.ca, e.gateway, nil)},
		{name: "san-mismatch", reason: "san_mismatch",
			endpoint: func(t *testing.T) string { return addr(upstreamServer(t, e.server, e.clients, false, nil)) },
			cfg:      mtls(e.ca, e.gateway, map[string]any{"sni": "billing.internal"})},
		{name: "legacy-cn", reason: "legacy_common_name",
			endpoint: func(t *testing.T) string {
				return addr(upstreamServer(t, e.ca.CNOnly("orders.internal"), e.clients, false, nil))
			},
			cfg: mtls(e.ca, e.gateway, nil)},
		{name: "protocol-version", reason: "protocol_version",
			endpoint: func(t *testing.T) string { return addr(upstreamServer(t, e.server, e.clients, false, tls13)) },
			cfg:      mtls(e.ca, e.gateway, map[string]any{"maxversion": "1.2"})},
		{name: "no-client-cert-tls12", reason: "no_client_certificate",
			endpoint: func(t *testing.T) string { return addr(upstreamServer(t, e.server, e.clients, false, tls12)) },
			cfg:      mtls(e.ca, nil, map[string]any{"maxversion": "1.2"})},
		{name: "no-client-cert-tls13", reason: "no_client_certificate", afterHandshake: true,
			endpoint: func(t *testing.T) string { return addr(upstreamServer(t, e.server, e.clients, false, tls13)) },
			cfg:      mtls(e.ca, nil, nil)},
		{name: "refused", reason: "connection_refused",
			endpoint: func(t *testing.T) string { return closedPort(t) }, cfg: mtls(e.ca, e.gateway, nil)},
		{name: "handshake-timeout", reason: "handshake_timeout", handshakeTimeout: 500 * time.Millisecond,
			endpoint: func(t *testing.T) string { return silent(t) }, cfg: mtls(e.ca, e.gateway, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rec := e, rec
			if tt.handshakeTimeout != 0 {
				var mod func(*node.Config)
				rec, mod = traced()
				e = newEnv(t, func(c *node.Config) { mod(c); c.HandshakeTimeout = tt.handshakeTimeout })
			}
			e.apply(t, tt.name, "http1", tt.endpoint(t), tt.cfg)
			a := do(t, "GET", e.url("/"+tt.name+"/x"))
			var body forward.ErrorBody
			if err := json.Unmarshal(a.body, &body); err != nil || string(body.Reason) != tt.reason {
				t.Fatalf("status %d body %s, want reason %s", a.status, a.body, tt.reason)
			}
			failed := func(s sdktrace.ReadOnlySpan) {
				t.Helper()
				want(t, s, map[string]any{"keyway.failure.reason": tt.reason, "error.type": tt.reason})
				if s.Status().Code != codes.Error || !strings.HasPrefix(s.Status().Description, tt.reason+": ") {
					t.Errorf("%s status %+v, want Error %q", s.Name(), s.Status(), tt.reason)
				}
			}
			req := rec.request(t, body.RequestID)
			failed(req)
			want(t, req, map[string]any{"http.response.status_code": a.status})
			up := rec.child(t, req, telemetry.SpanUpstreamRequest)
			failed(up)
			hs := rec.child(t, up, telemetry.SpanOutboundHandshake)
			if tt.afterHandshake {
				want(t, hs, map[string]any{"tls.established": true, "keyway.tls.client_certificate.requested": true, "keyway.tls.client_certificate.sent": false})
				return
			}
			failed(hs)
			want(t, hs, map[string]any{"tls.established": false, "keyway.upstream": tt.name})
		})
	}
}

// A Listener's handshake is a span of its own, linked from each request on
// the connection; a refused handshake carries its reason.
func TestTraceOfInboundHandshake(t *testing.T) {
	t.Parallel()
	rec, mod := traced()
	url, kv := startNATS(t)
	n, _ := startNode(t, url, mod)
	servers := testca.New(t, "server CA")
	clients := testca.New(t, "client CA")
	alice := clients.Client("alice")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(backend.Close)
	put(t, kv, service("orders", "http1", backend.Listener.Addr().String()))
	put(t, kv, route("orders", "/orders/", "orders"))
	kp := servers.Server("test.com")
	waitRevision(t, n, put(t, kv, listenerResource("public", "127.0.0.1:0", listenerHost(kp, "require-and-verify", []*testca.CA{clients}, "test.com"))))
	addr := n.ListenerAddr("public")

	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: servers.Pool(), ServerName: "test.com", Certificates: []tls.Certificate{alice.TLS}}}}
	defer c.CloseIdleConnections()
	var ids []string
	for _, p := range []string{"/orders/1", "/orders/2"} {
		resp, err := c.Get("https://" + addr + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body) // read to the end: the connection is reused
		resp.Body.Close()
		ids = append(ids, resp.Header.Get("X-Request-Id"))
	}
	hs := rec.wait(t, "inbound handshake span", func(ss []sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
		for _, s := range ss {
			if s.Name() == telemetry.SpanInboundHandshake && s.Status().Code != codes.Error {
				return s
			}
		}
		return nil
	})
	want(t, hs, map[string]any{
		"keyway.listener": "public", "tls.protocol.version": "1.3", "tls.cipher": "*", "tls.established": true,
		"tls.client.subject": alice.Cert.Subject.String(), "tls.client.hash.sha256": strings.ToUpper(alice.Fingerprint()),
		"keyway.tls.client.sans": "*", "tls.client.not_after": alice.Cert.NotAfter.UTC().Format(time.RFC3339),
		"keyway.tls.server_name": "test.com", "client.address": "127.0.0.1",
	})
	if hs.Parent().IsValid() {
		t.Errorf("inbound handshake span has a parent: %v", hs.Parent())
	}
	// Both requests rode the one connection: each links to its handshake.
	for _, id := range ids {
		req := rec.request(t, id)
		links := req.Links()
		if len(links) != 1 || links[0].SpanContext.SpanID() != hs.SpanContext().SpanID() {
			t.Errorf("request %s links %v, want the handshake %s", id, links, hs.SpanContext().SpanID())
		}
	}

	// No client certificate on a require-and-verify host.
	bare := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: servers.Pool(), ServerName: "test.com"}}}
	if resp, err := bare.Get("https://" + addr + "/orders/3"); err == nil {
		resp.Body.Close()
		t.Fatal("a client without a certificate was served")
	}
	bad := rec.wait(t, "failed inbound handshake span", func(ss []sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
		for _, s := range ss {
			if s.Name() == telemetry.SpanInboundHandshake && s.Status().Code == codes.Error {
				return s
			}
		}
		return nil
	})
	want(t, bad, map[string]any{"keyway.failure.reason": "no_client_certificate", "tls.established": false, "keyway.listener": "public"})
}

// A change whose message carries a trace context is applied under a
// keyway.node.apply span, child of the writer's span.
func TestTraceOfNodeApply(t *testing.T) {
	t.Parallel()
	rec, mod := traced()
	url, kv := startNATS(t)
	n, _ := startNode(t, url, mod)
	<-n.Ready()

	// The writer: a span of its own, its context in the message headers,
	// as the policy service's store writes it.
	writer := telemetry.New(sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample())))
	ctx, span := writer.Tracer.Start(context.Background(), telemetry.SpanStorePut)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	res := service("orders", "http1", "127.0.0.1:1")
	value, err := configkv.Encode(res, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("$KV." + kv.Bucket() + "." + configkv.Key(configkv.RefOf(res)))
	msg.Data = value
	writer.InjectNATS(ctx, msg)
	span.End()
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.PublishMsg(msg)
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, n, ack.Sequence)

	apply := rec.wait(t, telemetry.SpanNodeApply, func(ss []sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
		for _, s := range ss {
			if s.Name() == telemetry.SpanNodeApply {
				return s
			}
		}
		return nil
	})
	if apply.SpanContext().TraceID() != span.SpanContext().TraceID() || apply.Parent().SpanID() != span.SpanContext().SpanID() || !apply.Parent().IsRemote() {
		t.Errorf("node.apply trace %s parent %s, want the writer's %s %s", apply.SpanContext().TraceID(), apply.Parent().SpanID(), span.SpanContext().TraceID(), span.SpanContext().SpanID())
	}
	want(t, apply, map[string]any{
		"keyway.config.key": "service.orders", "keyway.config.revision": ack.Sequence,
		"keyway.config.keys": "[service.orders]", "keyway.upstreams.rebuilt": "[orders]",
	})
	if apply.Status().Code == codes.Error {
		t.Errorf("node.apply status %v", apply.Status())
	}

	// A refused value: Error, with the key.
	bad := nats.NewMsg("$KV." + kv.Bucket() + ".service.broken")
	bad.Data = []byte("not a resource")
	ack, err = js.PublishMsg(bad)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = n.WaitRevision(ctx2, ack.Sequence) // returns the refusal
	refused := rec.wait(t, "refused node.apply", func(ss []sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
		for _, s := range ss {
			if s.Name() == telemetry.SpanNodeApply && attrs(s)["keyway.config.key"].AsString() == "service.broken" {
				return s
			}
		}
		return nil
	})
	want(t, refused, map[string]any{"keyway.config.skipped": "[service.broken]"})
	if refused.Status().Code != codes.Error {
		t.Errorf("refused node.apply status %v", refused.Status())
	}
}

// A request whose client's traceparent says "not sampled" is not recorded
// under the parent-based sampler (the SDK's default), and the upstream
// gets the client's trace, still flagged not sampled: the node records
// nothing and only passes the context on.
func TestTraceParentNotSampled(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	e := newEnv(t, func(c *node.Config) { c.Tracing = telemetry.New(tp) })
	srv := upstreamServer(t, e.server, e.clients, false, nil)
	e.apply(t, "orders", "http1", addr(srv), mtls(e.ca, e.gateway, nil))

	r, _ := http.NewRequest("GET", e.url("/orders/1"), nil)
	r.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
	resp, err := client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := answer{resp.StatusCode, resp.Header, body}.echo(t)
	if !strings.HasPrefix(got.Traceparent, "00-0af7651916cd43dd8448eb211c80319c-") || !strings.HasSuffix(got.Traceparent, "-00") {
		t.Errorf("upstream received traceparent %q, want the client's trace, not sampled", got.Traceparent)
	}
	// A sampled request after it: its spans are recorded, the other's
	// never were.
	a := do(t, "GET", e.url("/orders/2"))
	(&recorded{rec: rec}).request(t, a.header.Get("X-Request-Id"))
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID().String() == "0af7651916cd43dd8448eb211c80319c" {
			t.Errorf("span %s of the unsampled trace recorded", s.Name())
		}
	}
}
