package vaultauth

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"keyway.dev/internal/testwait"
	"keyway.dev/internal/vaulttest"
)

// vault is a real Vault dev server with AppRole enabled, a policy that
// reads and writes secret/data/keyway/*, and a role "keyway" holding it
// whose tokens live ttl and at most maxTTL.
type vault struct {
	srv  *vaulttest.Server
	root *api.Client
}

func startVault(t *testing.T, ttl, maxTTL string) *vault {
	t.Helper()
	srv := vaulttest.Start(t, vaulttest.Options{})
	root := client(t, srv.Addr)
	root.SetToken(srv.Token)
	must(t, root.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}))
	must(t, root.Sys().PutPolicy("keyway", `path "secret/data/keyway/*" { capabilities = ["create", "read", "update"] }`))
	_, err := root.Logical().Write("auth/approle/role/keyway", map[string]any{
		"token_policies": "keyway", "token_ttl": ttl, "token_max_ttl": maxTTL,
	})
	must(t, err)
	return &vault{srv: srv, root: root}
}

func client(t *testing.T, addr string) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: addr})
	must(t, err)
	c.SetToken("")
	return c
}

// appRoleFiles writes the role ID and a new secret ID (wrapped when asked)
// where the flags would point.
func (v *vault) appRoleFiles(t *testing.T, wrapped bool) Config {
	t.Helper()
	dir := t.TempDir()
	s, err := v.root.Logical().Read("auth/approle/role/keyway/role-id")
	must(t, err)
	roleID := filepath.Join(dir, "role-id")
	must(t, os.WriteFile(roleID, []byte(s.Data["role_id"].(string)+"\n"), 0o600))
	c := v.root
	if wrapped {
		c, err = v.root.Clone()
		must(t, err)
		c.SetToken(v.root.Token())
		c.SetWrappingLookupFunc(func(string, string) string { return "5m" })
	}
	s, err = c.Logical().Write("auth/approle/role/keyway/secret-id", nil)
	must(t, err)
	value := ""
	if wrapped {
		value = s.WrapInfo.Token
	} else {
		value = s.Data["secret_id"].(string)
	}
	secretID := filepath.Join(dir, "secret-id")
	must(t, os.WriteFile(secretID, []byte(value), 0o600))
	return Config{Method: MethodAppRole, AppRoleMount: "approle", RoleIDFile: roleID, SecretIDFile: secretID, SecretIDWrapped: wrapped, CheckInterval: 100 * time.Millisecond}
}

func start(t *testing.T, v *vault, cfg Config) (*Session, *api.Client) {
	t.Helper()
	c := client(t, v.srv.Addr)
	s, err := New(t.Context(), c, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, c
}

// write is what the secrets service does with its token: a KV v2 write.
func write(c *api.Client) error {
	_, err := c.KVv2("secret").Put(context.Background(), "keyway/probe", map[string]any{"v": time.Now().String()})
	return err
}

func logins(s *Session, result string) float64 {
	return testutil.ToFloat64(s.logins.WithLabelValues(s.cfg.Method, result))
}

// TestAppRoleLogsInAgainAtMaxTTL: tokens that live 2 s at most are renewed
// and then replaced by new logins; the client keeps writing throughout.
func TestAppRoleLogsInAgainAtMaxTTL(t *testing.T) {
	v := startVault(t, "1s", "3s")
	s, c := start(t, v, v.appRoleFiles(t, false))
	first := c.Token()
	if err := write(c); err != nil {
		t.Fatalf("write with the first token: %v", err)
	}
	testwait.Until(t, 20*time.Second, "a second AppRole login after the first token's max TTL", func() bool {
		return logins(s, "ok") >= 2
	})
	if c.Token() == first {
		t.Fatal("the client still holds the first token after a new login")
	}
	if err := write(c); err != nil {
		t.Fatalf("write after logging in again: %v", err)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("Err = %v after logging in again", err)
	}
	if f := testutil.ToFloat64(s.failures.WithLabelValues("renewal")); f != 0 {
		t.Errorf("renewal failures = %v, want 0: reaching the max TTL is planned", f)
	}
}

// TestRevokedTokenIsNoticedAndReplaced: a token revoked by an operator is
// noticed at the next lookup (not at its renewal, an hour away), counted,
// and replaced by a new login.
func TestRevokedTokenIsNoticedAndReplaced(t *testing.T) {
	v := startVault(t, "1h", "24h")
	s, c := start(t, v, v.appRoleFiles(t, false))
	revoked := c.Token()
	must(t, v.root.Auth().Token().RevokeTree(revoked))
	testwait.Until(t, 10*time.Second, "the revoked token counted and a new login", func() bool {
		return testutil.ToFloat64(s.failures.WithLabelValues("revoked")) == 1 && logins(s, "ok") == 2
	})
	if c.Token() == revoked {
		t.Fatal("the client still holds the revoked token")
	}
	if err := write(c); err != nil {
		t.Fatalf("write after the new login: %v", err)
	}
}

// TestWrappedSecretID: the secret ID file holds a response-wrapping token,
// unwrapped at login.
func TestWrappedSecretID(t *testing.T) {
	v := startVault(t, "1h", "24h")
	_, c := start(t, v, v.appRoleFiles(t, true))
	if err := write(c); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// TestStaticTokenRevokedFailsClosed: a static token cannot log in again;
// once revoked, Err says so and names the fix.
func TestStaticTokenRevokedFailsClosed(t *testing.T) {
	v := startVault(t, "1h", "24h")
	tok, err := v.root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"keyway"}, TTL: "1h"})
	must(t, err)
	s, c := start(t, v, Config{Method: MethodToken, Token: tok.Auth.ClientToken, CheckInterval: 100 * time.Millisecond})
	if err := write(c); err != nil {
		t.Fatalf("write with the static token: %v", err)
	}
	must(t, v.root.Auth().Token().RevokeTree(tok.Auth.ClientToken))
	testwait.Until(t, 10*time.Second, "the revoked static token reported", func() bool { return s.Err() != nil })
	if msg := s.Err().Error(); !strings.Contains(msg, "VAULT_TOKEN") || !strings.Contains(msg, "--vault-auth=approle") {
		t.Errorf("Err = %q, want it to name VAULT_TOKEN and --vault-auth=approle", msg)
	}
}

// TestLoginRefusedFailsAtStart: a wrong secret ID stops the service at
// start, and the error names the flag, not the secret.
func TestLoginRefusedFailsAtStart(t *testing.T) {
	v := startVault(t, "1h", "24h")
	cfg := v.appRoleFiles(t, false)
	must(t, os.WriteFile(cfg.SecretIDFile, []byte("not-the-secret-id"), 0o600))
	_, err := New(t.Context(), client(t, v.srv.Addr), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Fatal("New succeeded with a wrong secret ID")
	}
	if !strings.Contains(err.Error(), "--vault-auth=approle") || strings.Contains(err.Error(), "not-the-secret-id") {
		t.Errorf("error = %v; want it to name --vault-auth=approle and not echo the secret ID", err)
	}
}

func TestConfigNamesTheMissingFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Method: MethodAppRole}, "--vault-approle-role-id-file"},
		{Config{Method: MethodKubernetes}, "--vault-kubernetes-role"},
		{Config{Method: strings.Repeat("x", 5000)}, "want token, approle or kubernetes"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || len(err.Error()) > 300 {
			t.Errorf("Validate(%.20q) = %v, want a short error naming %s", tc.cfg.Method, err, tc.want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
