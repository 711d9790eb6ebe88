package inlinekeys

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/secretref"
)

// Client stores and deletes the aliases of [Keystore] through the secrets
// service's SecretsService. Safe for concurrent use.
type Client struct {
	api     secretsv1connect.SecretsServiceClient
	timeout time.Duration
}

// NewClient returns a client of the SecretsService at url (e.g.
// "http://127.0.0.1:8082"). httpClient carries the caller's transport and
// credentials (nil: http.DefaultClient); each call is bounded by timeout
// (default 10s).
func NewClient(url string, httpClient *http.Client, timeout time.Duration) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &Client{api: secretsv1connect.NewSecretsServiceClient(httpClient, strings.TrimRight(url, "/")), timeout: timeout}
}

// Put stores the pair p under ref, unless the alias already holds the same
// certificate chain with the same usage: re-applying a manifest writes no
// new version. (The alias is named for the key's fingerprint, and a chain
// whose leaf carries that public key has only the one private key, so an
// equal chain means an equal key.) It reports whether it wrote.
func (c *Client) Put(ctx context.Context, ref secretref.Ref, p Pair) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	usage := secretsv1.Usage_USAGE_CLIENT
	if p.Server {
		usage = secretsv1.Usage_USAGE_SERVER
	}
	chain, err := Chain(p.Crt)
	if err != nil {
		return false, err
	}
	got, err := c.api.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: ref.Keystore, Alias: ref.Alias}))
	switch {
	case err == nil && got.Msg.GetAlias().GetUsage() == usage && sameChain(got.Msg.GetAlias().GetChain(), chain):
		return false, nil
	case err != nil && connect.CodeOf(err) != connect.CodeNotFound:
		return false, fmt.Errorf("reading keystore %q alias %q: %w", ref.Keystore, ref.Alias, err)
	}
	if _, err := c.api.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{
		Keystore: ref.Keystore, Alias: ref.Alias, CertificatePem: p.Crt, PrivateKeyPem: p.Key, Usage: usage,
	})); err != nil {
		return false, fmt.Errorf("storing keystore %q alias %q: %w", ref.Keystore, ref.Alias, err)
	}
	return true, nil
}

// Delete deletes the alias ref; one already gone is not an error.
func (c *Client) Delete(ctx context.Context, ref secretref.Ref) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, err := c.api.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: ref.Keystore, Alias: ref.Alias}))
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return fmt.Errorf("deleting keystore %q alias %q: %w", ref.Keystore, ref.Alias, err)
	}
	return nil
}

// sameChain compares the service's description of a chain with a parsed
// one, by SHA-256 fingerprints.
func sameChain(described []*secretsv1.Certificate, chain []*x509.Certificate) bool {
	if len(described) != len(chain) {
		return false
	}
	for i, d := range described {
		if normalize(d.GetSha256Fingerprint()) != certs.Fingerprint(chain[i]) {
			return false
		}
	}
	return true
}

func normalize(fp string) string {
	return strings.ToLower(strings.ReplaceAll(fp, ":", ""))
}
