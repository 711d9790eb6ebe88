package certs_test

import (
	"testing"
	"time"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/testca"
)

// TestSummaryAgreesWithCertificate: what a described certificate answers is
// what the certificate itself answers, so that references are judged as
// inline PEM is.
func TestSummaryAgreesWithCertificate(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	now := time.Now()
	for _, tc := range []struct {
		name string
		kp   *testca.KeyPair
		host string
	}{
		{"SAN", ca.Server("api.example.com"), "api.example.com"},
		{"CN only", ca.CNOnly("api.example.com"), "api.example.com"},
		{"CN only, other host", ca.CNOnly("api.example.com"), "www.example.com"},
		{"CN only, wildcard", ca.CNOnly("*.example.com"), "api.example.com"},
		{"expired", ca.Expired("old.example.com"), "old.example.com"},
		{"not yet valid", ca.NotYetValid("new.example.com"), "new.example.com"},
		{"RSA", ca.RSA("rsa.example.com", 2048), "rsa.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cert := tc.kp.Cert
			s := certs.Summarize(cert)
			if s.Fingerprint != certs.Fingerprint(cert) || s.Fingerprint != tc.kp.Fingerprint() {
				t.Errorf("Fingerprint = %s, want %s", s.Fingerprint, tc.kp.Fingerprint())
			}
			if got, want := s.CommonNameCovers(tc.host), certs.CommonNameCovers(cert, tc.host); got != want {
				t.Errorf("CommonNameCovers(%q) = %v, the certificate says %v", tc.host, got, want)
			}
			if got, want := s.ValidityProblem(now), certs.ValidityProblem(cert, now); got != want {
				t.Errorf("ValidityProblem = %q, the certificate says %q", got, want)
			}
			if s.KeyType != certs.KeyType(cert.PublicKey) || s.V1Root || s.IsCA {
				t.Errorf("summary %+v", s)
			}
		})
	}
	if s := certs.Summarize(ca.Cert); !s.IsCA || s.KeyType != "ECDSA P-256" {
		t.Errorf("CA summary %+v, want a CA with an ECDSA P-256 key", s)
	}
}
