package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "keyway.dev/gen/keyway/node/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

func node(id string, rev uint64, certs ...*nodev1.ServedCertificate) *nodev1.NodeStatus {
	return &nodev1.NodeStatus{
		Id: id, ProxyAddress: "10.0.0.1:8080", Revision: rev, Version: "v0.1.0",
		HeartbeatTime: timestamppb.New(now.Add(-3 * time.Second)), Certificates: certs,
	}
}

func cert(fp string) *nodev1.ServedCertificate {
	return &nodev1.ServedCertificate{Scope: "upstream", Name: "orders", Role: "client", Sha256Fingerprint: fp, NotAfter: timestamppb.New(now.Add(48 * time.Hour))}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	fromAlias := cert("bb:bb:bb:bb:bb:bb:bb:bb:bb:bb")
	fromAlias.Keystore, fromAlias.Alias = "edge", "gateway"
	pending := node("edge-2", 6, fromAlias)
	pending.Errors = []*nodev1.NodeError{{Key: "policybinding.orders-mtls", Message: "bad key"}}
	f := &fakePolicyService{rollout: &policyv1.Rollout{
		Revision: 7,
		Serving:  []*nodev1.NodeStatus{node("edge-1", 7, cert("aa:aa:aa:aa:aa:aa:aa:aa:aa:aa"))},
		Pending:  []*nodev1.NodeStatus{pending},
	}}
	url := f.serve(t)

	out, _, err := keywayctl(t, url, "", "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"NODE", "edge-1   10.0.0.1:8080   7          yes", "edge-2   10.0.0.1:8080   6          no", "3s ago", "1 of 2 nodes serve revision 7",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}

	out, _, err = keywayctl(t, url, "", "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Revision string `json:"revision"`
		Complete bool   `json:"complete"`
		Serving  []struct {
			ID string `json:"id"`
		} `json:"serving"`
		Pending []struct {
			ID     string `json:"id"`
			Errors []any  `json:"errors"`
		} `json:"pending"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	if r.Revision != "7" || r.Complete || len(r.Serving) != 1 || len(r.Pending) != 1 || len(r.Pending[0].Errors) != 1 {
		t.Errorf("status -o json: %+v", r)
	}
	if out, _, err = keywayctl(t, url, "", "status", "-o", "yaml"); err != nil || !strings.Contains(out, "id: edge-1") {
		t.Errorf("status -o yaml: %v\n%s", err, out)
	}

	out, _, err = keywayctl(t, url, "", "status", "--certificates")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"edge-1   upstream   orders   -      client   inline", "edge-2   upstream   orders   -      client   edge/gateway", "aa:aa:aa:aa:aa:aa:aa:aa…", "(in 2 days)", "REVOCATION", "not checked", "nodes disagree on upstream/orders client: aa:aa:aa:aa:aa:aa:aa:aa… on 1 (edge-1); bb:bb:bb:bb:bb:bb:bb:bb… on 1 (edge-2)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status --certificates lacks %q:\n%s", want, out)
		}
	}
}

func TestApplyWait(t *testing.T) {
	t.Parallel()
	n1, n2 := node("edge-1", 1), node("edge-2", 1)
	at := func(n *nodev1.NodeStatus, rev uint64) *nodev1.NodeStatus {
		c := proto.Clone(n).(*nodev1.NodeStatus)
		c.Revision = rev
		return c
	}
	f := &fakePolicyService{watch: []*policyv1.Rollout{
		{Revision: 2, Pending: []*nodev1.NodeStatus{n1, n2}},
		{Revision: 2, Serving: []*nodev1.NodeStatus{at(n1, 2)}, Pending: []*nodev1.NodeStatus{n2}},
		{Revision: 2, Complete: true, Serving: []*nodev1.NodeStatus{at(n1, 2), at(n2, 3)}},
	}}
	url := f.serve(t)
	out, stderr, err := keywayctl(t, url, appYAML, "apply", "-f", "-", "--wait")
	if err != nil {
		t.Fatalf("apply --wait: %v\n%s", err, stderr)
	}
	for _, want := range []string{"node edge-1 serves revision 2 (at 2", "node edge-2 serves revision 2 (at 3", "rollout of revision 2 complete: 2 of 2 nodes serve it"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply --wait output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "node edge-1 serves") != 1 {
		t.Errorf("a node reported twice:\n%s", out)
	}

	// The stream ends with the rollout incomplete: a non-zero exit naming
	// the node and its last error.
	stuck := at(n2, 1)
	stuck.Errors = []*nodev1.NodeError{{Key: "service.orders", Message: "cannot build"}}
	f2 := &fakePolicyService{watch: []*policyv1.Rollout{{Revision: 2, Serving: []*nodev1.NodeStatus{at(n1, 2)}, Pending: []*nodev1.NodeStatus{stuck}}}}
	_, stderr, err = keywayctl(t, f2.serve(t), appYAML, "apply", "-f", "-", "--wait", "--timeout", "1s")
	if err == nil {
		t.Fatal("apply --wait with a node behind: no error")
	}
	for _, want := range []string{"node edge-2 (10.0.0.1:8080) still serves revision 1; last error on service.orders: cannot build", "rollout of revision 2 incomplete after 1s: 1 of 2 nodes serve it"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	if _, _, err := keywayctl(t, url, appYAML, "apply", "-f", "-", "--wait", "--dry-run"); err == nil || !strings.Contains(err.Error(), "nothing is stored") {
		t.Errorf("--wait --dry-run: %v", err)
	}
}
