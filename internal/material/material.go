// Package material is the client of the secrets service's MaterialService,
// on its internal mTLS port: it fetches key material and parses it into
// what TLS configs are built from. It is the only path key material takes
// to a proxy node (and to the policy service's live probe); nothing here
// logs or prints a key. Which version of a secret is current is announced
// in the versions bucket (package secretref).
package material

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/internal/certfiles"
	"keyway.dev/internal/certs"
	"keyway.dev/internal/secretref"
)

// Config says where MaterialService is and how to authenticate to it.
type Config struct {
	// URL is the internal port, e.g. "https://127.0.0.1:8092", or the
	// internal ports of the service's replicas, comma-separated: a fetch
	// moves on to the next when one cannot be reached.
	URL string
	// CertFile and KeyFile are this process's client certificate, issued
	// by the internal CA; CAFile is the CA that signs the secrets
	// service's certificate. PEM files.
	CertFile, KeyFile, CAFile string
	// Timeout bounds one fetch. Default 10s.
	Timeout time.Duration
}

// Alias is the material of one version of an alias.
type Alias struct {
	Ref     secretref.Ref
	Version string
	// Certificate is the key pair with Leaf set, chain in order.
	Certificate *tls.Certificate
	// Fingerprint is the leaf's [certs.Fingerprint].
	Fingerprint string
}

// Truststore is the material of one version of a truststore.
type Truststore struct {
	Name    string
	Version string
	CAs     []*x509.Certificate
	// Fingerprint is the first CA's [certs.Fingerprint].
	Fingerprint string
}

// ErrNotFound is returned (wrapped) when the alias or truststore does not
// exist.
var ErrNotFound = errors.New("material: not found")

// Client fetches material. Safe for concurrent use.
type Client struct {
	api     secretsv1connect.MaterialServiceClient
	timeout time.Duration
	// pair is the client certificate read from files (New); nil with
	// NewWithTLS.
	pair *certfiles.KeyPair
}

// New reads the client certificate and CA ([TLSConfig]) and
// returns a client of MaterialService at cfg.URL. The certificate and key,
// and the CA bundle, are read again when their files change, so a renewed
// certificate is presented, and a rotated CA trusted, at the next
// connection.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("material: the secrets service's internal URL is required")
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" || cfg.CAFile == "" {
		return nil, errors.New("material: the internal port requires mTLS: give the client certificate, its key and the internal CA")
	}
	tlsCfg, pair, bundle, err := tlsConfig(Files{Cert: cfg.CertFile, Key: cfg.KeyFile, CA: cfg.CAFile})
	if err != nil {
		return nil, err
	}
	hc, base, err := Replicated(httpClientWith(tlsCfg, bundle), cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("material: the secrets service's internal URL: %w", err)
	}
	c := NewWithTLS(cfg.URL, tlsCfg, cfg.Timeout)
	c.api = secretsv1connect.NewMaterialServiceClient(hc, base)
	c.pair = pair
	return c, nil
}

// Certificate is the client certificate the client presents now; nil for a
// client made by [NewWithTLS].
func (c *Client) Certificate() *x509.Certificate {
	if c.pair == nil {
		return nil
	}
	return c.pair.Leaf()
}

// NewWithTLS is [New] with a ready TLS client config (tests, and callers
// that hold the certificate in memory).
func NewWithTLS(url string, tlsCfg *tls.Config, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &Client{api: NewServiceClient(url, tlsCfg), timeout: timeout}
}

// Alias fetches the current version of an alias.
func (c *Client) Alias(ctx context.Context, ref secretref.Ref) (*Alias, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.api.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: ref.Keystore, Alias: ref.Alias}))
	if err != nil {
		return nil, fetchError(fmt.Sprintf("keystore %q alias %q", ref.Keystore, ref.Alias), err)
	}
	return ParseAlias(ref, resp.Msg)
}

// Truststore fetches the current version of a truststore.
func (c *Client) Truststore(ctx context.Context, name string) (*Truststore, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.api.FetchTruststore(ctx, connect.NewRequest(&secretsv1.FetchTruststoreRequest{Name: name}))
	if err != nil {
		return nil, fetchError(fmt.Sprintf("truststore %q", name), err)
	}
	return ParseTruststore(name, resp.Msg)
}

func fetchError(what string, err error) error {
	if connect.CodeOf(err) == connect.CodeNotFound {
		return fmt.Errorf("fetching %s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("fetching %s from the secrets service: %w", what, err)
}

// ParseAlias turns a FetchAlias answer into a key pair, checking that the
// key matches the leaf. Errors never quote the key.
func ParseAlias(ref secretref.Ref, resp *secretsv1.FetchAliasResponse) (*Alias, error) {
	pair, err := tls.X509KeyPair([]byte(resp.GetCertificatePem()), []byte(resp.GetPrivateKeyPem()))
	if err != nil {
		return nil, fmt.Errorf("material: keystore %q alias %q version %q: the key pair does not load: %w", ref.Keystore, ref.Alias, resp.GetAlias().GetVersion(), err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("material: keystore %q alias %q: parsing the leaf: %w", ref.Keystore, ref.Alias, err)
		}
	}
	return &Alias{Ref: ref, Version: resp.GetAlias().GetVersion(), Certificate: &pair, Fingerprint: certs.Fingerprint(pair.Leaf)}, nil
}

// ParseTruststore turns a FetchTruststore answer into CA certificates.
func ParseTruststore(name string, resp *secretsv1.FetchTruststoreResponse) (*Truststore, error) {
	pool := []byte(resp.GetCertificatesPem())
	var cas []*x509.Certificate
	for len(pool) > 0 {
		var block *pem.Block
		block, pool = pem.Decode(pool)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("material: truststore %q: certificate %d does not parse: %w", name, len(cas)+1, err)
		}
		cas = append(cas, cert)
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("material: truststore %q version %q holds no certificate", name, resp.GetTruststore().GetVersion())
	}
	return &Truststore{Name: name, Version: resp.GetTruststore().GetVersion(), CAs: cas, Fingerprint: certs.Fingerprint(cas[0])}, nil
}
