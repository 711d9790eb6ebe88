package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"keyway.dev/internal/limits"
)

// The errors below are shown to the user as they are: each says what is
// wrong with the PEM and how to produce a good one.

const pemInYAML = "in YAML write the PEM as a block scalar (field: |) so its line breaks are kept"

// maxCommentScan bounds how much of a field CommentedPEM reads: a PEM field
// may hold a large bundle, and the answer is about its first marked line.
const maxCommentScan = 1 << 20

// CommentedPEM finds the first line of data that is a PEM boundary
// ("-----BEGIN …" or "-----END …") commented out with '#', as Flex
// Gateway's guides print their samples ("# -----BEGIN CERTIFICATE-----").
// In a YAML block scalar (field: |) a '#' does not start a comment, so such
// a line is part of the value and its block is not read. line is 1-based
// within data; 0 when there is none.
func CommentedPEM(data string) (line int, text string) {
	if len(data) > maxCommentScan {
		data = data[:maxCommentScan]
	}
	for i, l := range strings.Split(data, "\n") {
		t := strings.TrimSpace(l)
		if !strings.HasPrefix(t, "#") {
			continue
		}
		t = strings.TrimSpace(strings.TrimLeft(t, "#"))
		if strings.HasPrefix(t, "-----BEGIN ") || strings.HasPrefix(t, "-----END ") {
			return i + 1, strings.TrimRight(l, "\r")
		}
	}
	return 0, ""
}

// CommentedPEMFix says what to do about a block CommentedPEM found: what
// follows "holds a PEM block commented out with '#' at …".
func CommentedPEMFix(data string) string {
	fix := "in a YAML block scalar (|) a '#' does not start a comment, it is part of the PEM; remove the '#' (and the space after it) from the start of each line of the block"
	if strings.Contains(data, "# insert ") {
		// The guide's placeholder lines: "# insert certificate".
		fix += ", and put the PEM itself (from its -----BEGIN line to its -----END line) in place of the placeholder \"# insert …\" line"
	}
	return fix
}

// commentedPEMError is the error of a field whose PEM is commented out.
func commentedPEMError(data string) error {
	line, text := CommentedPEM(data)
	if line == 0 {
		return nil
	}
	return fmt.Errorf("holds a PEM block commented out with '#': line %d of the value is %q; %s", line, limitText(strings.TrimSpace(text), 80), CommentedPEMFix(data))
}

// limitText cuts s to n bytes for a message.
func limitText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ParsePEMCertificates parses one or more CERTIFICATE blocks, in order.
// Text around the blocks (such as `openssl x509 -text` output) is ignored.
// An error's message completes a sentence that starts with the field's
// name ("crt is empty; give …"), as the resources' PEM fields report it.
func ParsePEMCertificates(data string) ([]*x509.Certificate, error) {
	if strings.TrimSpace(data) == "" {
		return nil, errors.New("is empty; give one or more PEM blocks -----BEGIN CERTIFICATE-----")
	}
	if err := commentedPEMError(data); err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	rest := []byte(data)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "CERTIFICATE":
		case strings.Contains(block.Type, "PRIVATE KEY"):
			return nil, fmt.Errorf("holds a private key (%s block) where certificates belong; remove the key from this field (and treat it as exposed if this text was shared)", limits.Value(block.Type))
		default:
			return nil, fmt.Errorf("holds a %s block; only CERTIFICATE blocks belong here", limits.Value(block.Type))
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d does not parse (%w); export it again, e.g. with `openssl x509 -in cert.pem -out fixed.pem`", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("holds a damaged PEM block (a -----BEGIN line without a matching -----END line, or line breaks lost); %s", pemInYAML)
	}
	if len(certs) == 0 {
		return nil, errors.New("is not PEM: expected one or more -----BEGIN CERTIFICATE----- blocks; convert a DER file with `openssl x509 -inform der -in cert.der -out cert.pem`")
	}
	return certs, nil
}

// ParsePEMKey parses exactly one unencrypted private key: PKCS#1
// ("RSA PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#8 ("PRIVATE KEY"),
// with messages as [ParsePEMCertificates] words them.
func ParsePEMKey(data string) (crypto.Signer, error) {
	if strings.TrimSpace(data) == "" {
		return nil, errors.New("is empty; give the certificate's private key in PEM (-----BEGIN PRIVATE KEY-----)")
	}
	if err := commentedPEMError(data); err != nil {
		return nil, err
	}
	var keys []*pem.Block
	rest := []byte(data)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "EC PARAMETERS":
			// `openssl ecparam -genkey` writes these before the key.
			continue
		case block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"):
			return nil, errors.New("is encrypted; the gateway needs the key unencrypted: decrypt it with `openssl pkey -in key.pem -out key-plain.pem` and give key-plain.pem (keep it in a secret store)")
		case block.Type == "OPENSSH PRIVATE KEY":
			return nil, errors.New("is an OpenSSH key, not a TLS key; convert it to PKCS#8 with `ssh-keygen -p -N \"\" -m pkcs8 -f key`, or issue a TLS key pair")
		case block.Type == "CERTIFICATE":
			return nil, errors.New("holds a certificate where the private key belongs; put the certificate in certificate.crt and its private key here")
		case strings.HasSuffix(block.Type, "PRIVATE KEY"):
			keys = append(keys, block)
		default:
			return nil, fmt.Errorf("holds a %s block where the private key belongs; give the key as -----BEGIN PRIVATE KEY----- (PKCS#8), RSA PRIVATE KEY or EC PRIVATE KEY", limits.Value(block.Type))
		}
	}
	switch {
	case len(keys) == 0 && bytes.Contains(rest, []byte("-----BEGIN")):
		return nil, fmt.Errorf("holds a damaged PEM block (a -----BEGIN line without a matching -----END line, or line breaks lost); %s", pemInYAML)
	case len(keys) == 0:
		return nil, errors.New("is not PEM: expected -----BEGIN PRIVATE KEY-----; convert a DER key with `openssl pkey -inform der -in key.der -out key.pem`")
	case len(keys) > 1:
		return nil, fmt.Errorf("holds %d private keys; give exactly one, the key of the certificate in crt", len(keys))
	}
	key, err := parseKeyDER(keys[0].Bytes)
	if err != nil {
		return nil, fmt.Errorf("does not parse as PKCS#1, PKCS#8 or SEC 1 (%w); rewrite it with `openssl pkey -in key.pem -out key-pkcs8.pem`", err)
	}
	return key, nil
}

// parseKeyDER tries each encoding in turn, as crypto/tls does: labels are
// often wrong (a PKCS#1 key under "PRIVATE KEY").
func parseKeyDER(der []byte) (crypto.Signer, error) {
	if key, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return key, nil
	}
	if key, err := x509.ParseECPrivateKey(der); err == nil {
		return key, nil
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
		return k.(crypto.Signer), nil
	}
	return nil, fmt.Errorf("a %T cannot sign a TLS handshake", key)
}
