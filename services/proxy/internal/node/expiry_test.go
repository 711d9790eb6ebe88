package node_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	nodev1 "keyway.dev/gen/keyway/node/v1"

	"keyway.dev/internal/certevents"
	"keyway.dev/internal/certs"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/node"
)

// A Listener whose server certificate has 5 days left and whose client CA
// has 20: a subscriber on keyway.events.cert.expiring receives one 7-day
// event for the first and one 30-day event for the second, naming the node,
// and no more over the heartbeats that follow; a certificate with 60 days
// left gives none. The metric counts them by threshold.
func TestExpiryEventsPublishedOncePerThreshold(t *testing.T) {
	t.Parallel()
	natsURL, kv := startNATS(t)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	events := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(certevents.Subject, events)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	updates := nodeEntries(t, natsURL)
	n, _ := startNode(t, natsURL, func(c *node.Config) { c.NodeID = "edge-7"; c.Heartbeat = 50 * time.Millisecond })
	e := &env{kv: kv, node: n}

	servers := testca.New(t, "server CA")
	now := time.Now()
	soon := servers.Issue(testca.Options{DNSNames: []string{"soon.test"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 24 * time.Hour)})
	later := servers.Issue(testca.Options{DNSNames: []string{"later.test"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(60 * 24 * time.Hour)})
	clientCA := servers.Issue(testca.Options{CommonName: "client CA, 20 days left", IsCA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(20 * 24 * time.Hour)})
	soonHost := listenerHost(soon, "require-and-verify", nil, "soon.test")
	soonHost.ClientCas = string(clientCA.CertPEM)
	rev := put(t, kv, listenerResource("public", "127.0.0.1:0", soonHost, listenerHost(later, "none", nil, "later.test")))
	waitRevision(t, n, rev)

	want := map[string]string{ // fingerprint → threshold
		certs.Fingerprint(soon.Cert):     "7d",
		certs.Fingerprint(clientCA.Cert): "30d",
	}
	got := map[string]certevents.Event{}
	deadline := time.After(30 * time.Second)
	for len(got) < len(want) {
		select {
		case m := <-events:
			var ev certevents.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatalf("event %s: %v", m.Data, err)
			}
			if _, dup := got[ev.Fingerprint]; dup {
				t.Fatalf("a second event for %s: %s", ev.Fingerprint, m.Data)
			}
			got[ev.Fingerprint] = ev
		case <-deadline:
			t.Fatalf("events received within 30s: %v, want %v", got, want)
		}
	}
	for fp, th := range want {
		ev := got[fp]
		if ev.Threshold != th || ev.Node != "edge-7" || ev.Listener != "public" || ev.Host != "soon.test" {
			t.Errorf("event for %s: %+v, want threshold %s from node edge-7 for listener public host soon.test", fp, ev, th)
		}
	}
	if ev := got[certs.Fingerprint(soon.Cert)]; ev.Role != "listener-server" || ev.SecondsLeft <= 4*24*3600 || !ev.NotAfter.Equal(soon.Cert.NotAfter) {
		t.Errorf("server certificate event: %+v", ev)
	}
	if ev := got[certs.Fingerprint(clientCA.Cert)]; ev.Role != "listener-client-ca" {
		t.Errorf("client CA event: %+v", ev)
	}

	// Three more status writes, each of which looked at the thresholds
	// again: nothing more is published.
	for range 3 {
		since := time.Now()
		nextStatus(t, updates, "edge-7", func(s *nodev1.NodeStatus) bool { return s.GetHeartbeatTime().AsTime().After(since) })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-events:
		t.Errorf("an event after the thresholds were published: %s", m.Data)
	default:
	}
	fams := scrape(t, e)
	for th, count := range map[string]float64{"7d": 1, "30d": 1} {
		if v := value(t, fams, "keyway_certificate_expiry_events_total", map[string]string{"threshold": th}); v != count {
			t.Errorf("keyway_certificate_expiry_events_total{threshold=%q} = %v, want %v", th, v, count)
		}
	}
}
