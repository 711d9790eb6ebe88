// Package devca mints X.509 certificates for the local development stack and
// for tests: a self-signed root, and leaf certificates with whatever shape a
// case needs (SANs or none, RSA of any size, expired, not yet valid).
//
// It is not a production CA: keys live in memory, and it keeps no record of
// what it issued or revoked; [CA.CRL] signs whatever list it is given.
package devca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// CA is a certificate authority held in memory. Safe for concurrent use.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// KeyPair is an issued certificate with its private key, in every form a
// caller needs.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte // the leaf only
	KeyPEM  []byte // PKCS#8
	// TLS is ready for tls.Config.Certificates, with Leaf set.
	TLS tls.Certificate
}

// Fingerprint is the SHA-256 of the leaf's DER, lowercase hex.
func (kp *KeyPair) Fingerprint() string {
	sum := sha256.Sum256(kp.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// Options shape an issued certificate. The zero value gives an ECDSA P-256
// certificate valid from an hour ago for a day, for server and client auth,
// with the common name as its only DNS SAN.
type Options struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	URIs       []*url.URL
	OU         []string
	// NoSAN leaves out every SAN, as `openssl req -subj /CN=…` does.
	NoSAN bool
	// RSABits selects an RSA key of that size instead of ECDSA P-256.
	RSABits   int
	NotBefore time.Time
	NotAfter  time.Time
	// IsCA makes an intermediate that can sign.
	IsCA bool
	// ExtKeyUsage replaces the default (server and client authentication).
	ExtKeyUsage []x509.ExtKeyUsage
	// CRLDistributionPoints are URLs where the CA publishes the CRL that
	// covers the certificate.
	CRLDistributionPoints []string
	// OCSPServer are URLs of OCSP responders for the certificate (its
	// authority information access).
	OCSPServer []string
	// SerialNumber replaces the random serial number.
	SerialNumber *big.Int
}

// New makes a self-signed root CA with an ECDSA P-256 key, valid for ten
// years.
func New(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Keyway development"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-signing CA %q: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA %q: %w", commonName, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Load reads a CA from PEM, as written by [CA.CertPEM] and [CA.KeyPEM].
func Load(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading CA key pair: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("loading CA key pair: key of type %T cannot sign", pair.PrivateKey)
	}
	return &CA{Cert: pair.Leaf, Key: signer}, nil
}

// CertPEM is the CA certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// KeyPEM is the CA key in PKCS#8 PEM.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("encoding CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// Pool is a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// Issue mints a certificate signed by the CA.
func (ca *CA) Issue(opts Options) (*KeyPair, error) {
	var key crypto.Signer
	var err error
	if opts.RSABits > 0 {
		key, err = rsa.GenerateKey(rand.Reader, opts.RSABits)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("generating key for %q: %w", opts.CommonName, err)
	}
	now := time.Now()
	notBefore, notAfter := opts.NotBefore, opts.NotAfter
	if notBefore.IsZero() {
		notBefore = now.Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = now.Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: opts.CommonName, OrganizationalUnit: opts.OU},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},

		CRLDistributionPoints: opts.CRLDistributionPoints,
		OCSPServer:            opts.OCSPServer,
	}
	if opts.SerialNumber != nil {
		tmpl.SerialNumber = opts.SerialNumber
	}
	if opts.ExtKeyUsage != nil {
		tmpl.ExtKeyUsage = opts.ExtKeyUsage
	}
	if _, isRSA := key.(*rsa.PrivateKey); isRSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if opts.IsCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		// A CA signs the CRLs that revoke what it issued.
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		tmpl.ExtKeyUsage = nil
	}
	if !opts.NoSAN {
		tmpl.DNSNames, tmpl.IPAddresses, tmpl.URIs = opts.DNSNames, opts.IPs, opts.URIs
		if len(tmpl.DNSNames)+len(tmpl.IPAddresses)+len(tmpl.URIs) == 0 && opts.CommonName != "" && !opts.IsCA {
			tmpl.DNSNames = []string{opts.CommonName}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing %q: %w", opts.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing %q: %w", opts.CommonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key of %q: %w", opts.CommonName, err)
	}
	return &KeyPair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
	}, nil
}

// Sub makes an intermediate CA signed by this one.
func (ca *CA) Sub(commonName string) (*CA, error) {
	kp, err := ca.Issue(Options{CommonName: commonName, IsCA: true, NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour)})
	if err != nil {
		return nil, err
	}
	return &CA{Cert: kp.Cert, Key: kp.Key}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("devca: reading random serial: %v", err))
	}
	return n
}

// CRLOptions shape a certificate revocation list. The zero value is an
// empty list valid from now for a day, number 1.
type CRLOptions struct {
	// Revoked are the entries: serial number, revocation time and reason.
	Revoked    []x509.RevocationListEntry
	ThisUpdate time.Time
	NextUpdate time.Time
	// Number is the CRL number; CAs increase it with each list.
	Number int64
}

// CRL signs a certificate revocation list (DER) with the CA's key.
func (ca *CA) CRL(opts CRLOptions) ([]byte, error) {
	now := time.Now()
	this, next := opts.ThisUpdate, opts.NextUpdate
	if this.IsZero() {
		this = now
	}
	if next.IsZero() {
		next = this.Add(24 * time.Hour)
	}
	number := opts.Number
	if number == 0 {
		number = 1
	}
	tmpl := &x509.RevocationList{
		RevokedCertificateEntries: opts.Revoked,
		Number:                    big.NewInt(number),
		ThisUpdate:                this,
		NextUpdate:                next,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing CRL of %q: %w", ca.Cert.Subject.CommonName, err)
	}
	return der, nil
}
