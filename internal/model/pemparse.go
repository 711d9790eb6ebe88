package model

import (
	"crypto"
	"crypto/x509"
)

// ParseCertificatesPEM parses one or more CERTIFICATE blocks, in order, with
// the same rules and messages as the resources' PEM fields. An error's
// message completes a sentence that starts with the field's name ("crt is
// empty; give …").
func ParseCertificatesPEM(data string) ([]*x509.Certificate, error) {
	return parseCertificates(data)
}

// ParsePrivateKeyPEM parses exactly one unencrypted private key (PKCS#1,
// PKCS#8 or SEC 1), with the same rules and messages as
// [ParseCertificatesPEM].
func ParsePrivateKeyPEM(data string) (crypto.Signer, error) {
	return parsePrivateKey(data)
}
