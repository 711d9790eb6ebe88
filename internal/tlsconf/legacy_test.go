package tlsconf_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/tlsconf"
)

// handshake connects to addr with a connection of base (tlsconf.Outbound
// of o) and completes the TLS handshake, returning the failure's reason
// and detail as a Dialer classifies them ("" when it succeeded).
func handshake(t *testing.T, base *tls.Config, o *model.OutboundTLS, addr string) (failure.Reason, string) {
	t.Helper()
	return handshakeChecked(t, base, o, addr, nil)
}

// handshakeChecked is handshake with revoked as the revocation check.
func handshakeChecked(t *testing.T, base *tls.Config, o *model.OutboundTLS, addr string, revoked tlsconf.RevocationCheck) (failure.Reason, string) {
	t.Helper()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	facts := &failure.HandshakeFacts{Phase: failure.PhaseHandshake, ServerName: tlsconf.OutboundServerName(o, host)}
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, tlsconf.OutboundConn(base, o, facts, revoked))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = tc.HandshakeContext(ctx)
	tc.Close()
	if err == nil {
		return "", ""
	}
	dg := failure.Diagnose(err, *facts)
	return dg.Reason, dg.Detail
}

// TestLegacyCommonName: with the opt-in, a certificate without SANs (what
// `openssl req -subj /CN=…` makes, as the cloud backend guide does) is
// matched by its CN, and everything else is still verified; without it,
// the typed reason stays legacy_common_name.
func TestLegacyCommonName(t *testing.T) {
	ca := testca.New(t, "backend CA")
	other := testca.New(t, "another CA")
	cnOnly := ca.CNOnly("api.example.com")
	wildcard := ca.CNOnly("*.example.com")
	withSAN := ca.Issue(testca.Options{CommonName: "api.example.com", DNSNames: []string{"other.example.com"}})
	expired := ca.Issue(testca.Options{CommonName: "api.example.com", NoSAN: true, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	foreign := other.CNOnly("api.example.com")
	clientOnly := ca.Issue(testca.Options{CommonName: "api.example.com", NoSAN: true, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	for _, tc := range []struct {
		name   string
		cert   *testca.KeyPair
		legacy bool
		sni    string
		sans   []string
		want   failure.Reason // "" for success
	}{
		{"no opt-in: CN-only refused", cnOnly, false, "api.example.com", nil, failure.LegacyCommonName},
		{"opt-in: CN matches", cnOnly, true, "api.example.com", nil, ""},
		{"opt-in: CN matches case-insensitively", cnOnly, true, "API.Example.com", nil, ""},
		{"opt-in: wildcard CN covers one label", wildcard, true, "api.example.com", nil, ""},
		{"opt-in: wildcard CN does not cover two labels", wildcard, true, "a.b.example.com", nil, failure.SANMismatch},
		{"opt-in: CN does not match", cnOnly, true, "orders.example.com", nil, failure.SANMismatch},
		{"opt-in: a DNS SAN wins over the CN", withSAN, true, "api.example.com", nil, failure.SANMismatch},
		{"opt-in: unknown CA still refused", foreign, true, "api.example.com", nil, failure.UnknownAuthority},
		{"opt-in: expired still refused", expired, true, "api.example.com", nil, failure.Expired},
		{"opt-in: client-only key usage still refused", clientOnly, true, "api.example.com", nil, failure.InvalidCertificate},
		{"opt-in: subjectAltNames rule met by the CN", cnOnly, true, "api.example.com", []string{"api.example.com"}, ""},
		{"opt-in: subjectAltNames rule not met", cnOnly, true, "api.example.com", []string{"billing.example.com"}, failure.SANMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := testca.ServeTLS(t, tc.cert)
			ctx := &model.OutboundTLS{
				TrustedCAs: []*x509.Certificate{ca.Cert}, SNI: tc.sni, SubjectAltNames: tc.sans,
				LegacyCommonName: tc.legacy, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13,
				ALPN: []string{"http/1.1"},
			}
			base, err := tlsconf.Outbound("backend", ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			// Twice: the second handshake may resume the first's session,
			// and a resumed session must be verified as strictly.
			for i := range 2 {
				reason, detail := handshake(t, base, ctx, addr)
				switch {
				case tc.want == "" && reason != "":
					t.Fatalf("handshake %d: %s: %s", i, reason, detail)
				case tc.want != "" && reason == "":
					t.Fatalf("handshake %d succeeded, want %s", i, tc.want)
				case reason != tc.want:
					t.Fatalf("handshake %d: reason %s (%s), want %s", i, reason, detail, tc.want)
				}
			}
		})
	}
}

// TestUnexpandedVariableInCommonName: Apigee's mTLS guide makes the
// backend's certificate with -subj '/CN=${SERVER_HOST}', in single quotes,
// so its Common Name is "${SERVER_HOST}" as written. The failure says so,
// with or without the opt-in, instead of only that the names differ.
func TestUnexpandedVariableInCommonName(t *testing.T) {
	ca := testca.New(t, "my-ca")
	addr := testca.ServeTLS(t, ca.CNOnly("${SERVER_HOST}"))
	for _, tc := range []struct {
		legacy bool
		want   failure.Reason
	}{{false, failure.LegacyCommonName}, {true, failure.SANMismatch}} {
		ctx := &model.OutboundTLS{
			TrustedCAs: []*x509.Certificate{ca.Cert}, SNI: "localhost", LegacyCommonName: tc.legacy,
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, ALPN: []string{"http/1.1"},
		}
		base, err := tlsconf.Outbound("backend", ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		reason, detail := handshake(t, base, ctx, addr)
		if reason == "" {
			t.Fatalf("legacy %v: handshake succeeded", tc.legacy)
		}
		const hint = `Its Common Name "${SERVER_HOST}" is a shell variable that was never expanded: the openssl command that made it quoted -subj in single quotes`
		if reason != tc.want || !strings.Contains(detail, hint) {
			t.Errorf("legacy %v: %s: %s; want %s saying %q", tc.legacy, reason, detail, tc.want, hint)
		}
	}
}
