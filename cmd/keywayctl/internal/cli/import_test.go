package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

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
		if !strings.Contains(stderr, `note: `+apigeeFile+`:14:23: targetServer[0] "payments" sSLInfo.commonName: "payments.example.com" becomes subjectAltNames`) {
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
	writeFile(t, bad, `[
  {"name": "a", "host": "h", "port": 443, "sSLInfo": {"enabled": true}},
  {"name": "b", "host": "h", "port": 443,},
]`)
	fake := &fakePolicyService{}
	_, stderr, err := keywayctl(t, fake.serve(t), "", "import", "apigee", bad)
	want := strings.Join([]string{
		"error: " + bad + `:2:54: targetServer[0] "a" sSLInfo: trustStore is missing and ignoreValidationErrors is false: ` +
			`Apigee then trusts its default CAs, Keyway trusts only what the binding names; add "trustStore": "NAME" and store the CAs that sign the upstream's certificate under it ` +
			`(keywayctl secrets put --truststore NAME --cert CA.pem), or set "ignoreValidationErrors": true`,
		"error: nothing imported from " + bad + ": 1 problem",
	}, "\n")
	// A syntax error first: all of them, then the file is read no further.
	if err == nil || !strings.Contains(stderr, "error: "+bad+":3:41: a ',' before '}' (a trailing comma), which JSON does not allow: delete it\n"+
		"error: "+bad+":3:43: a ',' before ']' (a trailing comma), which JSON does not allow: delete it\n"+
		"error: nothing imported from "+bad+": 2 problems") {
		t.Errorf("err %v, stderr:\n%s", err, stderr)
	}
	writeFile(t, bad, `[
  {"name": "a", "host": "h", "port": 443, "sSLInfo": {"enabled": true}}
]`)
	if _, stderr, err = keywayctl(t, fake.serve(t), "", "import", "apigee", bad); err == nil || strings.TrimSpace(stderr) != want {
		t.Errorf("err %v, stderr:\n%s\nwant:\n%s", err, stderr, want)
	}
	if len(fake.applies) != 0 {
		t.Error("a bad file was sent")
	}
}

// TestImportApigeeApplyErrorsAtTheFile: what the policy service refuses in
// the converted resources (the guide's deploy-time errors: a keystore, an
// alias or a truststore that does not exist, an expired certificate) is
// reported at the line and column of targetservers.json that names it, in
// its names, never at the converted YAML.
func TestImportApigeeApplyErrorsAtTheFile(t *testing.T) {
	t.Parallel()
	const file = "../apigee/testdata/guide-fixed.json"
	const config = "resources[1].policyBinding.spec.config"
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New("invalid"))
	detail, err := connect.NewErrorDetail(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: config + ".certificate.alias", Description: "alias \"mtls_alias\" does not exist in keystore \"mtls_keystore\"; store the key pair under that alias (`keywayctl secrets put --keystore mtls_keystore --alias mtls_alias --cert CERT.pem --key KEY.pem`), or fix the name"},
		{Field: config + ".trustedCA.truststore", Description: "truststore \"mtls_truststore\" does not exist in the secrets service; store the CA bundle under that name (`keywayctl secrets put --truststore mtls_truststore --cert CA.pem`), or fix the name"},
		{Field: config, Description: "live probe of Service \"mymtlstarget\" at foo:8080 (SNI \"foo\") failed: dns_failure"},
		{Field: "resources[0].service.spec.address", Description: "bad address"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cerr.AddDetail(detail)
	warnings, err := connect.NewErrorDetail(&policyv1.Warnings{Warnings: []*policyv1.Warning{
		{Field: config + ".legacyCommonName", Message: "legacyCommonName is true: …"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cerr.AddDetail(warnings)
	fake := &fakePolicyService{applyErr: cerr}
	_, stderr, err := keywayctl(t, fake.serve(t), "", "import", "apigee", file)
	if err == nil {
		t.Fatal("import succeeded, want the refusal")
	}
	ts := `targetServer[0] "mymtlstarget" `
	for _, want := range []string{
		"warning: " + file + ":8:16: " + ts + "sSLInfo: legacyCommonName is true: …",
		"error: " + file + ":5:13: " + ts + "host: bad address",
		"error: " + file + ":8:16: " + ts + "sSLInfo: live probe of Service",
		"error: " + file + ":12:19: " + ts + "sSLInfo.keyAlias: alias \"mtls_alias\" does not exist in keystore \"mtls_keystore\"; store the key pair under that alias (`keywayctl secrets put",
		"error: " + file + ":13:21: " + ts + "sSLInfo.trustStore: truststore \"mtls_truststore\" does not exist",
		"error: nothing applied: 4 problems",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "(converted)") || strings.Contains(stderr, "spec.config") {
		t.Errorf("stderr speaks of the converted YAML:\n%s", stderr)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
