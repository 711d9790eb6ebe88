package secret

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/certs"
)

// DefaultExpiryWarning is how much time left makes a certificate
// "expiring", unless a third of its lifetime is less (short-lived PKI
// certificates would otherwise always be expiring).
const DefaultExpiryWarning = 30 * 24 * time.Hour

// StateOf is a certificate's expiry status at now.
func StateOf(cert *x509.Certificate, now time.Time) secretsv1.State {
	switch {
	case now.Before(cert.NotBefore):
		return secretsv1.State_STATE_NOT_YET_VALID
	case !now.Before(cert.NotAfter):
		return secretsv1.State_STATE_EXPIRED
	case cert.NotAfter.Sub(now) < ExpiryWarning(cert):
		return secretsv1.State_STATE_EXPIRING
	}
	return secretsv1.State_STATE_VALID
}

// ExpiryWarning is the time left under which cert counts as expiring:
// [DefaultExpiryWarning], or a third of its lifetime when that is less.
func ExpiryWarning(cert *x509.Certificate) time.Duration {
	return min(DefaultExpiryWarning, cert.NotAfter.Sub(cert.NotBefore)/3)
}

// Describe is the API's description of a certificate at now. It never
// holds key material.
func Describe(cert *x509.Certificate, now time.Time) *secretsv1.Certificate {
	c := &secretsv1.Certificate{
		Subject:           cert.Subject.String(),
		Issuer:            cert.Issuer.String(),
		DnsNames:          cert.DNSNames,
		NotBefore:         timestamppb.New(cert.NotBefore),
		NotAfter:          timestamppb.New(cert.NotAfter),
		TimeLeft:          durationpb.New(cert.NotAfter.Sub(now).Truncate(time.Second)),
		State:             StateOf(cert, now),
		Sha256Fingerprint: certs.Fingerprint(cert),
		KeyType:           KeyType(cert),
		IsCa:              cert.IsCA,
		V1Root:            certs.IsV1Root(cert),
	}
	for _, ip := range cert.IPAddresses {
		c.IpAddresses = append(c.IpAddresses, ip.String())
	}
	for _, u := range cert.URIs {
		c.Uris = append(c.Uris, u.String())
	}
	return c
}

// KeyType names a certificate's public key: "RSA 2048", "ECDSA P-256",
// "Ed25519".
func KeyType(cert *x509.Certificate) string {
	switch k := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return cert.PublicKeyAlgorithm.String()
}
