package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const apigeeFile = "../apigee/testdata/wrapped.json"

func TestImportApigeePrints(t *testing.T) {
	t.Parallel()
	fake := &fakePolicyService{}
	server := fake.serve(t)
	for _, flag := range []string{"-o=yaml", "--dry-run"} {
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
