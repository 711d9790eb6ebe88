package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/access"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/natstest"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/node"
)

// startNATS runs an embedded JetStream server and returns its URL and the
// bucket.
func startNATS(tb testing.TB) (string, jetstream.KeyValue) {
	tb.Helper()
	return natstest.Bucket(tb)
}

// logBuffer collects a node's JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the log records whose msg is msg.
func (l *logBuffer) lines(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.buf.Bytes(), []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// startNode starts a node that stops when the test ends.
func startNode(tb testing.TB, natsURL string, mod func(*node.Config)) (*node.Node, *logBuffer) {
	tb.Helper()
	n, logs, _ := launch(tb, natsURL, mod)
	return n, logs
}

// launch starts a node and returns the cancel that stops it too (the node
// is also stopped, and its error checked, when the test ends).
func launch(tb testing.TB, natsURL string, mod func(*node.Config)) (*node.Node, *logBuffer, context.CancelFunc) {
	tb.Helper()
	logs := &logBuffer{}
	cfg := node.Config{
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", NATSURL: natsURL, NodeID: "test",
		// The admin port's access control is tested through the binary
		// (tests/e2e).
		Admin: access.Options{InsecureNoAuth: true},
		// Generous: the tests that count failed requests must not see a
		// handshake time out on a loaded machine under -race.
		HandshakeTimeout: 30 * time.Second,
		Logger:           slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		// Listeners bind 127.0.0.1:0 here: a fixed port may be taken on a
		// shared machine. Everything else is decoded as in production.
		Decode: func(res *policyv1.Resource) (model.Object, error) { return model.Decode(res, model.AllowPortZero()) },
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.Start(ctx, cfg)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cancel()
		if err := n.Wait(); err != nil {
			tb.Errorf("node: %v", err)
		}
	})
	return n, logs, cancel
}

func put(tb testing.TB, kv jetstream.KeyValue, res *policyv1.Resource) uint64 {
	tb.Helper()
	b, err := configkv.Encode(res, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	rev, err := kv.Put(context.Background(), configkv.Key(configkv.RefOf(res)), b)
	if err != nil {
		tb.Fatal(err)
	}
	return rev
}

// lastRevision is the bucket's latest revision (a delete returns none).
func lastRevision(tb testing.TB, kv jetstream.KeyValue) uint64 {
	tb.Helper()
	st, err := kv.Status(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
}

func waitRevision(tb testing.TB, n *node.Node, rev uint64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitRevision(ctx, rev); err != nil {
		tb.Fatal(err)
	}
}

func meta(name string) *policyv1.ObjectMeta { return &policyv1.ObjectMeta{Name: name} }

func service(name, protocol string, endpoints ...string) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "Service", Metadata: meta(name),
		Spec: &policyv1.ServiceSpec{Endpoints: endpoints, Protocol: protocol},
	}}}
}

func route(name, path, svc string, methods ...string) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "Route", Metadata: meta(name),
		Spec: &policyv1.RouteSpec{Path: path, Methods: methods, Service: svc},
	}}}
}

func binding(tb testing.TB, name, svc string, cfg map[string]any) *policyv1.Resource {
	tb.Helper()
	st, err := structpb.NewStruct(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return &policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "PolicyBinding", Metadata: meta(name),
		Spec: &policyv1.PolicyBindingSpec{
			TargetRef: &policyv1.TargetRef{Kind: "Service", Name: svc},
			PolicyRef: &policyv1.PolicyRef{Name: "tls-outbound"},
			Config:    st,
		},
	}}}
}

// mtls is a tls-outbound config trusting ca and presenting kp (if not nil).
func mtls(ca *testca.CA, kp *testca.KeyPair, more map[string]any) map[string]any {
	cfg := map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal"}
	if kp != nil {
		cfg["certificate"] = map[string]any{"key": string(kp.KeyPEM), "crt": string(kp.CertPEM)}
	}
	for k, v := range more {
		cfg[k] = v
	}
	return cfg
}

// echo is what the test upstreams answer.
type echo struct {
	CN          string `json:"cn"`
	Fingerprint string `json:"fingerprint"`
	Proto       string `json:"proto"`
	Path        string `json:"path"`
	RequestID   string `json:"requestId"`
	Forwarded   string `json:"forwardedFor"`
	Traceparent string `json:"traceparent"`
}

// upstreamServer is a real TLS upstream that requires and verifies a client
// certificate from clients and echoes it.
func upstreamServer(tb testing.TB, kp *testca.KeyPair, clients *testca.CA, h2 bool, mod func(*tls.Config)) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := echo{Proto: r.Proto, Path: r.URL.Path, RequestID: r.Header.Get("X-Request-Id"), Forwarded: r.Header.Get("X-Forwarded-For"), Traceparent: r.Header.Get("Traceparent")}
		if len(r.TLS.PeerCertificates) > 0 {
			c := r.TLS.PeerCertificates[0]
			sum := sha256.Sum256(c.Raw)
			e.CN, e.Fingerprint = c.Subject.CommonName, hex.EncodeToString(sum[:])
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(e)
	}))
	srv.EnableHTTP2 = h2
	srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{kp.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients.Pool()}
	if mod != nil {
		mod(srv.TLS)
	}
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	return srv
}

func addr(srv *httptest.Server) string { return srv.Listener.Addr().String() }

// closedPort is a loopback address nothing listens on.
func closedPort(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// silent accepts TCP connections and never answers.
func silent(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(io.Discard, c) }()
		}
	}()
	return ln.Addr().String()
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(tb testing.TB, method, url string) answer {
	tb.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, body}
}

func (a answer) echo(tb testing.TB) echo {
	tb.Helper()
	var e echo
	if a.status != 200 {
		tb.Fatalf("status %d: %s", a.status, a.body)
	}
	if err := json.Unmarshal(a.body, &e); err != nil {
		tb.Fatalf("body %s: %v", a.body, err)
	}
	return e
}
