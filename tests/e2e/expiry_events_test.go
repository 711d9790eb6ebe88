package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/natsperm"
	"keyway.dev/internal/nodekv"
	"keyway.dev/internal/testca"
	"keyway.dev/tests/harness"
)

// A Listener certificate with 5 days left: the node, connected as the
// node NATS user with the permissions deploy/ grants, publishes one 7-day
// expiry event (the server accepts it: no permissions violation) and no
// more over the heartbeats that follow, and counts it.
func TestExpiryEventPublishedWithTheNodePermissions(t *testing.T) {
	w := newWorldEnv(t, []string{"KEYWAY_HEARTBEAT=200ms"}, 1)
	px := w.proxies[0]
	now := time.Now()
	soon := w.upstreamCA.Issue(testca.Options{DNSNames: []string{"soon.e2e"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 24 * time.Hour)})
	listener := fmt.Sprintf(`---
apiVersion: keyway.dev/v1alpha1
kind: Listener
metadata:
  name: edge
spec:
  address: %s
  hosts:
    - hostnames: [soon.e2e]
      certificate:
        crt: |
%s        key: |
%s`, harness.FreeAddr(t), indentPEM(soon.CertPEM, "          "), indentPEM(soon.KeyPEM, "          "))
	m := w.write(t, "expiry.yaml", w.manifest(w.upstreamCA.CertPEM(), w.gateway, "")+listener)
	if out, errOut, code := w.ctl(t, "apply", "-f", m, "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	waitMetric(t, px, `keyway_certificate_expiry_events_total{threshold="7d"}`, 1)
	// Three more status writes of the node, on the same connection: they
	// looked at the thresholds again, and a refusal of the publication
	// would have reached the node before their acknowledgement.
	js := mustJS(t, harness.NATSConnect(t, w.natsURL, natsperm.Policy))
	watcher, err := mustKV(t, js, nodekv.Bucket).Watch(t.Context(), nodekv.Key(px.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Stop()
	since := time.Now()
	for seen := 0; seen < 3; {
		select {
		case e := <-watcher.Updates():
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if st, err := nodekv.Decode(e.Value()); err == nil && st.GetHeartbeatTime().AsTime().After(since) {
				seen++
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no status write of the node within 30s")
		}
	}
	if v, _ := metricValue(t, px, `keyway_certificate_expiry_events_total{threshold="7d"}`); v != 1 {
		t.Errorf("keyway_certificate_expiry_events_total{threshold=\"7d\"} = %v, want 1: published once", v)
	}
	out := px.Output()
	if strings.Contains(out, "Permissions Violation") {
		t.Errorf("the NATS server refused a publication of the node:\n%s", out)
	}
	if !strings.Contains(out, "certificate expiring") || !strings.Contains(out, "threshold=7d") {
		t.Errorf("the node's log does not name the expiring certificate:\n%s", out)
	}
}
