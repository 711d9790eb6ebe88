package node_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/material/materialtest"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/proxy/internal/node"
	"keyway.dev/proxy/internal/secrets"
)

// secretsEnv is NATS with both buckets, the fake secrets service of
// materialtest, which can be made unreachable at will, and nodes that resolve
// references through it; the test publishes versions as the real service
// does. The other tests here run the real keyway-secrets (realsecrets_test.go).
type secretsEnv struct {
	url      string
	kv       jetstream.KeyValue
	versions jetstream.KeyValue
	fake     *materialtest.Fake
}

func newSecretsEnv(t *testing.T) *secretsEnv {
	t.Helper()
	url, kv := startNATS(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	versions, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: secrets.Bucket, History: 5})
	if err != nil {
		t.Fatal(err)
	}
	return &secretsEnv{url: url, kv: kv, versions: versions, fake: materialtest.Start(t)}
}

// node starts a node that resolves references through the fake.
func (e *secretsEnv) node(t *testing.T, mod func(*node.Config)) (*node.Node, *logBuffer) {
	t.Helper()
	return startNode(t, e.url, func(c *node.Config) {
		c.Secrets = secrets.New(e.fake.Client(t), secrets.Options{RetryInterval: 100 * time.Millisecond, Logger: c.Logger})
		if mod != nil {
			mod(c)
		}
	})
}

// announce publishes the version the fake holds, as the secrets service
// does after a write.
func (e *secretsEnv) announce(t *testing.T, v *secretsv1.SecretVersion) {
	t.Helper()
	b, err := proto.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	key := secrets.TruststoreKey(v.GetTruststore())
	if v.GetAlias() != "" {
		key = secrets.AliasKey(secretref.Ref{Keystore: v.GetKeystore(), Alias: v.GetAlias()})
	}
	if _, err := e.versions.Put(context.Background(), key, b); err != nil {
		t.Fatal(err)
	}
}

// rotate stores kp as the next version of edge/gw and announces it.
func (e *secretsEnv) rotate(t *testing.T, kp *testca.KeyPair) {
	t.Helper()
	e.fake.PutAlias("edge", "gw", kp)
	e.announce(t, e.fake.SecretVersion("edge", "gw"))
}

func refMTLS() map[string]any {
	return map[string]any{
		"skipValidation": false,
		"trustedCA":      map[string]any{"truststore": "upstream-cas"},
		"certificate":    map[string]any{"keystore": "edge", "alias": "gw"},
		"sni":            "orders.internal",
	}
}

// fingerprintSeen asks the upstream, through the node, which client
// certificate it saw; "" when the request failed.
func fingerprintSeen(url string) string {
	resp, err := client.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	_, fp, _ := strings.Cut(b.String(), `"fingerprint":"`)
	fp, _, _ = strings.Cut(fp, `"`)
	return fp
}

// A binding that references an alias and a truststore is served with the
// material of the secrets service (the real keyway-secrets process); each
// new version written through its API is published by the service, fetched
// by the node and swapped in for the one Upstream that uses it, while
// requests keep flowing without a failure; the Upstream that does not use it
// is left alone.
func TestReferencedAliasRotates(t *testing.T) {
	t.Parallel()
	url, kv := startNATS(t)
	real := startRealSecrets(t, url)
	upstreams := testca.New(t, "upstream CA")
	clients := testca.New(t, "gateway client CA")
	real.PutTruststore(t, "upstream-cas", upstreams)
	first := clients.Client("gateway")
	real.PutAlias(t, "edge", "gw", first, secretsv1.Usage_USAGE_CLIENT)
	n, logs := startNode(t, url, func(c *node.Config) { c.Secrets = real.source(t) })
	srv := upstreamServer(t, upstreams.Server("orders.internal"), clients, true, nil)
	other := upstreamServer(t, upstreams.Server("orders.internal"), clients, false, nil)

	put(t, kv, service("orders", "http1", addr(srv)))
	put(t, kv, binding(t, "orders-mtls", "orders", refMTLS()))
	put(t, kv, route("orders", "/orders/", "orders"))
	put(t, kv, service("billing", "http1", addr(other)))
	put(t, kv, binding(t, "billing-mtls", "billing", mtls(upstreams, clients.Client("billing-gateway"), nil)))
	waitRevision(t, n, put(t, kv, route("billing", "/billing/", "billing")))

	url0 := "http://" + n.Addr() + "/orders/1"
	if got := do(t, "GET", url0).echo(t); got.Fingerprint != first.Fingerprint() {
		t.Fatalf("upstream saw %s, want the alias's certificate %s", got.Fingerprint, first.Fingerprint())
	}
	billingBefore := upstreamFingerprint(t, n, "billing")
	billingBuilt, ordersBuilt := countBuilt(logs, "billing"), countBuilt(logs, "orders")

	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				if fingerprintSeen(url0) == "" {
					failed.Add(1)
				}
			}
		})
	}
	for i := range 3 {
		next := clients.Client("gateway")
		real.PutAlias(t, "edge", "gw", next, secretsv1.Usage_USAGE_CLIENT)
		testwait.Until(t, 60*time.Second, fmt.Sprintf("the upstream to see rotation %d", i+1), func() bool { return fingerprintSeen(url0) == next.Fingerprint() })
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || sent.Load() == 0 {
		t.Errorf("%d of %d requests failed during the rotations, want none", failed.Load(), sent.Load())
	}
	if after := upstreamFingerprint(t, n, "billing"); after != billingBefore {
		t.Errorf("billing's Upstream was rebuilt (%s → %s) though it does not use the alias", billingBefore, after)
	}
	if built := countBuilt(logs, "billing") - billingBuilt; built != 0 {
		t.Errorf("billing's Upstream was built %d times during the rotations, want none", built)
	}
	if built := countBuilt(logs, "orders") - ordersBuilt; built != 3 {
		t.Errorf("orders' Upstream was built %d times during the rotations, want 3 (once per rotation)", built)
	}
	st := status(t, n).Secrets
	if st == nil || st.Stale || len(st.References) != 2 {
		t.Fatalf("status secrets: %+v, want two references, not stale", st)
	}
	if r := st.References[0]; r.Ref != "alias/edge/gw" || r.Fingerprint != fingerprintSeen(url0) || r.Version == "" || r.Version != r.Announced {
		t.Errorf("status reference %+v, want alias/edge/gw at the announced version with the served fingerprint", r)
	}
	// The expiry gauge names the alias and follows it to the new leaf.
	fams := scrape(t, &env{node: n})
	want := map[string]string{"upstream": "orders", "keystore": "edge", "alias": "gw", "fingerprint": fingerprintSeen(url0)}
	if ms := series(fams, "keyway_certificate_expiry_seconds", want); len(ms) != 1 {
		t.Errorf("keyway_certificate_expiry_seconds%v: %d series, want 1", want, len(ms))
	}
	if ms := series(fams, "keyway_certificate_expiry_seconds", map[string]string{"role": "upstream-client", "upstream": "orders"}); len(ms) != 1 {
		t.Errorf("keyway_certificate_expiry_seconds{upstream=orders}: %d series, want 1 (the old leaf dropped out)", len(ms))
	}
}

func upstreamFingerprint(t *testing.T, n *node.Node, name string) string {
	t.Helper()
	for _, u := range status(t, n).Upstreams {
		if u.Name == name {
			return u.Fingerprint
		}
	}
	t.Fatalf("no upstream %s in status", name)
	return ""
}

func countBuilt(logs *logBuffer, upstream string) int {
	n := 0
	for _, rec := range logs.lines("upstream built") {
		if rec["upstream"] == upstream {
			n++
		}
	}
	return n
}

// With the secrets service down, the node keeps serving the material it
// holds, says it is stale, and catches up once it is back.
func TestSecretsServiceDownKeepsServing(t *testing.T) {
	t.Parallel()
	e := newSecretsEnv(t)
	upstreams := testca.New(t, "upstream CA")
	clients := testca.New(t, "gateway client CA")
	e.fake.PutTruststore("upstream-cas", upstreams.Cert)
	first := clients.Client("gateway")
	e.rotate(t, first)
	n, logs := e.node(t, nil)
	srv := upstreamServer(t, upstreams.Server("orders.internal"), clients, false, nil)
	put(t, e.kv, service("orders", "http1", addr(srv)))
	put(t, e.kv, binding(t, "orders-mtls", "orders", refMTLS()))
	waitRevision(t, n, put(t, e.kv, route("orders", "/orders/", "orders")))
	url := "http://" + n.Addr() + "/orders/1"
	if fp := fingerprintSeen(url); fp != first.Fingerprint() {
		t.Fatalf("upstream saw %q, want %s", fp, first.Fingerprint())
	}

	e.fake.SetDown(true)
	second := clients.Client("gateway")
	e.rotate(t, second)
	testwait.Until(t, 60*time.Second, "status to say the material is stale", func() bool {
		st := status(t, n).Secrets
		return st != nil && st.Stale && strings.Contains(st.Reason, `keystore "edge" alias "gw"`)
	})
	if fp := fingerprintSeen(url); fp != first.Fingerprint() {
		t.Errorf("while the secrets service is down the upstream saw %q, want the held certificate %s", fp, first.Fingerprint())
	}

	e.fake.SetDown(false)
	testwait.Until(t, 60*time.Second, "the new version once the secrets service is back", func() bool { return fingerprintSeen(url) == second.Fingerprint() })
	if st := status(t, n).Secrets; st.Stale {
		t.Errorf("status still stale after catching up: %+v", st)
	}
	for _, line := range strings.Split(func() string { logs.mu.Lock(); defer logs.mu.Unlock(); return logs.buf.String() }(), "\n") {
		if strings.Contains(line, "PRIVATE KEY") {
			t.Fatalf("a log line holds key material: %.80s…", line)
		}
	}
}

// A node without a secrets service refuses a binding with references and
// says why; one whose first fetch fails (the alias does not exist yet in the
// real secrets service) serves it once the alias is stored.
func TestReferencesWithoutSecrets(t *testing.T) {
	t.Parallel()
	url, kv := startNATS(t)
	n, _ := startNode(t, url, nil)
	put(t, kv, service("orders", "http1", closedPort(t)))
	rev := put(t, kv, binding(t, "orders-mtls", "orders", refMTLS()))
	sk := waitSkipped(t, n, rev)
	if len(sk) != 1 || sk[0].Key != "policybinding.orders-mtls" || !strings.Contains(sk[0].Err.Error(), "this node has no secrets service configured") {
		t.Errorf("refusals %v, want the binding refused for want of a secrets service", sk)
	}

	real := startRealSecrets(t, url)
	upstreams := testca.New(t, "upstream CA")
	clients := testca.New(t, "gateway client CA")
	late, _ := startNode(t, url, func(c *node.Config) { c.Secrets = real.source(t) })
	srv := upstreamServer(t, upstreams.Server("orders.internal"), clients, false, nil)
	put(t, kv, service("orders", "http1", addr(srv)))
	sk = waitSkipped(t, late, put(t, kv, route("orders", "/orders/", "orders")))
	if len(sk) != 1 || !strings.Contains(sk[0].Err.Error(), `resolving keystore "edge" alias "gw"`) {
		t.Fatalf("refusals %v, want the binding refused until its material exists", sk)
	}
	kp := clients.Client("gateway")
	real.PutTruststore(t, "upstream-cas", upstreams)
	real.PutAlias(t, "edge", "gw", kp, secretsv1.Usage_USAGE_CLIENT)
	testwait.Until(t, 60*time.Second, "the binding to be served once its material exists", func() bool {
		return fingerprintSeen("http://"+late.Addr()+"/orders/1") == kp.Fingerprint()
	})
}

// A Listener host whose certificate is an alias of the real secrets service
// serves it, verifies clients with a truststore, and presents the new
// certificate after a rotation, on the same server.
func TestListenerReferencedCertificateRotates(t *testing.T) {
	t.Parallel()
	url, kv := startNATS(t)
	real := startRealSecrets(t, url)
	n, _ := startNode(t, url, func(c *node.Config) { c.Secrets = real.source(t) })
	servers := testca.New(t, "server CA")
	clients := testca.New(t, "client CA")
	alice := clients.Client("alice")
	first := servers.Server("test.com")
	real.PutAlias(t, "edge", "api", first, secretsv1.Usage_USAGE_SERVER)
	real.PutTruststore(t, "clients", clients)

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	t.Cleanup(backend.Close)
	put(t, kv, service("orders", "http1", backend.Listener.Addr().String()))
	put(t, kv, route("orders", "/orders/", "orders"))
	waitRevision(t, n, put(t, kv, listenerResource("public", "127.0.0.1:0", &policyv1.ListenerHost{
		Hostnames: []string{"test.com"}, Certificate: &policyv1.KeyPair{Keystore: "edge", Alias: "api"},
		ClientAuth: "require-and-verify", ClientTruststore: "clients",
	})))
	addr := n.ListenerAddr("public")
	if addr == "" {
		t.Fatalf("listener not served: %+v", status(t, n).Skipped)
	}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: servers.Pool(), ServerName: "test.com", Certificates: []tls.Certificate{alice.TLS}}}}
	served := func() string {
		resp, err := c.Get("https://" + addr + "/orders/1")
		if err != nil {
			return ""
		}
		resp.Body.Close()
		return certs.Fingerprint(resp.TLS.PeerCertificates[0])
	}
	if got := served(); got != first.Fingerprint() {
		t.Fatalf("listener presents %q, want the alias's certificate", got)
	}
	since := status(t, n).Listeners[0].Since

	second := servers.Server("test.com")
	real.PutAlias(t, "edge", "api", second, secretsv1.Usage_USAGE_SERVER)
	testwait.Until(t, 60*time.Second, "the listener to present the rotated certificate", func() bool { return served() == second.Fingerprint() })
	if l := status(t, n).Listeners[0]; !l.Since.Equal(since) || l.Bound != addr {
		t.Errorf("the listener was restarted for a new certificate: %+v", l)
	}
}
