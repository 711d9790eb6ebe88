// Package secretcheck is the policy service's view of the secrets service:
// a SecretsService client that answers validation's questions about
// keystores, aliases and truststores ([secretref.Secrets]). It reads
// descriptions only; key material is fetched, for the live probe alone,
// through [material.Client].
package secretcheck

import (
	"cmp"
	"context"
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

// Client implements [secretref.Secrets] over SecretsService. Safe for concurrent
// use.
type Client struct {
	api     secretsv1connect.SecretsServiceClient
	timeout time.Duration
}

var _ secretref.Secrets = (*Client)(nil)

// New returns a client of the SecretsService at url (e.g.
// "https://127.0.0.1:8082"); httpClient may be nil for http.DefaultClient (a
// service run with --insecure-no-auth); over https it must present the
// policy service's client certificate.
// Each question is bounded by timeout (default 5s), so that an apply never
// hangs on an unreachable secrets service.
func New(url string, httpClient *http.Client, timeout time.Duration) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Client{api: secretsv1connect.NewSecretsServiceClient(httpClient, strings.TrimRight(url, "/")), timeout: timeout}
}

// Alias describes an alias. When it is not found, it lists the keystores to
// tell a missing keystore from a missing alias and to suggest names.
func (c *Client) Alias(ctx context.Context, keystore, alias string) (secretref.AliasInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.api.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: keystore, Alias: alias}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		return secretref.AliasInfo{}, c.aliasNotFound(ctx, keystore, alias)
	}
	if err != nil {
		return secretref.AliasInfo{}, fmt.Errorf("asking for keystore %q alias %q: %w", keystore, alias, err)
	}
	a := resp.Msg.GetAlias()
	info := secretref.AliasInfo{Version: a.GetVersion(), Server: a.GetUsage() == secretsv1.Usage_USAGE_SERVER, Rejected: rejected(a.GetRejection())}
	for _, cert := range a.GetChain() {
		info.Chain = append(info.Chain, summary(cert))
	}
	return info, nil
}

func (c *Client) aliasNotFound(ctx context.Context, keystore, alias string) error {
	resp, err := c.api.ListKeystores(ctx, connect.NewRequest(&secretsv1.ListKeystoresRequest{}))
	if err != nil {
		// Still a not-found answer; only the suggestions are missing.
		return &secretref.NotFoundError{Kind: "alias", Name: alias}
	}
	var keystores []string
	for _, ks := range resp.Msg.GetKeystores() {
		keystores = append(keystores, ks.GetName())
		if ks.GetName() != keystore {
			continue
		}
		var aliases []string
		for _, a := range ks.GetAliases() {
			aliases = append(aliases, a.GetAlias())
		}
		return &secretref.NotFoundError{Kind: "alias", Name: alias, Known: aliases}
	}
	return &secretref.NotFoundError{Kind: "keystore", Name: keystore, Known: keystores}
}

// Truststore describes a truststore.
func (c *Client) Truststore(ctx context.Context, name string) (secretref.TruststoreInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.api.GetTruststore(ctx, connect.NewRequest(&secretsv1.GetTruststoreRequest{Name: name}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		nf := &secretref.NotFoundError{Kind: "truststore", Name: name}
		if list, lerr := c.api.ListTruststores(ctx, connect.NewRequest(&secretsv1.ListTruststoresRequest{})); lerr == nil {
			for _, ts := range list.Msg.GetTruststores() {
				nf.Known = append(nf.Known, ts.GetName())
			}
		}
		return secretref.TruststoreInfo{}, nf
	}
	if err != nil {
		return secretref.TruststoreInfo{}, fmt.Errorf("asking for truststore %q: %w", name, err)
	}
	ts := resp.Msg.GetTruststore()
	info := secretref.TruststoreInfo{Version: ts.GetVersion(), Rejected: rejected(ts.GetRejection())}
	for _, cert := range ts.GetCertificates() {
		info.Certificates = append(info.Certificates, summary(cert))
	}
	return info, nil
}

// rejected says which backend version the secrets service refused, and
// why; "" when it refused none.
func rejected(r *secretsv1.Rejection) string {
	if r == nil {
		return ""
	}
	return fmt.Sprintf("version %s in the secrets backend was rejected (%s): %s", cmp.Or(r.GetVersion(), "?"), r.GetReason(), r.GetMessage())
}

// summary converts the service's description; fingerprints lose their
// colons to match certs.Fingerprint.
func summary(c *secretsv1.Certificate) certs.Summary {
	return certs.Summary{
		Subject: c.GetSubject(), Issuer: c.GetIssuer(),
		DNSNames: c.GetDnsNames(), IPAddresses: c.GetIpAddresses(),
		NotBefore: c.GetNotBefore().AsTime(), NotAfter: c.GetNotAfter().AsTime(),
		Fingerprint: strings.ToLower(strings.ReplaceAll(c.GetSha256Fingerprint(), ":", "")),
		KeyType:     c.GetKeyType(), IsCA: c.GetIsCa(), V1Root: c.GetV1Root(),
	}
}
