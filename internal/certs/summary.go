package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"strings"
	"time"
)

// Summary describes a certificate the secrets service holds: it answers
// with descriptions, not DER.
type Summary struct {
	Subject     string
	Issuer      string
	DNSNames    []string
	IPAddresses []string
	NotBefore   time.Time
	NotAfter    time.Time
	// Fingerprint is the SHA-256 of the DER, lowercase hex (colons
	// removed).
	Fingerprint string
	// KeyType is "RSA 2048", "ECDSA P-256" or "Ed25519".
	KeyType string
	IsCA    bool
	// V1Root: a self-signed X.509 v1 certificate ([IsV1Root]).
	V1Root bool
}

// Summarize describes a parsed certificate as the secrets service does:
// the form references are checked in.
func Summarize(cert *x509.Certificate) Summary {
	s := Summary{
		Subject: cert.Subject.String(), Issuer: cert.Issuer.String(),
		DNSNames: cert.DNSNames, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		Fingerprint: Fingerprint(cert), KeyType: KeyType(cert.PublicKey), IsCA: cert.IsCA,
		V1Root: IsV1Root(cert),
	}
	for _, ip := range cert.IPAddresses {
		s.IPAddresses = append(s.IPAddresses, ip.String())
	}
	return s
}

// KeyType names a public key as "RSA 2048", "ECDSA P-256" or "Ed25519".
func KeyType(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// ValidityProblem is [ValidityProblem] for the described certificate.
func (s Summary) ValidityProblem(now time.Time) string {
	return ValidityProblem(&x509.Certificate{NotBefore: s.NotBefore, NotAfter: s.NotAfter}, now)
}

// CommonNameCovers is [CommonNameCovers] for the described certificate,
// whose subject is in RFC 2253 form ("CN=test.com,O=Test").
func (s Summary) CommonNameCovers(name string) bool {
	if len(s.DNSNames) > 0 {
		return false
	}
	for rdn := range strings.SplitSeq(s.Subject, ",") {
		if cn, ok := strings.CutPrefix(strings.TrimSpace(rdn), "CN="); ok {
			return CommonNameCovers(&x509.Certificate{Subject: pkix.Name{CommonName: cn}}, name)
		}
	}
	return false
}
