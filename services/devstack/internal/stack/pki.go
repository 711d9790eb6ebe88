package stack

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"keyway.dev/internal/devca"
)

// pki is the dev stack's certificates, kept as PEM files under dir so that
// users can read them and curl can use them. They are made on first start and
// remade when missing or within a day of expiry.
type pki struct {
	dir      string
	ca       *devca.CA
	upstream tls.Certificate // the demo upstream's server certificate
	// Files, for the sample manifest and printed commands.
	caFile, gatewayCert, gatewayKey, clientCert, clientKey string
	serverCert, serverKey                                  string // the proxy's own HTTPS certificate

	// The internal CA and what it issued: the secrets service's internal
	// (mTLS) listener certificate, and the client certificate proxy nodes
	// present to it. A CA of its own, so that certificates of the dev CA
	// (demo clients) cannot fetch key material.
	internalCA              *devca.CA
	internalCAFile          string
	secretsCert, secretsKey string
	nodeCert, nodeKey       string

	// access is the services' access control and the operator identity.
	access accessFiles
}

// UpstreamName is the DNS name in the demo upstream's certificate; the sample
// binding sends it as SNI.
const UpstreamName = "upstream.keyway.local"

func loadOrMakePKI(dir, data string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("making %s: %w", dir, err)
	}
	p := &pki{
		dir:         dir,
		caFile:      filepath.Join(dir, "ca.crt"),
		gatewayCert: filepath.Join(dir, "gateway.crt"),
		gatewayKey:  filepath.Join(dir, "gateway.key"),
		clientCert:  filepath.Join(dir, "client.crt"),
		clientKey:   filepath.Join(dir, "client.key"),
		serverCert:  filepath.Join(dir, "server.crt"),
		serverKey:   filepath.Join(dir, "server.key"),
	}
	ca, err := loadOrMakeCA(dir, "ca", "Keyway dev CA")
	if err != nil {
		return nil, err
	}
	p.ca = ca
	leaves := []struct {
		name string
		opts devca.Options
	}{
		{"upstream", devca.Options{CommonName: UpstreamName, DNSNames: []string{UpstreamName, "localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}},
		{"gateway", devca.Options{CommonName: "keyway-gateway"}},
		{"client", devca.Options{CommonName: "demo-client"}},
		{"server", devca.Options{CommonName: "localhost", DNSNames: []string{"localhost", "keyway.local"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}},
	}
	for _, l := range leaves {
		crt, key := filepath.Join(dir, l.name+".crt"), filepath.Join(dir, l.name+".key")
		if pair, err := tls.LoadX509KeyPair(crt, key); err == nil && fresh(pair.Leaf, ca) {
			if l.name == "upstream" {
				p.upstream = pair
			}
			continue
		}
		l.opts.NotAfter = time.Now().Add(90 * 24 * time.Hour)
		kp, err := ca.Issue(l.opts)
		if err != nil {
			return nil, err
		}
		if err := writeFiles(map[string][]byte{crt: kp.CertPEM, key: kp.KeyPEM}); err != nil {
			return nil, err
		}
		if l.name == "upstream" {
			p.upstream = kp.TLS
		}
	}
	if err := p.makeInternal(); err != nil {
		return nil, err
	}
	if err := p.makeAccess(data); err != nil {
		return nil, err
	}
	return p, nil
}

// makeInternal loads or makes the internal CA, the secrets service's
// internal certificate and a proxy node's client certificate.
func (p *pki) makeInternal() error {
	ca, err := loadOrMakeCA(p.dir, "internal-ca", "Keyway internal CA")
	if err != nil {
		return err
	}
	p.internalCA, p.internalCAFile = ca, filepath.Join(p.dir, "internal-ca.crt")
	p.secretsCert, p.secretsKey = filepath.Join(p.dir, "secrets.crt"), filepath.Join(p.dir, "secrets.key")
	p.nodeCert, p.nodeKey = filepath.Join(p.dir, "proxy-node.crt"), filepath.Join(p.dir, "proxy-node.key")
	for _, l := range []struct {
		crt, key string
		opts     devca.Options
	}{
		{p.secretsCert, p.secretsKey, devca.Options{CommonName: "keyway-secrets", DNSNames: []string{"keyway-secrets", "localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}},
		{p.nodeCert, p.nodeKey, devca.Options{CommonName: nodeCN}},
	} {
		if pair, err := tls.LoadX509KeyPair(l.crt, l.key); err == nil && fresh(pair.Leaf, ca) {
			continue
		}
		l.opts.NotAfter = time.Now().Add(90 * 24 * time.Hour)
		kp, err := ca.Issue(l.opts)
		if err != nil {
			return err
		}
		if err := writeFiles(map[string][]byte{l.crt: kp.CertPEM, l.key: kp.KeyPEM}); err != nil {
			return err
		}
	}
	return nil
}

// loadOrMakeCA loads <dir>/<name>.crt and .key, or makes a new CA there.
func loadOrMakeCA(dir, name, commonName string) (*devca.CA, error) {
	if ca, err := loadCA(dir, name); err == nil {
		return ca, nil
	}
	ca, err := devca.New(commonName)
	if err != nil {
		return nil, err
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	if err := writeFiles(map[string][]byte{filepath.Join(dir, name+".crt"): ca.CertPEM(), filepath.Join(dir, name+".key"): keyPEM}); err != nil {
		return nil, err
	}
	return ca, nil
}

func loadCA(dir, name string) (*devca.CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, err
	}
	ca, err := devca.Load(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if time.Until(ca.Cert.NotAfter) < 30*24*time.Hour {
		return nil, errors.New("dev CA expires within 30 days")
	}
	return ca, nil
}

// fresh reports whether leaf was issued by ca and stays valid for a day.
func fresh(leaf *x509.Certificate, ca *devca.CA) bool {
	return leaf != nil && leaf.CheckSignatureFrom(ca.Cert) == nil && time.Until(leaf.NotAfter) > 24*time.Hour
}

func writeFiles(files map[string][]byte) error {
	for name, data := range files {
		if err := os.WriteFile(name, data, 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// upstreamTLS is the demo upstream's server config: it demands a client
// certificate issued by the dev CA.
func (p *pki) upstreamTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.upstream},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.ca.Pool(),
		MinVersion:   tls.VersionTLS12,
	}
}
