package localrun

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// ca is one of the launcher's certificate authorities. They stand in for
// the operator's (cert-manager Issuers, a corporate CA): each exists only
// for one run and its key only in the launcher's memory.
type ca struct {
	name string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// keyPair is a certificate and its key, PEM.
type keyPair struct{ cert, key []byte }

func newCA(name string) (*ca, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"keyway localrun"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating CA %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &ca{name: name, cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// leaf is what to put in a certificate the CA issues.
type leaf struct {
	cn     string
	ous    []string
	dns    []string // server names; 127.0.0.1 and localhost are added to every server certificate
	uris   []string // SPIFFE IDs of internal clients
	ips    []net.IP // more addresses of a server, beyond 127.0.0.1
	server bool
	client bool
}

// issue signs a certificate for l. Every server certificate also names
// 127.0.0.1 and localhost: on one machine a Service name is a loopback
// address, and clients check the name they dialled.
func (c *ca) issue(l leaf) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: l.cn, OrganizationalUnit: l.ous},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     l.dns,
	}
	if l.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = append(tmpl.DNSNames, "localhost")
		tmpl.IPAddresses = append([]net.IP{net.IPv4(127, 0, 0, 1)}, l.ips...)
	}
	if l.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, u := range l.uris {
		parsed, err := url.Parse(u)
		if err != nil {
			return keyPair{}, fmt.Errorf("certificate %q: URI SAN %q: %w", l.cn, u, err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return keyPair{}, fmt.Errorf("issuing %q from CA %q: %w", l.cn, c.name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{
		cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// authorities are the CAs of one run, as deploy/README.md's Secret table
// asks for them: the internal CA (the services' server certificates and
// their client certificates to each other), the operator CA (people and
// keywayctl), NATS's and Vault's.
type authorities struct {
	internal, operator, nats, vault *ca
}

func newAuthorities() (*authorities, error) {
	var a authorities
	for _, c := range []struct {
		to   **ca
		name string
	}{{&a.internal, "keyway internal CA"}, {&a.operator, "keyway operator CA"}, {&a.nats, "keyway NATS CA"}, {&a.vault, "keyway Vault CA"}} {
		made, err := newCA(c.name)
		if err != nil {
			return nil, err
		}
		*c.to = made
	}
	return &a, nil
}
