package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"keyway.dev/tests/harness"
)

// nodeSnapshot is the part of a node's /status this test reads.
type nodeSnapshot struct {
	Revision uint64   `json:"revision"`
	Routes   []string `json:"routes"`
	Upstream []struct {
		Name string `json:"name"`
	} `json:"upstreams"`
	Watch struct {
		Publishes uint64 `json:"publishes"`
	} `json:"watch"`
}

// An apply of a Service, its Route and a binding, through keywayctl and the
// policy service, reaches a node as one change: one snapshot published,
// holding all three, at the revision the apply returned.
func TestApplyOfThreeIsOneChangeOnTheNode(t *testing.T) {
	c := newCluster(t, 1)
	px := c.proxies[0]
	read := func() nodeSnapshot {
		t.Helper()
		resp, err := harness.Operator(t).HTTP.Get(px.AdminURL + "/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st nodeSnapshot
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := read()

	p := filepath.Join(c.dir, "three.yaml")
	m := fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: Route
metadata:
  name: orders
spec:
  path: /orders/
  service: orders
---
apiVersion: keyway.dev/v1alpha1
kind: Service
metadata:
  name: orders
spec:
  address: %s
---
apiVersion: keyway.dev/v1alpha1
kind: PolicyBinding
metadata:
  name: orders-tls
spec:
  targetRef:
    kind: Service
    name: orders
  policyRef:
    name: tls-outbound
  config:
    skipValidation: true
    sni: orders.internal
`, c.upstream.Addr())
	if err := os.WriteFile(p, []byte(m), 0o600); err != nil {
		t.Fatal(err)
	}
	// --probe=false: the cluster's upstream speaks plain HTTP; this test is
	// about how the change reaches the node, not about the handshake.
	stdout, stderr, code := c.ctl(t, "apply", "--probe=false", "-f", p, "--wait", "--timeout", "30s")
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, stdout, stderr)
	}
	// --wait returned: the node serves the apply's revision.
	rev := appliedRevision(t, stdout)
	st := read()
	if st.Revision < rev {
		t.Fatalf("the node is at revision %d after apply --wait of revision %d", st.Revision, rev)
	}
	if got := st.Watch.Publishes - before.Watch.Publishes; got != 1 {
		t.Errorf("the apply of three resources was published in %d snapshots, want 1", got)
	}
	hasUpstream := slices.ContainsFunc(st.Upstream, func(u struct {
		Name string `json:"name"`
	}) bool {
		return u.Name == "orders"
	})
	if !slices.Contains(st.Routes, "orders") || !hasUpstream {
		t.Errorf("at revision %d the node serves routes %v, upstreams %v", st.Revision, st.Routes, st.Upstream)
	}
}
