// Package pki issues certificates from a Vault PKI role
// (<mount>/issue/<role>) and says when to renew them. Issued certificates
// are not renewable leases, so, as consul-template does for them, a new
// one is issued at a fraction of the lifetime with jitter, so that many
// services do not hit Vault at once.
package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"keyway.dev/secrets/internal/secret"
)

// DefaultRenewFraction is the fraction of a certificate's lifetime after
// which a new one is issued.
const DefaultRenewFraction = 2.0 / 3.0

// jitter spreads renewals over ±5% of the lifetime (consul-template's
// stagger for non-renewable leases).
const jitter = 0.1

// Issuer issues from one PKI mount. Safe for concurrent use.
type Issuer struct {
	client *api.Client
	mount  string
}

// New returns an issuer for the PKI mount ("pki").
func New(client *api.Client, mount string) *Issuer {
	if mount == "" {
		mount = "pki"
	}
	return &Issuer{client: client, mount: strings.Trim(mount, "/")}
}

// Mount is the PKI mount's path.
func (i *Issuer) Mount() string { return i.mount }

// Issue asks Vault for a new certificate for b. It returns the chain (leaf
// first, then the issuing CAs) in PEM and the private key.
func (i *Issuer) Issue(ctx context.Context, b *secret.PKIBinding) (string, secret.PrivateKey, error) {
	req := map[string]any{"common_name": b.CommonName, "format": "pem", "private_key_format": "pkcs8"}
	if len(b.AltNames) > 0 {
		req["alt_names"] = strings.Join(b.AltNames, ",")
	}
	if b.TTL > 0 {
		req["ttl"] = b.TTL.String()
	}
	path := i.mount + "/issue/" + b.Role
	s, err := i.client.Logical().WriteWithContext(ctx, path, req)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode >= 400 && re.StatusCode < 500 {
			return "", secret.PrivateKey{}, fmt.Errorf("pki: Vault refused to issue %q from %s (%s): %w", b.CommonName, path, strings.Join(re.Errors, "; "), secret.ErrInvalidValue)
		}
		return "", secret.PrivateKey{}, fmt.Errorf("pki: issuing %q from %s: %w", b.CommonName, path, err)
	}
	if s == nil || s.Data == nil {
		return "", secret.PrivateKey{}, fmt.Errorf("pki: issuing %q from %s: Vault answered without data", b.CommonName, path)
	}
	cert, _ := s.Data["certificate"].(string)
	key, _ := s.Data["private_key"].(string)
	if cert == "" || key == "" {
		return "", secret.PrivateKey{}, fmt.Errorf("pki: issuing %q from %s: the answer lacks certificate or private_key", b.CommonName, path)
	}
	chain := []string{strings.TrimSpace(cert)}
	if cas, ok := s.Data["ca_chain"].([]any); ok {
		for _, c := range cas {
			if pem, ok := c.(string); ok && strings.TrimSpace(pem) != "" {
				chain = append(chain, strings.TrimSpace(pem))
			}
		}
	} else if ca, ok := s.Data["issuing_ca"].(string); ok && ca != "" {
		chain = append(chain, strings.TrimSpace(ca))
	}
	return strings.Join(chain, "\n") + "\n", secret.NewPrivateKey([]byte(key)), nil
}

// CheckRole reports secret.ErrNotFound when the role does not exist.
func (i *Issuer) CheckRole(ctx context.Context, role string) error {
	s, err := i.client.Logical().ReadWithContext(ctx, i.mount+"/roles/"+role)
	if err != nil {
		return fmt.Errorf("pki: reading role %s/roles/%s: %w", i.mount, role, err)
	}
	if s == nil {
		return secret.ErrNotFound
	}
	return nil
}

// RenewAt is when to replace leaf, issued at issuedAt: fraction of the
// time from issuedAt to its expiry, ±5% of it at random. A fraction out of
// (0, 1) is DefaultRenewFraction.
func RenewAt(leaf *x509.Certificate, issuedAt time.Time, fraction float64) time.Time {
	if fraction <= 0 || fraction >= 1 {
		fraction = DefaultRenewFraction
	}
	f := fraction + (rand.Float64()-0.5)*jitter
	if f <= 0 || f >= 1 {
		f = fraction
	}
	life := leaf.NotAfter.Sub(issuedAt)
	if life <= 0 {
		return issuedAt
	}
	return issuedAt.Add(time.Duration(float64(life) * f))
}
