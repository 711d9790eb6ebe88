package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/tests/harness"
)

// Keys applied inline are moved into the secrets service; the nodes, given
// the reference, serve the very certificates that were applied: the
// binding's client certificate to the upstream, the Listener's server
// certificate to clients. get shows the reference and where the key went.
func TestInlineKeysAreServedFromTheSecretsService(t *testing.T) {
	w := newWorld(t)
	good := w.write(t, "good.yaml", w.manifest(w.upstreamCA.CertPEM(), w.gateway, ""))
	if stdout, stderr, code := w.ctl(t, "apply", "-f", good); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, stderr, code := w.ctl(t, "get", "policybinding", "orders-mtls", "-o", "yaml")
	if code != 0 {
		t.Fatalf("get: exit %d\n%s", code, stderr)
	}
	if strings.Contains(stdout, "PRIVATE KEY") || !strings.Contains(stdout, "keystore: keyway-inline") || !strings.Contains(stdout, "alias: pb-orders-mtls-") {
		t.Errorf("get -o yaml does not show the reference in place of the key:\n%s", stdout)
	}
	if !strings.Contains(stderr, `moved into the secrets service, keystore "keyway-inline" alias "pb-orders-mtls-`) {
		t.Errorf("get does not say where the key went:\n%s", stderr)
	}

	// A Listener with an inline server key, on a free port of every node.
	addr := harness.FreeAddr(t)
	server := w.upstreamCA.Server("gw.e2e")
	policy := policyv1connect.NewPolicyServiceClient(harness.Operator(t).HTTP, w.policyURL)
	if _, err := policy.Apply(context.Background(), connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{
		{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
			ApiVersion: "keyway.dev/v1alpha1", Kind: "Listener",
			Metadata: &policyv1.ObjectMeta{Name: "public"},
			Spec: &policyv1.ListenerSpec{Address: addr, Hosts: []*policyv1.ListenerHost{{
				Hostnames: []string{"gw.e2e"}, Default: true,
				Certificate: &policyv1.KeyPair{Crt: string(server.CertPEM), Key: string(server.KeyPEM)},
			}}},
		}}},
	}})); err != nil {
		t.Fatalf("applying the Listener: %v", err)
	}
	eventually(t, "a node serves the Listener's applied certificate", func() (bool, string) {
		d := &net.Dialer{Timeout: 2 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: "gw.e2e", RootCAs: w.upstreamCA.Pool()})
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close()
		leaf := conn.ConnectionState().PeerCertificates[0]
		if !bytes.Equal(leaf.Raw, server.Cert.Raw) {
			return false, fmt.Sprintf("served %s, want the applied %s", leaf.Subject, server.Cert.Subject)
		}
		return true, ""
	})
	// The upstream sees the binding's applied client certificate.
	eventually(t, "the upstream sees the applied client certificate", func() (bool, string) {
		code, body := get(t, w.proxies[0].URL+"/orders/1")
		return code == http.StatusOK && strings.Contains(string(body), w.gateway.Fingerprint()), fmt.Sprintf("%d %s", code, body)
	})
}
