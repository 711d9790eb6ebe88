package validate

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/testca"
	"keyway.dev/secrets/internal/secret"
)

func TestAlias(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "validate CA")
	other := testca.New(t, "other CA")
	good := ca.Client("gw")
	server := ca.Server("orders.internal")
	mismatched := other.Client("gw")
	rsa1024 := ca.RSA("weak", 1024)
	rsa2048 := ca.RSA("strong", 2048)
	expired := ca.Expired("old")
	cnOnly := ca.CNOnly("apigee-gw")
	now := time.Now()

	pem := func(kp *testca.KeyPair) (string, string) { return string(kp.CertPEM), string(kp.KeyPEM) }
	req := func(kp *testca.KeyPair, usage secretsv1.Usage) *secretsv1.PutAliasRequest {
		c, k := pem(kp)
		return &secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: c, PrivateKeyPem: k, Usage: usage}
	}
	mismatch := req(good, 0)
	mismatch.PrivateKeyPem = string(mismatched.KeyPEM)

	tests := []struct {
		name      string
		req       *secretsv1.PutAliasRequest
		pki       bool
		wantField string // "" when accepted
		wantText  string
	}{
		{"client certificate", req(good, secretsv1.Usage_USAGE_CLIENT), false, "", ""},
		{"server certificate with SAN", req(server, secretsv1.Usage_USAGE_SERVER), false, "", ""},
		{"RSA 2048", req(rsa2048, 0), false, "", ""},
		{"CN-only client certificate accepted", req(cnOnly, secretsv1.Usage_USAGE_CLIENT), false, "", ""},
		{"CN-only certificate with usage unspecified is a client certificate", req(cnOnly, 0), false, "", ""},
		{"mismatched key", mismatch, false, "private_key_pem", "does not match the certificate"},
		{"RSA 1024", req(rsa1024, 0), false, "private_key_pem", "1024 bits"},
		{"expired", req(expired, 0), false, "certificate_pem", "expired at"},
		{"server usage without SAN", req(cnOnly, secretsv1.Usage_USAGE_SERVER), false, "", ""},
		{"bad keystore name", &secretsv1.PutAliasRequest{Keystore: "a.b", Alias: "gw", CertificatePem: string(good.CertPEM), PrivateKeyPem: string(good.KeyPEM)}, false, "keystore", "letters, digits"},
		{"nothing given", &secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw"}, false, "certificate_pem", "or pki"},
		{"key in the certificate field", &secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(good.KeyPEM), PrivateKeyPem: string(good.KeyPEM)}, false, "certificate_pem", "private key"},
		{"pki", &secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", Pki: &secretsv1.PKISpec{Role: "gw", CommonName: "gw.example.com", Ttl: durationpb.New(time.Hour)}}, true, "", ""},
		{"pki without vault", &secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", Pki: &secretsv1.PKISpec{Role: "gw", CommonName: "gw"}}, false, "pki", "--backend vault"},
		{"pki without role", &secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", Pki: &secretsv1.PKISpec{CommonName: "gw"}}, true, "pki.role", "required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := Alias(tc.req, tc.pki, now)
			if tc.wantField == "" {
				if !r.OK() {
					t.Fatalf("refused: %+v", r.Errors)
				}
				if tc.name == "server usage without SAN" && !slices.ContainsFunc(r.Warnings, func(w string) bool {
					return strings.Contains(w, "browsers (Chrome, Firefox, Safari) and Go clients refuse it")
				}) {
					t.Errorf("a CN-only server certificate is stored without the warning naming the clients that refuse it: %q", r.Warnings)
				}
				return
			}
			for _, v := range r.Errors {
				if v.Field == tc.wantField && strings.Contains(v.Message, tc.wantText) {
					return
				}
			}
			t.Fatalf("want a violation of %s containing %q; got %+v", tc.wantField, tc.wantText, r.Errors)
		})
	}
}

func TestTruststore(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "root")
	leaf := ca.Client("leaf")
	now := time.Now()
	if r := Truststore(&secretsv1.PutTruststoreRequest{Name: "cas", CertificatesPem: string(ca.CertPEM())}, now); !r.OK() || len(r.Warnings) != 0 {
		t.Errorf("CA refused or warned: %+v %v", r.Errors, r.Warnings)
	}
	if r := Truststore(&secretsv1.PutTruststoreRequest{Name: "cas", CertificatesPem: string(leaf.CertPEM)}, now); !r.OK() || len(r.Warnings) != 1 {
		t.Errorf("a leaf should be accepted with one warning: %+v %v", r.Errors, r.Warnings)
	}
	if r := Truststore(&secretsv1.PutTruststoreRequest{Name: "cas", CertificatesPem: "junk"}, now); r.OK() || r.Errors[0].Field != "certificates_pem" {
		t.Errorf("junk accepted: %+v", r.Errors)
	}
}

// Values a backend holds are checked with the rules of a put, named by
// the backend's fields, and classed by reason; the first reason is the
// most fundamental problem.
func TestStoredValuesAreClassed(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "stored CA")
	good := ca.Client("gw")
	weak := ca.RSA("weak", 1024)
	expired := ca.Expired("old")
	future := ca.NotYetValid("new")
	other := ca.Client("other")
	vault := secret.Fields{Certificate: "the certificate field", Key: "the private_key field", Bundle: "the certificates field"}
	now := time.Now()
	for _, tc := range []struct {
		name       string
		cert, key  string
		reason     Reason
		wantPhrase string
	}{
		{"good", string(good.CertPEM), string(good.KeyPEM), "", ""},
		{"key mismatch", string(good.CertPEM), string(other.KeyPEM), ReasonKeyMismatch, `the private_key field does not match the certificate "CN=gw" (the first one in the certificate field)`},
		{"RSA 1024", string(weak.CertPEM), string(weak.KeyPEM), ReasonWeakKey, "the RSA key is 1024 bits"},
		{"expired", string(expired.CertPEM), string(expired.KeyPEM), ReasonExpired, "expired at"},
		{"not yet valid", string(future.CertPEM), string(future.KeyPEM), ReasonNotYetValid, "is not valid until"},
		{"garbage certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", string(good.KeyPEM), ReasonUnparsable, "the certificate field certificate 1 does not parse"},
		{"garbage key", string(good.CertPEM), "junk", ReasonUnparsable, "the private_key field"},
		{"no key", string(good.CertPEM), "", ReasonMissingField, "the private_key field is empty"},
		{"no certificate", "", string(good.KeyPEM), ReasonMissingField, "the certificate field is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := KeyPair(vault, tc.cert, tc.key, secretsv1.Usage_USAGE_CLIENT, now)
			if r.Reason() != tc.reason {
				t.Fatalf("reason %q, want %q; errors %+v", r.Reason(), tc.reason, r.Errors)
			}
			if tc.reason != "" && !strings.Contains(r.Errors[0].Message, tc.wantPhrase) {
				t.Errorf("first error %q lacks %q", r.Errors[0].Message, tc.wantPhrase)
			}
		})
	}
	if r := Bundle(vault.Bundle, string(ca.CertPEM()), now); !r.OK() {
		t.Errorf("a CA bundle refused: %+v", r.Errors)
	}
	if r := Bundle(vault.Bundle, "not PEM", now); r.Reason() != ReasonUnparsable || !strings.HasPrefix(r.Errors[0].Message, "the certificates field is not PEM") {
		t.Errorf("junk bundle: %+v", r.Errors)
	}
	if r := Bundle(vault.Bundle, string(expired.CertPEM), now); r.Reason() != ReasonExpired {
		t.Errorf("expired bundle: %+v", r.Errors)
	}
}
