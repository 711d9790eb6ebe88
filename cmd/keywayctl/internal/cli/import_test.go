package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	nodev1 "keyway.dev/gen/keyway/node/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

const apigeeFile = "../apigee/testdata/wrapped.json"

func TestImportApigeePrints(t *testing.T) {
	t.Parallel()
	fake := &fakePolicyService{}
	server := fake.serve(t)
	for _, flag := range []string{"-o=yaml", "--output=yaml"} {
		stdout, stderr, err := keywayctl(t, server, "", "import", "apigee", apigeeFile, flag)
		if err != nil {
			t.Fatalf("%s: %v\n%s", flag, err, stderr)
		}
		for _, want := range []string{"kind: PolicyBinding", "keystore: edge", "alias: payments-client", "truststore: payments-ca"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%s: output lacks %q:\n%s", flag, want, stdout)
			}
		}
		if !strings.Contains(stderr, `note: targetServer[0] "payments" sSLInfo: commonName`) {
			t.Errorf("%s: stderr lacks the commonName note:\n%s", flag, stderr)
		}
	}
	if len(fake.applies) != 0 {
		t.Errorf("printing sent %d apply requests, want none", len(fake.applies))
	}
}

func TestImportApigeeApplies(t *testing.T) {
	t.Parallel()
	fake := &fakePolicyService{}
	server := fake.serve(t)
	stdout, stderr, err := keywayctl(t, server, "", "import", "apigee", apigeeFile)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "service/payments created") || !strings.Contains(stdout, "policybinding/payments-tls created") {
		t.Errorf("stdout:\n%s", stdout)
	}
	if len(fake.applies) != 1 || len(fake.applies[0].GetResources()) != 2 {
		t.Fatalf("apply requests %v, want one with the Service and the binding", fake.applies)
	}
	cfg := fake.applies[0].GetResources()[1].GetPolicyBinding().GetSpec().GetConfig().AsMap()
	cert, _ := cfg["certificate"].(map[string]any)
	trusted, _ := cfg["trustedCA"].(map[string]any)
	if cert["keystore"] != "edge" || cert["alias"] != "payments-client" || trusted["truststore"] != "payments-ca" {
		t.Errorf("binding config sent: %v", cfg)
	}
}

// --dry-run is apply's: the converted resources are validated by the
// policy service, and probed, and nothing is stored; --wait follows the
// rollout.
func TestImportApigeeDryRunAndWait(t *testing.T) {
	t.Parallel()
	fake := &fakePolicyService{watch: []*policyv1.Rollout{{Revision: 1, Complete: true, Serving: []*nodev1.NodeStatus{{Id: "node-1", Revision: 1}}}}}
	server := fake.serve(t)
	stdout, stderr, err := keywayctl(t, server, "", "import", "apigee", apigeeFile, "--dry-run")
	if err != nil {
		t.Fatalf("import --dry-run: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "policybinding/payments-tls valid (dry run)") {
		t.Errorf("stdout:\n%s", stdout)
	}
	stdout, stderr, err = keywayctl(t, server, "", "import", "apigee", apigeeFile, "--wait")
	if err != nil {
		t.Fatalf("import --wait: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "node node-1 serves revision") || !strings.Contains(stdout, "rollout of revision") {
		t.Errorf("import --wait did not follow the rollout:\n%s", stdout)
	}
	reqs := fake.requests()
	if len(reqs) != 2 || !reqs[0].GetDryRun() || reqs[1].GetDryRun() || reqs[0].GetProbe() != policyv1.ProbeMode_PROBE_MODE_ON {
		t.Errorf("requests %v, want a probing dry run, then an apply", reqs)
	}
}

func TestImportApigeeRefusesBadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "ts.json")
	writeFile(t, bad, `[{"name": "a", "host": "h", "port": 443, "sSLInfo": {"enabled": true}}]`)
	fake := &fakePolicyService{}
	_, stderr, err := keywayctl(t, fake.serve(t), "", "import", "apigee", bad)
	if err == nil || !strings.Contains(stderr, "trustStore is missing") || !strings.Contains(stderr, "nothing imported from") {
		t.Errorf("err %v, stderr:\n%s", err, stderr)
	}
	if len(fake.applies) != 0 {
		t.Error("a bad file was sent")
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
