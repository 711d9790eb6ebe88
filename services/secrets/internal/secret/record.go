package secret

import (
	"errors"
	"time"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
)

// ErrNotFound is returned by backends for a keystore, alias or truststore
// that does not exist.
var ErrNotFound = errors.New("secret: not found")

// ErrInvalidValue is wrapped by backend errors about a stored value that
// cannot be used (a field missing, a malformed TTL), and by Vault PKI
// refusing a request (a role that does not exist or does not allow the
// name): the backend answered, and retrying will not help until the value
// changes. Other backend errors mean the backend could not answer.
var ErrInvalidValue = errors.New("secret: unusable value")

// ErrVersionChanged is returned by a conditional write when the secret is
// no longer at the version it was read at: someone wrote it meanwhile.
var ErrVersionChanged = errors.New("secret: changed since it was read")

// NotStoredError is a backend write that certainly stored nothing: the
// backend could not be reached, or it answered with an error. A write error
// that is not one leaves the outcome unknown (the request was sent, and no
// answer came).
type NotStoredError struct{ Err error }

func (e *NotStoredError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *NotStoredError) Unwrap() error { return e.Err }

// AliasRecord is an alias as a backend stores it: a certificate chain and
// its key, or a binding to a Vault PKI role.
type AliasRecord struct {
	Keystore string
	Alias    string
	// Version is the backend's version of the record (Vault KV's version,
	// a content hash for a local directory).
	Version string
	// Revision changes whenever the record may have changed: the version
	// and, for Vault, when it was written (a secret deleted and created
	// again, or a restored Vault, starts again at version 1).
	Revision string
	// CertificatePEM is the chain, leaf first. For a PKI binding it is
	// the certificate last issued for it, stored with the binding so
	// that every replica serves the same one; empty until one is.
	CertificatePEM string
	// Key is the private key (for a PKI binding, the issued one's).
	Key   PrivateKey
	Usage secretsv1.Usage
	// PKI, when set, says the alias is issued from a Vault PKI role.
	PKI        *PKIBinding
	UpdateTime time.Time
}

// PKIBinding binds an alias to a Vault PKI role.
type PKIBinding struct {
	Role       string
	CommonName string
	AltNames   []string
	// TTL asked for; zero for the role's default.
	TTL time.Duration
}

// TruststoreRecord is a CA bundle as a backend stores it.
type TruststoreRecord struct {
	Name            string
	Version         string
	Revision        string
	CertificatesPEM string
	UpdateTime      time.Time
}

// Stamp is what a backend says about a write: the version, the revision
// List will report for it, and when it was written.
type Stamp struct {
	Version    string
	Revision   string
	UpdateTime time.Time
}

// UsageName is the word a backend stores for a usage.
func UsageName(u secretsv1.Usage) string {
	if u == secretsv1.Usage_USAGE_SERVER {
		return "server"
	}
	return "client"
}

// ParseUsage is the inverse of [UsageName]; anything but "server" is a
// client certificate.
func ParseUsage(s string) secretsv1.Usage {
	if s == "server" {
		return secretsv1.Usage_USAGE_SERVER
	}
	return secretsv1.Usage_USAGE_CLIENT
}

// Fields names where a backend (or the API) keeps the parts of a secret, so
// that a message about a stored value names the field a person edits.
type Fields struct {
	// Certificate is an alias's chain, Key its private key, Bundle a
	// truststore's CA certificates.
	Certificate, Key, Bundle string
}

// APIFields are the request fields of PutAlias and PutTruststore.
var APIFields = Fields{Certificate: "certificate_pem", Key: "private_key_pem", Bundle: "certificates_pem"}
