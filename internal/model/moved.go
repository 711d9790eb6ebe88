package model

import (
	"crypto/x509"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/secretref"
)

// These names moved to packages certs and secretref; they stay here for
// the packages that still use them by their old names (the proxy's config
// and inbound listeners, and outbound), so that each moves in its own
// change. New code uses certs and secretref.

// SecretRef is [secretref.Ref].
type SecretRef = secretref.Ref

// CertFingerprint is [certs.Fingerprint].
func CertFingerprint(cert *x509.Certificate) string { return certs.Fingerprint(cert) }

// CommonNameCovers is [certs.CommonNameCovers].
func CommonNameCovers(leaf *x509.Certificate, name string) bool {
	return certs.CommonNameCovers(leaf, name)
}
