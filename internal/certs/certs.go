package certs

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Describe names a certificate in messages by its subject: "CN=gateway"
// quoted, or the whole subject when it has no Common Name.
func Describe(cert *x509.Certificate) string {
	if cn := cert.Subject.CommonName; cn != "" {
		return fmt.Sprintf("%q", "CN="+cn)
	}
	return fmt.Sprintf("%q", cert.Subject.String())
}

// Fingerprint is the SHA-256 of a certificate's DER, lowercase hex: the
// fingerprint every Keyway API, log, metric and header shows.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// ValidityProblem says how cert is outside its validity at now, with the
// date and how long ago or ahead it is ("expired at … (3 days ago)"), or
// "" when it is valid.
func ValidityProblem(cert *x509.Certificate, now time.Time) string {
	switch {
	case now.After(cert.NotAfter):
		return fmt.Sprintf("expired at %s (%s ago)", cert.NotAfter.UTC().Format(time.RFC3339), roughly(now.Sub(cert.NotAfter)))
	case now.Before(cert.NotBefore):
		return fmt.Sprintf("is not valid until %s (in %s)", cert.NotBefore.UTC().Format(time.RFC3339), roughly(cert.NotBefore.Sub(now)))
	}
	return ""
}

// roughly formats a duration for people: "3 days", "5 hours", "12 minutes".
func roughly(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", d/time.Hour)
	case d >= 2*time.Minute:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return fmt.Sprintf("%d seconds", d/time.Second)
}

// IsV1Root reports whether cert is a self-signed X.509 v1 certificate, as
// `openssl x509 -req -signkey` makes without an extensions file (the API7
// guide's CA): it has no extensions, so no basicConstraints, yet OpenSSL
// and Go's crypto/x509 accept it as a trust anchor (a root) and verify the
// certificates it signed. Neither accepts it as an intermediate.
func IsV1Root(cert *x509.Certificate) bool {
	return cert.Version == 1 && bytes.Equal(cert.RawIssuer, cert.RawSubject) && cert.CheckSignatureFrom(cert) == nil
}

// V1RootWarning says what trusting the v1 root cert means, and how to make
// it a v3 CA; what names the certificate ("clientCAs certificate 1").
func V1RootWarning(what string, cert *x509.Certificate) string {
	cn := cert.Subject.CommonName
	if cn == "" {
		cn = "CA"
	}
	return fmt.Sprintf("%s (%s) is an X.509 v1 certificate: it has no extensions, so no basicConstraints. It is accepted as a trust anchor, as OpenSSL and Go accept self-signed v1 roots, "+
		"and it verifies every certificate it signed; it is never accepted as an intermediate. To make it a v3 CA with the same key and subject (what it signed stays valid): "+
		"openssl req -x509 -new -key ca.key -subj \"/CN=%s\" -days 3650 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out ca.crt",
		what, cert.Subject.String(), cn)
}

// CNOnlyServerWarning says which clients accept a server certificate that
// has no subjectAltName, only a Common Name (what `openssl req -subj
// /CN=…` makes), and how to reissue it.
func CNOnlyServerWarning(leaf *x509.Certificate) string {
	cn := leaf.Subject.CommonName
	return fmt.Sprintf("the server certificate (%s) has no subjectAltName, only the Common Name %q: curl and other OpenSSL-based clients accept it, "+
		"but browsers (Chrome, Firefox, Safari) and Go clients refuse it, since they match names against SANs only. Reissue it with a SAN: "+
		"openssl req -new -key server.key -subj \"/CN=%s\" -addext \"subjectAltName=DNS:%s\" -out server.csr && "+
		"openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -copy_extensions copy -days 365 -out server.crt",
		leaf.Subject.String(), cn, cn, cn)
}

// CommonNameCovers reports whether the Common Name of a certificate without
// DNS SANs covers name as OpenSSL's hostname check does: equal ignoring
// case, or a "*." wildcard standing for exactly the first label.
func CommonNameCovers(leaf *x509.Certificate, name string) bool {
	if len(leaf.DNSNames) > 0 {
		return false
	}
	cn := strings.ToLower(strings.TrimSuffix(leaf.Subject.CommonName, "."))
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if cn == "" || name == "" {
		return false
	}
	if cn == name {
		return true
	}
	suffix, ok := strings.CutPrefix(cn, "*.")
	if !ok {
		return false
	}
	label, rest, ok := strings.Cut(name, ".")
	return ok && label != "" && rest == suffix
}
