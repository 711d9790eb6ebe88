package server_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/testca"
)

// mtlsUpstream serves TLS with cert, demanding client certificates issued by
// clientCA, capped at maxVersion.
func mtlsUpstream(t *testing.T, cert *testca.KeyPair, clientCA *testca.CA, maxVersion uint16) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCA.Pool(),
		MaxVersion:   maxVersion,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestLiveProbe(t *testing.T) {
	t.Parallel()
	s := startStack(t, withKeyStore(t))
	ca := testca.New(t, "upstream CA")
	gateway := ca.Client("keyway-gateway")
	good := mtlsUpstream(t, ca.Server("orders.internal"), ca, tls.VersionTLS13)
	cnOnly := mtlsUpstream(t, ca.CNOnly("orders.internal"), ca, tls.VersionTLS13)
	tls12 := mtlsUpstream(t, ca.Server("orders.internal"), ca, tls.VersionTLS12)

	config := func(trusted *testca.CA, client *testca.KeyPair) map[string]any {
		c := map[string]any{"skipValidation": false, "trustedCA": string(trusted.CertPEM()), "sni": "orders.internal"}
		if client != nil {
			c["certificate"] = map[string]any{"key": string(client.KeyPEM), "crt": string(client.CertPEM)}
		}
		return c
	}
	validate := func(addr string, cfg map[string]any) (*policyv1.ApplyResponse, error) {
		resp, err := s.connect.Apply(context.Background(), connect.NewRequest(&policyv1.ApplyRequest{
			Resources: []*policyv1.Resource{service("orders", addr), binding(t, "orders-mtls", "orders", cfg)},
			DryRun:    true, // probes by default
		}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}

	t.Run("ok reports what was negotiated", func(t *testing.T) {
		resp, err := validate(good, config(ca, gateway))
		if err != nil {
			t.Fatalf("validate: %v", err)
		}
		probes := resp.Results[1].Probes
		if len(probes) != 1 {
			t.Fatalf("%d probe results, want 1", len(probes))
		}
		p := probes[0]
		if !p.Ok || p.TlsVersion != "TLS 1.3" || p.ServerName != "orders.internal" || !p.ClientCertificateRequested || !p.ClientCertificateSent {
			t.Errorf("probe: %+v", p)
		}
		if p.PeerCertificate.GetNotAfter() == nil || !strings.Contains(p.PeerCertificate.GetSubject(), "orders.internal") {
			t.Errorf("probe peer certificate: %+v", p.PeerCertificate)
		}
	})

	for _, tc := range []struct {
		name   string
		addr   string
		config map[string]any
		want   []string
	}{
		{"wrong trusted CA", good, config(testca.New(t, "other CA"), gateway), []string{"unknown_authority"}},
		{"CN-only upstream certificate", cnOnly, config(ca, gateway), []string{"legacy_common_name", `subjectAltName=DNS:orders.internal`}},
		{"no client certificate, TLS 1.3", good, config(ca, nil), []string{"no_client_certificate"}},
		{"no client certificate, TLS 1.2", tls12, config(ca, nil), []string{"no_client_certificate"}},
		{"client certificate from another CA", good, config(ca, testca.New(t, "rogue CA").Client("gw")), []string{"client_certificate_rejected"}},
		{"versions do not meet", tls12, func() map[string]any { c := config(ca, gateway); c["minversion"] = "1.3"; return c }(), []string{"protocol_version"}},
		{"SNI not in the upstream's SANs", good, func() map[string]any { c := config(ca, gateway); c["sni"] = "billing.internal"; return c }(), []string{"san_mismatch"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := validate(tc.addr, tc.config)
			vs := violations(t, err)
			if len(vs) != 1 || vs[0].Field != "resources[1].policyBinding.spec.config" {
				t.Fatalf("violations %v, want one at the binding's config", vs)
			}
			for _, w := range tc.want {
				if !strings.Contains(vs[0].Description, w) {
					t.Errorf("violation %q lacks %q", vs[0].Description, w)
				}
			}
		})
	}

	// An API client that leaves probe unset keeps what it always had: its
	// applies store without a probe (keywayctl sends PROBE_MODE_ON).
	t.Run("apply probes only when asked", func(t *testing.T) {
		bad := []*policyv1.Resource{service("orders", good), binding(t, "orders-mtls", "orders", config(testca.New(t, "other CA"), gateway))}
		_, err := s.connect.Apply(context.Background(), connect.NewRequest(&policyv1.ApplyRequest{Resources: bad, Probe: policyv1.ProbeMode_PROBE_MODE_ON}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("apply with probe on: %v, want InvalidArgument", err)
		}
		if _, err := s.connect.Get(context.Background(), connect.NewRequest(&policyv1.GetRequest{Kind: "service", Name: "orders"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("a probe-refused apply stored the service: %v", err)
		}
		if _, err := apply(context.Background(), s.connect, false, bad...); err != nil {
			t.Fatalf("apply without probe: %v", err)
		}
	})
}
