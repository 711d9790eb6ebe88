package server_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/material"
	"keyway.dev/internal/material/materialtest"
	"keyway.dev/internal/testca"
	"keyway.dev/policy/internal/app"
)

func refConfig(keystore, alias, truststore string) map[string]any {
	return map[string]any{
		"skipValidation": false,
		"trustedCA":      map[string]any{"truststore": truststore},
		"certificate":    map[string]any{"keystore": keystore, "alias": alias},
		"sni":            "orders.internal",
	}
}

// withSecrets points the policy service at a fake secrets service; with
// internal, the live probe fetches material over mTLS with a certificate
// from the internal CA, written to files as an operator would.
func withSecrets(t *testing.T, f *materialtest.Fake, internal bool) func(*app.Config) {
	return func(c *app.Config) {
		c.SecretsServer = f.APIURL
		if !internal {
			return
		}
		dir := t.TempDir()
		kp := f.Internal.Client("keyway-policy")
		files := map[string][]byte{"client.crt": kp.CertPEM, "client.key": kp.KeyPEM, "ca.crt": f.Internal.CertPEM()}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		c.Material = material.Config{URL: f.InternalURL, CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key"), CAFile: filepath.Join(dir, "ca.crt")}
	}
}

func messages(t *testing.T, err error) string {
	t.Helper()
	var b strings.Builder
	for _, v := range violations(t, err) {
		b.WriteString(v.GetField() + ": " + v.GetDescription() + "\n")
	}
	return b.String()
}

func TestApplyWithoutSecretsServiceRefusesReferences(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	_, err := apply(context.Background(), s.connect, false, service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", refConfig("edge", "gw", "upstream-cas")))
	got := messages(t, err)
	for _, want := range []string{
		"resources[1].policyBinding.spec.config.certificate: keystore \"edge\" alias \"gw\" refers to the secrets service, but this policy service has no secrets service configured; start keyway-policy with --secrets-server",
		"resources[1].policyBinding.spec.config.trustedCA.truststore: truststore \"upstream-cas\" refers to the secrets service",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

// withRealSecrets starts the real keyway-secrets on the stack's NATS and
// points the policy service at it, with a client certificate for the
// internal port.
func withRealSecrets(t *testing.T, svc **materialtest.Service) func(*app.Config) {
	return func(c *app.Config) {
		*svc = materialtest.StartService(t, c.NATSURL)
		c.SecretsServer = (*svc).APIURL
		c.Material = (*svc).ClientFiles(t, t.TempDir(), "keyway-policy")
	}
}

// withKeyStore starts the real keyway-secrets for a stack whose tests apply
// inline private keys: they are moved into it at apply.
func withKeyStore(t *testing.T) func(*app.Config) {
	var svc *materialtest.Service
	return withRealSecrets(t, &svc)
}

// The real secrets service behind the policy service: references are
// checked against what it holds, probed with the material it hands out, and
// refused while it is down.
func TestApplyChecksReferences(t *testing.T) {
	t.Parallel()
	var f *materialtest.Service
	s := startStack(t, withRealSecrets(t, &f))
	ca := testca.New(t, "upstream CA")
	gateway := ca.Client("keyway-gateway")
	f.PutAlias(t, "edge", "gw", gateway, secretsv1.Usage_USAGE_CLIENT)
	f.PutAlias(t, "edge", "old", ca.Client("keyway-gateway-old"), secretsv1.Usage_USAGE_CLIENT)
	f.PutTruststore(t, "upstream-cas", ca)
	upstream := mtlsUpstream(t, ca.Server("orders.internal"), ca, tls.VersionTLS13)
	ctx := context.Background()

	t.Run("missing alias and truststore are named", func(t *testing.T) {
		_, err := apply(ctx, s.connect, false, service("orders", upstream), binding(t, "orders-mtls", "orders", refConfig("edge", "gateway", "upstream-ca")))
		got := messages(t, err)
		for _, want := range []string{
			`resources[1].policyBinding.spec.config.certificate.alias: alias "gateway" does not exist in keystore "edge" (aliases there: "gw", "old")`,
			`resources[1].policyBinding.spec.config.trustedCA.truststore: truststore "upstream-ca" does not exist in the secrets service (did you mean "upstream-cas"?`,
		} {
			if !strings.Contains(got, want) {
				t.Errorf("missing %q in:\n%s", want, got)
			}
		}
	})
	t.Run("missing keystore", func(t *testing.T) {
		_, err := apply(ctx, s.connect, false, service("orders", upstream), binding(t, "orders-mtls", "orders", refConfig("edg", "gw", "upstream-cas")))
		if got := messages(t, err); !strings.Contains(got, `keystore "edg" does not exist in the secrets service (did you mean "edge"?`) {
			t.Errorf("got:\n%s", got)
		}
	})
	t.Run("valid references are probed with fetched material and report certificates", func(t *testing.T) {
		resp, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{
			Resources: []*policyv1.Resource{service("orders", upstream), binding(t, "orders-mtls", "orders", refConfig("edge", "gw", "upstream-cas"))},
			Probe:     policyv1.ProbeMode_PROBE_MODE_ON,
		}))
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		r := resp.Msg.Results[1]
		if len(r.Probes) != 1 || !r.Probes[0].Ok || !r.Probes[0].ClientCertificateSent {
			t.Errorf("probe %+v, want a handshake that sent the alias's certificate", r.Probes)
		}
		var alias, store bool
		for _, c := range r.Certificates {
			switch c.Field {
			case "resources[1].policyBinding.spec.config.certificate.alias":
				alias = c.Sha256Fingerprint == gateway.Fingerprint() && c.NotAfter.AsTime().Equal(gateway.Cert.NotAfter) && strings.Contains(c.Subject, "keyway-gateway")
			case "resources[1].policyBinding.spec.config.trustedCA.truststore":
				store = strings.Contains(c.Subject, "upstream CA")
			}
		}
		if !alias || !store {
			t.Errorf("certificate infos %v: want the alias's leaf and the truststore's CA", r.Certificates)
		}
	})
	t.Run("secrets service unreachable", func(t *testing.T) {
		f.Stop()
		defer f.Start(t)
		_, err := apply(ctx, s.connect, false, service("orders", upstream), binding(t, "orders-mtls", "orders", refConfig("edge", "gw", "upstream-cas")))
		if got := messages(t, err); !strings.Contains(got, `keystore "edge" alias "gw" cannot be checked: the secrets service did not answer`) {
			t.Errorf("got:\n%s", got)
		}
	})
}

// The real service refuses to store an expired certificate, so an alias that
// expired after it was stored is set up in the fake.
func TestApplyRefusesExpiredAlias(t *testing.T) {
	t.Parallel()
	f := materialtest.Start(t)
	s := startStack(t, withSecrets(t, f, true))
	ca := testca.New(t, "upstream CA")
	f.PutAlias("edge", "old", ca.Expired("keyway-gateway"))
	f.PutTruststore("upstream-cas", ca.Cert)
	_, err := apply(context.Background(), s.connect, false, service("orders", "127.0.0.1:9"), binding(t, "orders-mtls", "orders", refConfig("edge", "old", "upstream-cas")))
	if got := messages(t, err); !strings.Contains(got, `resources[1].policyBinding.spec.config.certificate.alias: keystore "edge" alias "old": the client certificate ("CN=keyway-gateway") expired at`) {
		t.Errorf("got:\n%s", got)
	}
}

func TestProbeSkipsReferencesWithoutInternalPort(t *testing.T) {
	t.Parallel()
	f := materialtest.Start(t)
	s := startStack(t, withSecrets(t, f, false))
	ca := testca.New(t, "upstream CA")
	f.PutAlias("edge", "gw", ca.Client("keyway-gateway"))
	f.PutTruststore("upstream-cas", ca.Cert)
	resp, err := apply(context.Background(), s.connect, true, service("orders", "127.0.0.1:9"), binding(t, "orders-mtls", "orders", refConfig("edge", "gw", "upstream-cas")))
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	r := resp.Results[1]
	if len(r.Probes) != 0 {
		t.Errorf("probed without material: %v", r.Probes)
	}
	found := false
	for _, w := range r.Warnings {
		found = found || strings.Contains(w.Message, "live probe skipped: the binding references the secrets service")
	}
	if !found {
		t.Errorf("no warning that the probe was skipped: %v", r.Warnings)
	}
}
