// Package validate checks what callers put into the secrets service: an
// alias (a certificate chain and its key, or a PKI binding) or a truststore.
// It reports every problem at once, each as a field violation that names the
// field of the request and the fix; warnings do not block.
//
// The same rules hold for values written straight into the backend (with
// `vault kv put`, or by editing the local directory): [KeyPair] and
// [Bundle] check them under the backend's field names, and each violation
// carries a [Reason] class that the API and the metrics report.
package validate

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/limits"
	"keyway.dev/internal/secretref"
	"keyway.dev/secrets/internal/secret"
)

// MinRSABits is the smallest RSA key accepted.
const MinRSABits = 2048

// Reason classes a violation of a key pair or a CA bundle. The set is
// closed (the constants below), so that it can label a metric.
type Reason string

// Reasons.
const (
	// ReasonKeyMismatch: the private key is not the certificate's.
	ReasonKeyMismatch Reason = "key_mismatch"
	// ReasonWeakKey: an RSA key under MinRSABits.
	ReasonWeakKey Reason = "weak_key"
	// ReasonExpired: a certificate past its notAfter.
	ReasonExpired Reason = "expired"
	// ReasonNotYetValid: a certificate before its notBefore.
	ReasonNotYetValid Reason = "not_yet_valid"
	// ReasonUnparsable: PEM or DER that does not parse, or the wrong
	// kind of block.
	ReasonUnparsable Reason = "unparsable"
	// ReasonMissingField: a part of the secret is absent.
	ReasonMissingField Reason = "missing_field"
	// ReasonUsage: the certificate's extended key usage does not allow
	// the alias's usage.
	ReasonUsage Reason = "usage"
	// ReasonChain: the chain is out of order or not signed through.
	ReasonChain Reason = "chain"
	// ReasonPKI: Vault PKI refused to issue for a stored binding.
	ReasonPKI Reason = "pki"
	// ReasonInvalid: any other rule of a request (names, sizes).
	ReasonInvalid Reason = "invalid"
)

// Reasons lists every reason class.
var Reasons = []Reason{ReasonKeyMismatch, ReasonWeakKey, ReasonExpired, ReasonNotYetValid, ReasonUnparsable,
	ReasonMissingField, ReasonUsage, ReasonChain, ReasonPKI, ReasonInvalid}

// Violation is one problem with one field of a request.
type Violation struct {
	// Field is the request field, as in the proto ("certificate_pem",
	// "pki.role"), or the backend's field for a stored value.
	Field string
	// Reason classes the problem.
	Reason Reason
	// Message says what is wrong and how to fix it.
	Message string
}

// Report is the outcome of a check.
type Report struct {
	Errors   []Violation
	Warnings []string
	// Chain is the parsed chain (leaf first) or CA bundle, when it parsed.
	Chain []*x509.Certificate
}

// OK reports whether nothing blocks.
func (r *Report) OK() bool { return len(r.Errors) == 0 }

func (r *Report) errorf(field string, reason Reason, format string, args ...any) {
	r.Errors = append(r.Errors, Violation{Field: field, Reason: reason, Message: fmt.Sprintf(format, args...)})
}

// Reason is the class of the first error, which [KeyPair] and [Bundle]
// report most fundamental first (a value that does not parse before the
// rules about what it holds); "" when there is none.
func (r *Report) Reason() Reason {
	if len(r.Errors) == 0 {
		return ""
	}
	return r.Errors[0].Reason
}

// size refuses a value longer than its maximum.
func (r *Report) size(field string, got, limit int) {
	if got > limit {
		r.errorf(field, ReasonInvalid, "%s; shorten it", limits.TooLong(field, got, limit))
	}
}

// Name checks a keystore, alias or truststore name.
func (r *Report) Name(field, what, name string) {
	if err := secretref.CheckName(name); err != nil {
		r.errorf(field, ReasonInvalid, "%s name %s", what, err)
	}
}

// Alias checks a PutAliasRequest at now. pkiAvailable says whether the
// backend can issue from Vault PKI.
func Alias(req *secretsv1.PutAliasRequest, pkiAvailable bool, now time.Time) *Report {
	r := &Report{}
	r.Name("keystore", "keystore", req.GetKeystore())
	r.Name("alias", "alias", req.GetAlias())
	// Sizes before anything parses them.
	r.size("certificate_pem", len(req.GetCertificatePem()), limits.CertificatePEMBytes)
	r.size("private_key_pem", len(req.GetPrivateKeyPem()), limits.KeyPEMBytes)
	if p := req.GetPki(); p != nil {
		r.size("pki.role", len(p.GetRole()), limits.PKIRoleBytes)
		r.size("pki.common_name", len(p.GetCommonName()), limits.HostBytes)
		if n := len(p.GetAltNames()); n > limits.PKIAltNames {
			r.errorf("pki.alt_names", ReasonInvalid, "%d alt names; the maximum is %d", n, limits.PKIAltNames)
		}
		for i, a := range p.GetAltNames() {
			r.size(fmt.Sprintf("pki.alt_names[%d]", i), len(a), limits.HostBytes)
		}
	}
	if !r.OK() {
		return r
	}
	if req.GetPki() != nil {
		r.pki(req, pkiAvailable)
		return r
	}
	if req.GetCertificatePem() == "" && req.GetPrivateKeyPem() == "" {
		r.errorf("certificate_pem", ReasonMissingField, "give certificate_pem and private_key_pem (PEM), or pki to issue the alias from a Vault PKI role")
		return r
	}
	r.keyPair(secret.APIFields, req.GetCertificatePem(), req.GetPrivateKeyPem(), req.GetUsage(), now)
	return r
}

// KeyPair checks a certificate chain and its key as a backend holds them,
// under the backend's field names, at now: the rules of a put.
func KeyPair(f secret.Fields, certPEM, keyPEM string, usage secretsv1.Usage, now time.Time) *Report {
	r := &Report{}
	r.size(f.Certificate, len(certPEM), limits.CertificatePEMBytes)
	r.size(f.Key, len(keyPEM), limits.KeyPEMBytes)
	if r.OK() {
		r.keyPair(f, certPEM, keyPEM, usage, now)
	}
	return r
}

func (r *Report) pki(req *secretsv1.PutAliasRequest, pkiAvailable bool) {
	p := req.GetPki()
	if req.GetCertificatePem() != "" || req.GetPrivateKeyPem() != "" {
		r.errorf("pki", ReasonInvalid, "give either pki or certificate_pem and private_key_pem, not both: a PKI alias is issued by Vault")
	}
	if !pkiAvailable {
		r.errorf("pki", ReasonPKI, "this secrets service runs without Vault; PKI aliases need --backend vault (KEYWAY_SECRETS_BACKEND=vault)")
	}
	if p.GetRole() == "" {
		r.errorf("pki.role", ReasonMissingField, "pki.role is required: the Vault PKI role that issues the alias (vault write pki/roles/NAME …)")
	} else if strings.ContainsAny(p.GetRole(), "/ ") {
		r.errorf("pki.role", ReasonInvalid, "pki.role %s is a role name, not a path: give NAME of pki/roles/NAME", limits.Quote(p.GetRole()))
	}
	if p.GetCommonName() == "" {
		r.errorf("pki.common_name", ReasonMissingField, "pki.common_name is required: the certificate's common name (the role must allow it)")
	}
	if p.GetTtl() != nil && p.GetTtl().AsDuration() < time.Second {
		r.errorf("pki.ttl", ReasonInvalid, "pki.ttl %s is too short; give at least 1s, or leave it out for the role's default", p.GetTtl().AsDuration())
	}
}

// keyPair checks a certificate chain and its key, named by f in messages.
// Problems come in the order a person fixes them: what does not parse,
// then the key against the certificate, then usage, chain and validity.
func (r *Report) keyPair(f secret.Fields, certPEM, keyPEM string, usage secretsv1.Usage, now time.Time) {
	key, err := certs.ParsePEMKey(keyPEM)
	if err != nil {
		reason := ReasonUnparsable
		if keyPEM == "" {
			reason = ReasonMissingField
		}
		r.errorf(f.Key, reason, "%s %s", f.Key, err)
	}
	chain, certErr := certs.ParsePEMCertificates(certPEM)
	if certErr != nil {
		reason := ReasonUnparsable
		if certPEM == "" {
			reason = ReasonMissingField
		}
		r.errorf(f.Certificate, reason, "%s %s", f.Certificate, certErr)
	}
	if k, isRSA := key.(*rsa.PrivateKey); isRSA && k.N.BitLen() < MinRSABits {
		r.errorf(f.Key, ReasonWeakKey, "the RSA key is %d bits; keys must be at least %d bits: make a new key with `openssl genrsa -out key.pem 2048` (or ECDSA: `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`) and have the certificate reissued for it", k.N.BitLen(), MinRSABits)
	}
	if certErr != nil {
		return
	}
	r.Chain = chain
	leaf := chain[0]
	if key != nil {
		if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
			r.errorf(f.Key, ReasonKeyMismatch, "%s does not match the certificate %s (the first one in %s): give the key the certificate was issued for (compare `openssl pkey -in key.pem -pubout` with `openssl x509 -in cert.pem -noout -pubkey`)", f.Key, certs.Describe(leaf), f.Certificate)
		}
	}
	role, eku, ekuName := "client", x509.ExtKeyUsageClientAuth, "clientAuth"
	if usage == secretsv1.Usage_USAGE_SERVER {
		role, eku, ekuName = "server", x509.ExtKeyUsageServerAuth, "serverAuth"
		if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
			r.Warnings = append(r.Warnings, f.Certificate+": "+certs.CNOnlyServerWarning(leaf))
		}
	}
	if len(leaf.ExtKeyUsage) > 0 || len(leaf.UnknownExtKeyUsage) > 0 {
		if !slices.Contains(leaf.ExtKeyUsage, eku) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
			r.errorf(f.Certificate, ReasonUsage, "the certificate %s is not for %s authentication (its extended key usage lacks %s); reissue it with -addext extendedKeyUsage=%s (signed with openssl x509 -req … -copy_extensions copy), or store it with the usage it was issued for", certs.Describe(leaf), role, ekuName, ekuName)
		}
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			r.errorf(f.Certificate, ReasonChain, "certificate %d (%s) in %s is not signed by certificate %d (%s): give the leaf first, then each certificate that signed the one before it", i+1, certs.Describe(chain[i]), f.Certificate, i+2, certs.Describe(chain[i+1]))
		}
	}
	for i, cert := range chain {
		what := "the " + role + " certificate"
		if i > 0 {
			what = fmt.Sprintf("intermediate certificate %d", i+1)
		}
		r.validity(f.Certificate, what, cert, now)
	}
}

// validity reports a certificate outside its validity, and warns when it
// expires soon.
func (r *Report) validity(field, what string, cert *x509.Certificate, now time.Time) {
	switch secret.StateOf(cert, now) {
	case secretsv1.State_STATE_EXPIRED:
		r.errorf(field, ReasonExpired, "%s (%s) expired at %s; renew it and put the new certificate and key", what, certs.Describe(cert), cert.NotAfter.UTC().Format(time.RFC3339))
	case secretsv1.State_STATE_NOT_YET_VALID:
		r.errorf(field, ReasonNotYetValid, "%s (%s) is not valid until %s; put it once it is valid, or have it reissued starting now (check the issuing host's clock)", what, certs.Describe(cert), cert.NotBefore.UTC().Format(time.RFC3339))
	case secretsv1.State_STATE_EXPIRING:
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s: %s (%s) expires at %s (in %s); plan its renewal", field, what, certs.Describe(cert), cert.NotAfter.UTC().Format(time.RFC3339), cert.NotAfter.Sub(now).Truncate(time.Minute)))
	}
}

// Truststore checks a PutTruststoreRequest at now.
func Truststore(req *secretsv1.PutTruststoreRequest, now time.Time) *Report {
	r := &Report{}
	r.Name("name", "truststore", req.GetName())
	r.size("certificates_pem", len(req.GetCertificatesPem()), limits.BundlePEMBytes)
	if !r.OK() {
		return r
	}
	r.bundle(secret.APIFields.Bundle, req.GetCertificatesPem(), now)
	return r
}

// Bundle checks a CA bundle as a backend holds it, named field, at now:
// the rules of a put.
func Bundle(field, certsPEM string, now time.Time) *Report {
	r := &Report{}
	r.size(field, len(certsPEM), limits.BundlePEMBytes)
	if r.OK() {
		r.bundle(field, certsPEM, now)
	}
	return r
}

func (r *Report) bundle(field, certsPEM string, now time.Time) {
	cas, err := certs.ParsePEMCertificates(certsPEM)
	if err != nil {
		reason := ReasonUnparsable
		if certsPEM == "" {
			reason = ReasonMissingField
		}
		r.errorf(field, reason, "%s %s", field, err)
		return
	}
	r.Chain = cas
	for i, cert := range cas {
		what := fmt.Sprintf("CA certificate %d", i+1)
		r.validity(field, what, cert, now)
		if !cert.IsCA && certs.IsV1Root(cert) {
			r.Warnings = append(r.Warnings, field+": "+certs.V1RootWarning(fmt.Sprintf("certificate %d", i+1), cert))
		} else if !cert.IsCA {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s: certificate %d (%s) is not a CA certificate; a truststore normally holds the CAs that issue peer certificates, and trusting a leaf directly pins that one certificate", field, i+1, certs.Describe(cert)))
		}
	}
}
