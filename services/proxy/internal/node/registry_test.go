package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	nodev1 "keyway.dev/gen/keyway/node/v1"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/nodekv"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/node"
)

// nodeEntries watches the node bucket and returns its updates.
func nodeEntries(t *testing.T, natsURL string) <-chan jetstream.KeyValueEntry {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := nodekv.Open(ctx, js, "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return w.Updates()
}

// nextStatus waits for the node bucket to hold a status of id that
// satisfies ok, and returns it with the certificates the bucket held for
// id when it was written.
func nextStatus(t *testing.T, updates <-chan jetstream.KeyValueEntry, id string, ok func(*nodev1.NodeStatus) bool) *nodev1.NodeStatus {
	t.Helper()
	deadline := time.After(30 * time.Second)
	var certs *nodev1.NodeStatus
	for {
		select {
		case e := <-updates:
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if e.Key() != nodekv.Key(id) && e.Key() != nodekv.CertsKey(id) {
				continue
			}
			st, err := nodekv.Decode(e.Value())
			if err != nil {
				t.Fatal(err)
			}
			if e.Key() == nodekv.CertsKey(id) {
				certs = st
				continue
			}
			if len(st.GetCertificates()) != 0 {
				t.Fatalf("the status key lists %d certificates; they belong under %s", len(st.GetCertificates()), nodekv.CertsKey(id))
			}
			if st = nodekv.Merge(st, certs); ok(st) {
				return st
			}
		case <-deadline:
			t.Fatalf("node %s: no matching status in the node bucket within 30s", id)
		}
	}
}

// A node writes its status at start and as soon as it serves a change (the
// heartbeat is an hour here, so only the change can have written it), with
// the certificates it presents; a clean stop deletes its key.
func TestNodeRegistersAndReportsRevision(t *testing.T) {
	t.Parallel()
	natsURL, kv := startNATS(t)
	updates := nodeEntries(t, natsURL)
	n, _, stop := launch(t, natsURL, func(c *node.Config) { c.NodeID = "edge-1"; c.Heartbeat = time.Hour })
	first := nextStatus(t, updates, "edge-1", func(*nodev1.NodeStatus) bool { return true })
	if first.GetProxyAddress() != n.Addr() || first.GetAdminAddress() != n.AdminAddr() || first.GetStartTime() == nil || first.GetHeartbeatTime() == nil {
		t.Errorf("first status: %v", first)
	}

	ca := testca.New(t, "upstream CA")
	client := ca.Client("keyway-gateway")
	put(t, kv, service("orders", "http1", "127.0.0.1:1"))
	rev := put(t, kv, binding(t, "orders-mtls", "orders", mtls(ca, client, nil)))
	st := nextStatus(t, updates, "edge-1", func(s *nodev1.NodeStatus) bool { return s.GetRevision() >= rev })
	var roles []string
	for _, c := range st.GetCertificates() {
		if c.GetScope() != "upstream" || c.GetName() != "orders" {
			t.Errorf("certificate for %s %s, want upstream orders", c.GetScope(), c.GetName())
		}
		roles = append(roles, c.GetRole())
		if c.GetRole() == "client" && (c.GetSha256Fingerprint() != certs.Fingerprint(client.Cert) || !c.GetNotAfter().AsTime().Equal(client.Cert.NotAfter.Truncate(time.Second))) {
			t.Errorf("client certificate %s until %v, want %s until %v", c.GetSha256Fingerprint(), c.GetNotAfter().AsTime(), certs.Fingerprint(client.Cert), client.Cert.NotAfter)
		}
	}
	if len(roles) != 2 {
		t.Errorf("certificates served: %v, want client and trust", roles)
	}

	// A change that leaves the certificates as they were writes the
	// status alone: a node with thousands of upstreams does not rewrite
	// their certificates at each change.
	rev = put(t, kv, route("orders", "/orders/", "orders"))
	certWrites := 0
	for st := (*nodev1.NodeStatus)(nil); st.GetRevision() < rev; {
		e := <-updates
		switch {
		case e == nil || e.Operation() != jetstream.KeyValuePut:
		case e.Key() == nodekv.CertsKey("edge-1"):
			certWrites++
		case e.Key() == nodekv.Key("edge-1"):
			var err error
			if st, err = nodekv.Decode(e.Value()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if certWrites != 0 {
		t.Errorf("a route change rewrote the certificates %d times, want 0", certWrites)
	}

	stop()
	deleted := map[string]bool{}
	for e := range updates {
		if e != nil && e.Operation() != jetstream.KeyValuePut {
			deleted[e.Key()] = true
		}
		if deleted[nodekv.Key("edge-1")] && deleted[nodekv.CertsKey("edge-1")] {
			return
		}
	}
}

// A node refuses an id that cannot be a bucket key.
func TestNodeIDMustBeAKey(t *testing.T) {
	t.Parallel()
	_, err := node.Start(context.Background(), node.Config{NodeID: "edge.1", NATSURL: "nats://127.0.0.1:1"})
	if err == nil {
		t.Fatal("node id edge.1 accepted")
	}
}
