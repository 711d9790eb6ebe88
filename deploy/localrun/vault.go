package localrun

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// VaultInit is what `vault operator init` gave: one unseal key (one share:
// a local run has one operator) and the root token. Both are written to
// WorkDir/vault-init.json (0600) so that the operator of a local run can
// use Vault.
type VaultInit struct {
	UnsealKey string `json:"unseal_key"`
	RootToken string `json:"root_token"`
}

// secretsPolicy is the Vault policy docs/reference/secrets-service.md
// gives the secrets service.
//
//nolint:gosec // a Vault policy, not a credential
const secretsPolicy = `
path "secret/data/keyway/*"     { capabilities = ["create", "read", "update", "delete", "list"] }
path "secret/metadata/keyway/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "pki/issue/*"              { capabilities = ["update"] }
path "pki/roles/*"              { capabilities = ["read"] }
`

type vaultClient struct {
	http  *http.Client
	token string
}

func (v *vaultClient) call(ctx context.Context, method, addr, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+"/v1/"+path, rd)
	if err != nil {
		return 0, err
	}
	if v.token != "" {
		req.Header.Set("X-Vault-Token", v.token)
	}
	resp, err := v.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 400 && path != "sys/health" {
		return resp.StatusCode, fmt.Errorf("vault %s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("vault %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// setUpVault does once what deploy/README.md and
// docs/reference/secrets-service.md ask of an operator: initialise the first
// node, unseal every node (the others join it by retry_join), mount KV v2
// at secret/ and PKI at pki/ with a root CA, write the secrets service's
// policy and AppRole, and put the role and secret IDs in the Secret the
// manifest mounts.
func (c *Cluster) setUpVault(ctx context.Context, pods []*Pod) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.ca.vault.pem)
	// Initialising writes raft's first entries and makes the keys: seconds on a
	// loaded machine. ctx bounds it all.
	v := &vaultClient{http: &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}}
	first := pods[0].Addr("api")
	if first == "" {
		return fmt.Errorf("pod %s: no container port named api (Vault's 8200)", pods[0].name)
	}
	if err := poll(ctx, "Vault "+pods[0].name+" answering", pods[0], func() bool {
		code, err := v.call(ctx, http.MethodGet, first, "sys/health", nil, nil)
		return err == nil && code != 0
	}); err != nil {
		return err
	}
	var init struct {
		Keys      []string `json:"keys_base64"`
		RootToken string   `json:"root_token"`
	}
	if _, err := v.call(ctx, http.MethodPut, first, "sys/init", map[string]any{"secret_shares": 1, "secret_threshold": 1}, &init); err != nil {
		return err
	}
	if len(init.Keys) != 1 {
		return fmt.Errorf("vault init: %d unseal keys, want 1", len(init.Keys))
	}
	c.vault = VaultInit{UnsealKey: init.Keys[0], RootToken: init.RootToken}
	b, _ := json.MarshalIndent(c.vault, "", "  ")
	if err := os.WriteFile(filepath.Join(c.opts.WorkDir, "vault-init.json"), b, 0o600); err != nil {
		return err
	}
	unseal := func(p *Pod) error {
		return poll(ctx, "Vault "+p.name+" unsealed", p, func() bool {
			var st struct {
				Sealed bool `json:"sealed"`
			}
			_, err := v.call(ctx, http.MethodPut, p.Addr("api"), "sys/unseal", map[string]any{"key": c.vault.UnsealKey}, &st)
			return err == nil && !st.Sealed
		})
	}
	if err := unseal(pods[0]); err != nil {
		return err
	}
	if err := poll(ctx, "Vault "+pods[0].name+" active", pods[0], func() bool { return vaultActive(ctx, first) }); err != nil {
		return err
	}
	c.logf("vault: %s initialised and unsealed", pods[0].name)
	v.token = c.vault.RootToken
	var role struct {
		Data struct {
			RoleID string `json:"role_id"`
		} `json:"data"`
	}
	var secret struct {
		Data struct {
			SecretID string `json:"secret_id"`
		} `json:"data"`
	}
	for _, step := range []struct {
		method, path string
		body, out    any
	}{
		{http.MethodPost, "sys/mounts/secret", map[string]any{"type": "kv", "options": map[string]string{"version": "2"}}, nil},
		{http.MethodPost, "sys/mounts/pki", map[string]any{"type": "pki", "config": map[string]string{"max_lease_ttl": "87600h"}}, nil},
		{http.MethodPost, "pki/root/generate/internal", map[string]any{"common_name": "keyway localrun PKI root", "ttl": "87600h"}, nil},
		{http.MethodPut, "sys/policies/acl/keyway-secrets", map[string]any{"policy": secretsPolicy}, nil},
		{http.MethodPost, "sys/auth/approle", map[string]any{"type": "approle"}, nil},
		{http.MethodPost, "auth/approle/role/" + appRoleName, map[string]any{"token_policies": "keyway-secrets", "token_ttl": "1h", "token_max_ttl": "24h"}, nil},
		{http.MethodGet, "auth/approle/role/" + appRoleName + "/role-id", nil, &role},
		{http.MethodPost, "auth/approle/role/" + appRoleName + "/secret-id", map[string]any{}, &secret},
	} {
		if _, err := v.call(ctx, step.method, first, step.path, step.body, step.out); err != nil {
			return err
		}
	}
	if role.Data.RoleID == "" || secret.Data.SecretID == "" {
		return fmt.Errorf("vault: AppRole %s gave an empty role or secret ID", appRoleName)
	}
	c.secrets[appRoleSecret] = map[string][]byte{"role-id": []byte(role.Data.RoleID), "secret-id": []byte(secret.Data.SecretID)}
	for _, p := range pods[1:] {
		if err := unseal(p); err != nil {
			return err
		}
		c.logf("vault: %s joined and unsealed", p.name)
	}
	return nil
}

// poll asks cond every 200ms until it holds, ctx ends, or p's process has
// exited three times.
func poll(ctx context.Context, what string, p *Pod, cond func() bool) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	start := p.Restarts()
	for !cond() {
		if p.Restarts()-start >= 3 {
			return fmt.Errorf("waiting for %s: pod %s exited 3 times; the end of its log %s:\n%s", what, p.name, p.LogPath(), p.LogTail(20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w; the end of its log %s:\n%s", what, ctx.Err(), p.LogPath(), p.LogTail(20))
		case <-tick.C:
		}
	}
	return nil
}
