package cli

import (
	"strings"
	"testing"

	nodev1 "keyway.dev/gen/keyway/node/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// A rollout every node reached but one refused: apply --wait exits non-zero
// naming the node, the key and the node's error, and never says complete.
func TestApplyWaitRefused(t *testing.T) {
	t.Parallel()
	n1, n2 := node("edge-1", 2), node("edge-2", 2)
	f := &fakePolicyService{watch: []*policyv1.Rollout{
		{Revision: 2, Serving: []*nodev1.NodeStatus{n1}, Pending: []*nodev1.NodeStatus{node("edge-2", 1)}},
		{Revision: 2, Failed: true, Serving: []*nodev1.NodeStatus{n1, n2}, Refusals: []*policyv1.Refusal{
			{NodeId: "edge-2", Key: "listener.edge", Revision: 2, Message: "listen tcp 127.0.0.1:8443: bind: address already in use"},
		}},
	}}
	out, stderr, err := keywayctl(t, f.serve(t), appYAML, "apply", "-f", "-", "--wait")
	if err == nil {
		t.Fatalf("apply --wait with a refusal: no error\n%s", out)
	}
	if strings.Contains(out, "complete") {
		t.Errorf("apply --wait says complete while a node refused:\n%s", out)
	}
	for _, want := range []string{
		"node edge-2 refused listener.edge (revision 2): listen tcp 127.0.0.1:8443: bind: address already in use",
		"rollout of revision 2 failed: every node reached it, but 1 node refused a resource of it",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// The status table lists each refusal a node reports, not only its count.
func TestStatusListsRefusals(t *testing.T) {
	t.Parallel()
	n := node("edge-1", 7)
	n.Errors = []*nodev1.NodeError{{Key: "listener.edge", Message: "listen tcp 127.0.0.1:8443: bind: address already in use"}}
	f := &fakePolicyService{rollout: &policyv1.Rollout{Revision: 7, Serving: []*nodev1.NodeStatus{n, node("edge-2", 7)}}}
	out, _, err := keywayctl(t, f.serve(t), "", "status")
	if err != nil {
		t.Fatal(err)
	}
	want := "node edge-1 refused listener.edge: listen tcp 127.0.0.1:8443: bind: address already in use"
	if !strings.Contains(out, want) || strings.Contains(out, "node edge-2 refused") {
		t.Errorf("status table: want the line %q and no other refusal:\n%s", want, out)
	}
}
