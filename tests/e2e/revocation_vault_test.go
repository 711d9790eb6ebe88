package e2e

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"keyway.dev/internal/vaulttest"
	"keyway.dev/tests/harness"
)

// A client certificate issued by Vault PKI and revoked with `vault write
// pki/revoke`: the Listener host names no CRL, and finds Vault's from the
// CRL distribution point Vault writes into every certificate it issues
// (pki/config/urls). Once the node holds the list Vault rebuilt at the
// revocation, the next request on the client's open connection gets 401
// revoked, and a connection that resumes the client's saved TLS session is
// refused at its handshake.
func TestVaultPKIRevokedClientCertificateRefused(t *testing.T) {
	vault := harness.Vault(t, true)
	vault.Write("pki/config/urls", map[string]any{"crl_distribution_points": []string{vault.Addr + "/v1/pki/crl"}})
	vault.Role("clients", time.Hour)
	ca, err := vault.Do(t.Context(), http.MethodGet, "pki/cert/ca", nil)
	if err != nil {
		t.Fatal(err)
	}
	vaultCA, _ := ca["certificate"].(string)
	if !strings.Contains(vaultCA, "BEGIN CERTIFICATE") {
		t.Fatalf("pki/cert/ca: no certificate in %v", ca)
	}
	issue := func(name string) (tls.Certificate, string) {
		t.Helper()
		d := vault.Write("pki/issue/clients", map[string]any{"common_name": name, "ttl": "1h"})
		crt, _ := d["certificate"].(string)
		key, _ := d["private_key"].(string)
		serial, _ := d["serial_number"].(string)
		kp, err := tls.X509KeyPair([]byte(crt), []byte(key))
		if err != nil || serial == "" {
			t.Fatalf("pki/issue/clients %s: %v (serial %q)", name, err, serial)
		}
		if len(kp.Leaf.CRLDistributionPoints) != 1 {
			t.Fatalf("the certificate Vault issued names the CRL distribution points %v, want the mount's CRL", kp.Leaf.CRLDistributionPoints)
		}
		return kp, serial
	}

	w := newWorldEnv(t, revocationEnv, 1)
	px := w.proxies[0]
	server := w.upstreamCA.Server("vault.e2e")
	addr := harness.FreeAddr(t)
	listener := fmt.Sprintf(`---
apiVersion: keyway.dev/v1alpha1
kind: Listener
metadata:
  name: edge
spec:
  address: %s
  hosts:
    - hostnames: [vault.e2e]
      certificate:
        crt: |
%s        key: |
%s      clientAuth: require-and-verify
      clientCAs: |
%s      revocation:
        mode: hard-fail
`, addr, indentPEM(server.CertPEM, "          "), indentPEM(server.KeyPEM, "          "), indentPEM([]byte(vaultCA), "        "))
	m := w.write(t, "revocation-vault.yaml", w.manifest(w.upstreamCA.CertPEM(), w.gateway, "")+listener)
	if out, errOut, code := w.ctl(t, "apply", "-f", m, "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}

	alice, serial := issue("alice")
	bob, _ := issue("bob")
	var didResume atomic.Bool
	client := func(kp tls.Certificate, keepAlive bool, sessions tls.ClientSessionCache) *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: !keepAlive,
			TLSClientConfig: &tls.Config{RootCAs: w.upstreamCA.Pool(), ServerName: "vault.e2e",
				Certificates: []tls.Certificate{kp}, ClientSessionCache: sessions,
				VerifyConnection: func(cs tls.ConnectionState) error { didResume.Store(cs.DidResume); return nil }},
		}}
	}
	sessions := tls.NewLRUClientSessionCache(4)
	keep := client(alice, true, sessions)
	if code, reason, _ := call(t, keep, addr); code != http.StatusOK {
		t.Fatalf("before the revocation: %d %s", code, reason)
	}
	// The distribution point is fetched at the first handshake that
	// needs it: the node now holds Vault's CRL, with nothing revoked.
	waitMetric(t, px, `keyway_revocation_crls{state="current"}`, 1)
	resumed := client(alice, false, sessions)
	if code, _, _ := call(t, resumed, addr); code != http.StatusOK || !didResume.Load() {
		t.Fatalf("a second connection before the revocation: %d (resumed %v), want 200 on a resumed session", code, didResume.Load())
	}

	cmd := exec.Command(vaulttest.Binary(t), "write", "pki/revoke", "serial_number="+serial)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+vault.Addr, "VAULT_TOKEN="+vault.Token)
	revoked := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vault write pki/revoke serial_number=%s: %v\n%s", serial, err, out)
	}
	waitMetric(t, px, "keyway_revocation_crl_revoked_entries", 1)
	seen := time.Since(revoked)
	code, reason, reused := call(t, keep, addr)
	refused := time.Since(revoked)
	if code != http.StatusUnauthorized || reason != "revoked" || !reused {
		t.Fatalf("next request on the open connection after vault write pki/revoke: %d %q (reused %v), want 401 revoked on the same connection", code, reason, reused)
	}
	t.Logf("vault write pki/revoke returned; the node held Vault's new CRL %v later, and refused the next request on the open connection %v later",
		seen.Round(time.Millisecond), refused.Round(time.Millisecond))

	if code, _, _, err := try(resumed, addr); err == nil {
		t.Errorf("a connection resuming the revoked client's TLS session: %d, want the handshake refused", code)
	}
	if code, _, _ := call(t, client(bob, false, nil), addr); code != http.StatusOK {
		t.Errorf("a client Vault did not revoke: %d, want 200", code)
	}
	waitMetric(t, px, `keyway_inbound_handshakes_total{listener="edge",reason="revoked",result="error"}`, 1)
}
