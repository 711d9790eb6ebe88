// Package validate checks what callers put into the secrets service: an
// alias (a certificate chain and its key, or a PKI binding) or a truststore.
// It reports every problem at once, each as a field violation that names the
// field of the request and the fix; warnings do not block.
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

	"keyway.dev/common/limits"
	"keyway.dev/common/model"
	"keyway.dev/common/secretsclient"
	"keyway.dev/secrets/internal/secret"
)

// MinRSABits is the smallest RSA key accepted.
const MinRSABits = 2048

// Violation is one problem with one field of a request.
type Violation struct {
	// Field is the request field, as in the proto ("certificate_pem",
	// "pki.role").
	Field string
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

func (r *Report) errorf(field, format string, args ...any) {
	r.Errors = append(r.Errors, Violation{Field: field, Message: fmt.Sprintf(format, args...)})
}

// size refuses a value longer than its maximum.
func (r *Report) size(field string, got, limit int) {
	if got > limit {
		r.errorf(field, "%s; shorten it", limits.TooLong(field, got, limit))
	}
}

// Name checks a keystore, alias or truststore name.
func (r *Report) Name(field, what, name string) {
	if err := secretsclient.CheckName(name); err != nil {
		r.errorf(field, "%s name %s", what, err)
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
			r.errorf("pki.alt_names", "%d alt names; the maximum is %d", n, limits.PKIAltNames)
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
		r.errorf("certificate_pem", "give certificate_pem and private_key_pem (PEM), or pki to issue the alias from a Vault PKI role")
		return r
	}
	r.keyPair(req.GetCertificatePem(), req.GetPrivateKeyPem(), req.GetUsage(), now)
	return r
}

func (r *Report) pki(req *secretsv1.PutAliasRequest, pkiAvailable bool) {
	p := req.GetPki()
	if req.GetCertificatePem() != "" || req.GetPrivateKeyPem() != "" {
		r.errorf("pki", "give either pki or certificate_pem and private_key_pem, not both: a PKI alias is issued by Vault")
	}
	if !pkiAvailable {
		r.errorf("pki", "this secrets service runs without Vault; PKI aliases need --backend vault (KEYWAY_SECRETS_BACKEND=vault)")
	}
	if p.GetRole() == "" {
		r.errorf("pki.role", "pki.role is required: the Vault PKI role that issues the alias (vault write pki/roles/NAME …)")
	} else if strings.ContainsAny(p.GetRole(), "/ ") {
		r.errorf("pki.role", "pki.role %s is a role name, not a path: give NAME of pki/roles/NAME", limits.Quote(p.GetRole()))
	}
	if p.GetCommonName() == "" {
		r.errorf("pki.common_name", "pki.common_name is required: the certificate's common name (the role must allow it)")
	}
	if p.GetTtl() != nil && p.GetTtl().AsDuration() < time.Second {
		r.errorf("pki.ttl", "pki.ttl %s is too short; give at least 1s, or leave it out for the role's default", p.GetTtl().AsDuration())
	}
}

// keyPair checks a certificate chain and its key.
func (r *Report) keyPair(certPEM, keyPEM string, usage secretsv1.Usage, now time.Time) {
	key, err := model.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		r.errorf("private_key_pem", "private_key_pem %s", err)
	} else if k, isRSA := key.(*rsa.PrivateKey); isRSA && k.N.BitLen() < MinRSABits {
		r.errorf("private_key_pem", "the RSA key is %d bits; keys must be at least %d bits: make a new key with `openssl genrsa -out key.pem 2048` (or ECDSA: `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`) and have the certificate reissued for it", k.N.BitLen(), MinRSABits)
	}
	chain, err := model.ParseCertificatesPEM(certPEM)
	if err != nil {
		r.errorf("certificate_pem", "certificate_pem %s", err)
		return
	}
	r.Chain = chain
	leaf := chain[0]
	if key != nil {
		if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
			r.errorf("private_key_pem", "private_key_pem does not match the certificate %s (the first one in certificate_pem): give the key the certificate was issued for (compare `openssl pkey -in key.pem -pubout` with `openssl x509 -in cert.pem -noout -pubkey`)", describe(leaf))
		}
	}
	role, eku, ekuName := "client", x509.ExtKeyUsageClientAuth, "clientAuth"
	if usage == secretsv1.Usage_USAGE_SERVER {
		role, eku, ekuName = "server", x509.ExtKeyUsageServerAuth, "serverAuth"
		if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
			r.Warnings = append(r.Warnings, "certificate_pem: "+model.CNOnlyServerWarning(leaf))
		}
	}
	if len(leaf.ExtKeyUsage) > 0 || len(leaf.UnknownExtKeyUsage) > 0 {
		if !slices.Contains(leaf.ExtKeyUsage, eku) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
			r.errorf("certificate_pem", "the certificate %s is not for %s authentication (its extended key usage lacks %s); reissue it with -addext extendedKeyUsage=%s (signed with openssl x509 -req … -copy_extensions copy), or store it with the usage it was issued for", describe(leaf), role, ekuName, ekuName)
		}
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			r.errorf("certificate_pem", "certificate %d (%s) in certificate_pem is not signed by certificate %d (%s): give the leaf first, then each certificate that signed the one before it", i+1, describe(chain[i]), i+2, describe(chain[i+1]))
		}
	}
	for i, cert := range chain {
		what := "the " + role + " certificate"
		if i > 0 {
			what = fmt.Sprintf("intermediate certificate %d", i+1)
		}
		r.validity("certificate_pem", what, cert, now)
	}
}

// validity reports a certificate outside its validity, and warns when it
// expires soon.
func (r *Report) validity(field, what string, cert *x509.Certificate, now time.Time) {
	switch secret.StateOf(cert, now) {
	case secretsv1.State_STATE_EXPIRED:
		r.errorf(field, "%s (%s) expired at %s; renew it and put the new certificate and key", what, describe(cert), cert.NotAfter.UTC().Format(time.RFC3339))
	case secretsv1.State_STATE_NOT_YET_VALID:
		r.errorf(field, "%s (%s) is not valid until %s; put it once it is valid, or have it reissued starting now (check the issuing host's clock)", what, describe(cert), cert.NotBefore.UTC().Format(time.RFC3339))
	case secretsv1.State_STATE_EXPIRING:
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s: %s (%s) expires at %s (in %s); plan its renewal", field, what, describe(cert), cert.NotAfter.UTC().Format(time.RFC3339), cert.NotAfter.Sub(now).Truncate(time.Minute)))
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
	certs, err := model.ParseCertificatesPEM(req.GetCertificatesPem())
	if err != nil {
		r.errorf("certificates_pem", "certificates_pem %s", err)
		return r
	}
	r.Chain = certs
	for i, cert := range certs {
		what := fmt.Sprintf("CA certificate %d", i+1)
		r.validity("certificates_pem", what, cert, now)
		if !cert.IsCA && model.IsV1Root(cert) {
			r.Warnings = append(r.Warnings, "certificates_pem: "+model.V1RootWarning(fmt.Sprintf("certificate %d", i+1), cert))
		} else if !cert.IsCA {
			r.Warnings = append(r.Warnings, fmt.Sprintf("certificates_pem: certificate %d (%s) is not a CA certificate; a truststore normally holds the CAs that issue peer certificates, and trusting a leaf directly pins that one certificate", i+1, describe(cert)))
		}
	}
	return r
}

// describe names a certificate in messages by its subject.
func describe(cert *x509.Certificate) string {
	if cn := cert.Subject.CommonName; cn != "" {
		return fmt.Sprintf("%q", "CN="+cn)
	}
	return fmt.Sprintf("%q", cert.Subject.String())
}
