package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/tests/harness"
)

// waitCtl runs keywayctl secrets until its output matches re, and returns
// that output: the secrets service is another process, polling Vault.
func waitCtl(t *testing.T, s *harness.Secrets, re *regexp.Regexp, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, errOut, code := secretsCtl(t, s, args...)
		if code == 0 && re.MatchString(out) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("keywayctl secrets %s did not print %s within 60s; last: exit %d\n%s%s", strings.Join(args, " "), re, code, out, errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// secretsMetric reads one series of the secrets service's /metrics as the
// operator; -1 when absent.
func secretsMetric(t *testing.T, s *harness.Secrets, series string) float64 {
	t.Helper()
	resp, err := harness.Operator(t).HTTP.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// Bad values written straight into Vault (`vault kv put` outside Keyway)
// under the alias a binding uses: each is rejected, keywayctl shows it
// (table and JSON) with the version refused, the reason and the version
// still served, the metric counts it, and requests through the proxy keep
// getting 200 with the last good certificate. A good value is picked up.
// Then the alias and truststore cannot be deleted while the binding uses
// them, and can once it is gone.
func TestOutOfBandBadValuesInVault(t *testing.T) {
	t.Parallel()
	v := harness.Vault(t, false)
	s := harness.StartRotationStackWith(t, 1, harness.RotationOptions{Vault: v, PollInterval: 250 * time.Millisecond})
	px := s.Proxies[0]
	good := s.Fingerprint
	current := func(t *testing.T) int { // Vault's current version of edge/gw
		out, _, _ := secretsCtl(t, s.Secrets, "get", "--keystore", "edge", "--alias", "gw", "-o", "json")
		var a struct {
			Version   string `json:"version"`
			Rejection *struct {
				Version string `json:"version"`
			} `json:"rejection"`
		}
		if err := json.Unmarshal([]byte(out), &a); err != nil {
			t.Fatalf("get -o json: %v\n%s", err, out)
		}
		n, _ := strconv.Atoi(a.Version)
		if a.Rejection != nil {
			n, _ = strconv.Atoi(a.Rejection.Version)
		}
		return n
	}
	served := strconv.Itoa(current(t))

	other := s.CA.Client("keyway-gateway")
	weak := s.CA.RSA("keyway-gateway", 1024)
	expired := s.CA.Expired("keyway-gateway")
	for _, tc := range []struct {
		name, reason, text string
		cert, key          []byte
	}{
		{"key mismatch", "key_mismatch", "the private_key field does not match the certificate", other.CertPEM, s.CA.Client("keyway-gateway").KeyPEM},
		{"expired", "expired", "expired at", expired.CertPEM, expired.KeyPEM},
		{"RSA 1024", "weak_key", "the RSA key is 1024 bits", weak.CertPEM, weak.KeyPEM},
	} {
		version := strconv.Itoa(current(t) + 1)
		s.Vault.Write("secret/data/keyway/keystores/edge/gw", map[string]any{"data": map[string]any{
			"certificate": string(tc.cert), "private_key": string(tc.key), "usage": "client"}})
		line := regexp.MustCompile(`(?m)^alias edge/gw: Vault version ` + version + ` rejected \(` + tc.reason + `\) since \S+; serving version ` + served + `: .*` + regexp.QuoteMeta(tc.text))
		out := waitCtl(t, s.Secrets, line, "list")
		t.Logf("%s: keywayctl secrets list:\n%s", tc.name, out)
		if !regexp.MustCompile(`(?m)^edge\s+gw\s+vault-kv\s+` + served + `\s.*\srejected\s`).MatchString(out) {
			t.Errorf("%s: list shows no rejected row for edge/gw serving version %s:\n%s", tc.name, served, out)
		}
		out, _, _ = secretsCtl(t, s.Secrets, "get", "--keystore", "edge", "--alias", "gw")
		if !line.MatchString(out) {
			t.Errorf("%s: get lacks the rejection line:\n%s", tc.name, out)
		}
		out, _, _ = secretsCtl(t, s.Secrets, "get", "--keystore", "edge", "--alias", "gw", "-o", "json")
		var a struct {
			Version   string `json:"version"`
			Status    string `json:"status"`
			Rejection struct {
				Version, Reason, Message string
			} `json:"rejection"`
		}
		if err := json.Unmarshal([]byte(out), &a); err != nil || a.Status != "STATUS_REJECTED" || a.Version != served ||
			a.Rejection.Version != version || a.Rejection.Reason != tc.reason || !strings.Contains(a.Rejection.Message, tc.text) {
			t.Errorf("%s: get -o json: %v\n%s", tc.name, err, out)
		}
		if got := secretsMetric(t, s.Secrets, `keyway_secrets_rejected_versions_total{kind="alias",reason="`+tc.reason+`"}`); got != 1 {
			t.Errorf("%s: keyway_secrets_rejected_versions_total{reason=%q} = %v, want 1", tc.name, tc.reason, got)
		}
		if got := secretsMetric(t, s.Secrets, `keyway_secrets_rejected{kind="alias"}`); got != 1 {
			t.Errorf("%s: keyway_secrets_rejected{kind=alias} = %v, want 1", tc.name, got)
		}
		// Traffic keeps the last good certificate.
		if fp, err := harness.Seen(probeHTTP, px); err != nil || fp != good {
			t.Errorf("%s: a request through the proxy: %v, upstream saw %s; want 200 with %s", tc.name, err, fp, good)
		}
	}

	// A good value: ok again, and the proxy serves it.
	fp := s.RotateInVault(t)
	waitCtl(t, s.Secrets, regexp.MustCompile(`(?m)^edge\s+gw\s+vault-kv\s+\d+\s.*\sok\s`), "list")
	if _, err := s.WaitServed(px, fp, time.Now(), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := secretsMetric(t, s.Secrets, `keyway_secrets_rejected{kind="alias"}`); got != 0 {
		t.Errorf("keyway_secrets_rejected{kind=alias} after a good value = %v, want 0", got)
	}

	// In use: refused, naming the binding.
	out, errOut, code := secretsCtl(t, s.Secrets, "delete", "--keystore", "edge", "--alias", "gw")
	if code == 0 || !strings.Contains(errOut, "alias edge/gw is still used by PolicyBinding/orders-mtls (policyBinding.spec.config.certificate); delete or re-point those first") {
		t.Errorf("delete of an alias in use: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = secretsCtl(t, s.Secrets, "delete", "--truststore", "upstream-cas")
	if code == 0 || !strings.Contains(errOut, "truststore upstream-cas is still used by PolicyBinding/orders-mtls (policyBinding.spec.config.trustedCA.truststore)") {
		t.Errorf("delete of a truststore in use: exit %d\n%s%s", code, out, errOut)
	}
	if fp2, err := harness.Seen(probeHTTP, px); err != nil || fp2 != fp {
		t.Errorf("after the refused deletes: %v, %s", err, fp2)
	}
	// The binding goes (through the policy service): the deletes go through.
	if _, err := s.Policy.Delete(context.Background(), connect.NewRequest(&policyv1.DeleteRequest{Kind: "PolicyBinding", Name: "orders-mtls"})); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--keystore", "edge", "--alias", "gw"}, {"--truststore", "upstream-cas"}} {
		if out, errOut, code := secretsCtl(t, s.Secrets, append([]string{"delete"}, args...)...); code != 0 || !strings.Contains(out, "deleted") {
			t.Errorf("delete %v once unused: exit %d\n%s%s", args, code, out, errOut)
		}
	}
}

var probeHTTP = &http.Client{Timeout: 30 * time.Second}
