package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// VaultToken is the root token of the dev stack's Vault dev server.
const VaultToken = "keyway-dev-root" //nolint:gosec // the local Vault dev server's root token, documented; never used outside keyway-dev

// VaultPKIRole is the PKI role the dev stack creates: any name, client and
// server certificates, up to 30 days.
const VaultPKIRole = "keyway-dev"

// vaultBinary is the Vault binary to run: the flag's, $KEYWAY_VAULT, or
// what scripts/tool.sh vault prints (it builds Vault into the cache the
// first time: about 20 minutes).
func vaultBinary(flag string, out io.Writer) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if p := os.Getenv("KEYWAY_VAULT"); p != "" {
		return p, nil
	}
	tool := filepath.Join("scripts", "tool.sh")
	if _, err := os.Stat(tool); err != nil {
		return "", fmt.Errorf("no Vault binary: give --vault-bin, set KEYWAY_VAULT, or run from the repository root (scripts/tool.sh vault builds it)")
	}
	fmt.Fprintln(out, "finding Vault with scripts/tool.sh vault (the first time it builds Vault: about 20 minutes, 5 GB of memory)")
	cmd := exec.Command(tool, "vault")
	cmd.Stderr = out
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/tool.sh vault: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// setUpVault waits for the dev server at addr and mounts PKI with a root CA
// and the role VaultPKIRole. A dev server keeps nothing between runs.
func setUpVault(ctx context.Context, addr string) error {
	if err := waitHTTP(ctx, http.DefaultClient, addr+"/v1/sys/health"); err != nil {
		return fmt.Errorf("waiting for Vault: %w", err)
	}
	for _, w := range []struct {
		path string
		body map[string]any
	}{
		{"sys/mounts/pki", map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"}}},
		{"pki/root/generate/internal", map[string]any{"common_name": "Keyway dev Vault PKI root", "ttl": "87600h", "key_type": "ec", "key_bits": 256}},
		{"pki/roles/" + VaultPKIRole, map[string]any{"allow_any_name": true, "enforce_hostnames": false, "client_flag": true, "server_flag": true,
			"key_type": "ec", "key_bits": 256, "max_ttl": "720h"}},
	} {
		if err := vaultWrite(ctx, addr, w.path, w.body); err != nil {
			return err
		}
	}
	return nil
}

func vaultWrite(ctx context.Context, addr, path string, body map[string]any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, addr+"/v1/"+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", VaultToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("vault write %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("vault write %s: %s: %s", path, resp.Status, msg)
	}
	return nil
}
