package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/material"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/vaulttest"
	"keyway.dev/tests/harness"
)

// secretsCtl runs keywayctl secrets against the service.
func secretsCtl(t *testing.T, s *harness.Secrets, args ...string) (string, string, int) {
	t.Helper()
	// The operator's identity by environment: --cert and --key of
	// `secrets put` are the alias's.
	return harness.RunEnv(t, harness.Bin(t, "keywayctl"), harness.Operator(t).Env, append([]string{"secrets", "--secrets-server", s.URL}, args...)...)
}

func writePEM(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// keywayctl secrets against the real keyway-secrets process (local
// backend), and a proxy node's fetch over mTLS with the client certificate
// files a deployment would hand it.
func TestSecretsWithKeywayctl(t *testing.T) {
	t.Parallel()
	natsURL, _ := harness.NATS(t)
	s := harness.StartSecrets(t, natsURL, nil)
	dir := t.TempDir()
	ca := testca.New(t, "upstream CA")
	gw := ca.Client("gw")
	weak := ca.RSA("weak", 1024)

	out, errOut, code := secretsCtl(t, s, "put", "--keystore", "edge", "--alias", "gw",
		"--cert", writePEM(t, dir, "gw.crt", gw.CertPEM), "--key", writePEM(t, dir, "gw.key", gw.KeyPEM))
	if code != 0 || !strings.Contains(out, "alias edge/gw stored") || !strings.Contains(out, gw.Fingerprint()) {
		t.Fatalf("put: %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = secretsCtl(t, s, "put", "--keystore", "edge", "--alias", "weak",
		"--cert", writePEM(t, dir, "weak.crt", weak.CertPEM), "--key", writePEM(t, dir, "weak.key", weak.KeyPEM))
	if code == 0 || !strings.Contains(errOut, "error: --key: the RSA key is 1024 bits") || !strings.Contains(errOut, "nothing was stored") {
		t.Errorf("put of an RSA 1024 key: %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code = secretsCtl(t, s, "put", "--truststore", "upstream-cas", "--cert", writePEM(t, dir, "ca.crt", ca.CertPEM())); code != 0 {
		t.Fatalf("put truststore: %s", errOut)
	}

	out, _, code = secretsCtl(t, s, "list")
	if code != 0 || !strings.Contains(out, "KEYSTORE") || !strings.Contains(out, "edge") || !strings.Contains(out, "valid") || !strings.Contains(out, "upstream-cas") || strings.Contains(out, "weak") {
		t.Errorf("list:\n%s", out)
	}
	out, _, _ = secretsCtl(t, s, "list", "-o", "json")
	var listing struct {
		Keystores   []map[string]any `json:"keystores"`
		Truststores []map[string]any `json:"truststores"`
	}
	if err := json.Unmarshal([]byte(out), &listing); err != nil || len(listing.Keystores) != 1 || len(listing.Truststores) != 1 {
		t.Errorf("list -o json: %v\n%s", err, out)
	}
	out, _, _ = secretsCtl(t, s, "get", "--keystore", "edge", "--alias", "gw", "-o", "yaml")
	if !strings.Contains(out, "sha256Fingerprint: "+gw.Fingerprint()) || strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("get -o yaml:\n%s", out)
	}

	// What a proxy node does: fetch over mTLS with its certificate files.
	client, err := material.NewServiceClientFromFiles(s.InternalURL, material.Files{
		Cert: filepath.Join(s.Dir, "node.crt"), Key: filepath.Join(s.Dir, "node.key"), CA: filepath.Join(s.Dir, "ca.crt"),
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := client.FetchAlias(context.Background(), connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
	if err != nil || m.Msg.GetPrivateKeyPem() != string(gw.KeyPEM) {
		t.Fatalf("FetchAlias over mTLS: %v", err)
	}

	if out, errOut, code = secretsCtl(t, s, "delete", "--keystore", "edge", "--alias", "gw"); code != 0 || !strings.Contains(out, "deleted") {
		t.Errorf("delete: %d %s%s", code, out, errOut)
	}
	if _, errOut, code = secretsCtl(t, s, "get", "--keystore", "edge", "--alias", "gw"); code == 0 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("get after delete: %d %s", code, errOut)
	}
}

// keywayctl secrets put --pki-role against keyway-secrets on a real Vault.
func TestSecretsPKIWithKeywayctl(t *testing.T) {
	t.Parallel()
	v := harness.Vault(t, true)
	v.Role("gateway", 0)
	natsURL, _ := harness.NATS(t)
	s := harness.StartSecrets(t, natsURL, []string{"VAULT_TOKEN=" + vaulttest.Token}, "--backend", "vault", "--vault-addr", v.Addr)
	out, errOut, code := secretsCtl(t, s, "put", "--keystore", "edge", "--alias", "gw", "--pki-role", "gateway", "--common-name", "gw.example.com", "--ttl", "1h")
	if code != 0 || !strings.Contains(out, "CN=gw.example.com") || !strings.Contains(out, "renews at") {
		t.Fatalf("put --pki-role: %d\n%s%s", code, out, errOut)
	}
	out, _, _ = secretsCtl(t, s, "list")
	if !strings.Contains(out, "vault-pki") {
		t.Errorf("list:\n%s", out)
	}
}
