// Package materialtest runs the secrets service for tests of its consumers:
// the real one ([StartService], the keyway-secrets binary as a process), and
// [Fake], a fake of SecretsService (descriptions, plain HTTP) and
// MaterialService (key material, mTLS with a client certificate from an
// internal test CA) on loopback over an in-memory set of aliases and
// truststores, which checks nothing the real service checks and can be made
// unreachable at will.
package materialtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"iter"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/material"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testca"
)

// Fake is a fake secrets service. Safe for concurrent use.
type Fake struct {
	// APIURL serves SecretsService; InternalURL serves MaterialService
	// over mTLS.
	APIURL      string
	InternalURL string
	// Internal is the internal CA: it signs the internal port's
	// certificate and the clients' certificates.
	Internal *testca.CA

	api, internal *httptest.Server
	down          atomic.Bool
	fetches       atomic.Int64

	mu          sync.Mutex
	aliases     map[secretref.Ref]aliasEntry
	truststores map[string]storeEntry
}

type aliasEntry struct {
	version int
	pair    *testca.KeyPair
	chain   []*x509.Certificate
}

type storeEntry struct {
	version int
	cas     []*x509.Certificate
}

// Start serves a fake secrets service until the test ends.
func Start(tb testing.TB) *Fake {
	tb.Helper()
	f := &Fake{Internal: testca.New(tb, "Keyway internal CA"), aliases: map[secretref.Ref]aliasEntry{}, truststores: map[string]storeEntry{}}
	mux := http.NewServeMux()
	mux.Handle(secretsv1connect.NewSecretsServiceHandler(api{f}))
	f.api = httptest.NewServer(f.gate(mux))
	tb.Cleanup(f.api.Close)
	f.APIURL = f.api.URL

	imux := http.NewServeMux()
	imux.Handle(secretsv1connect.NewMaterialServiceHandler(materialAPI{f}))
	f.internal = httptest.NewUnstartedServer(f.gate(imux))
	f.internal.TLS = &tls.Config{
		Certificates: []tls.Certificate{f.Internal.Server("secrets.internal").TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    f.Internal.Pool(),
	}
	f.internal.EnableHTTP2 = true
	f.internal.StartTLS()
	tb.Cleanup(f.internal.Close)
	f.InternalURL = f.internal.URL
	return f
}

// gate answers 503 while the fake is down.
func (f *Fake) gate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// SetDown makes every call fail (true) or answer again (false).
func (f *Fake) SetDown(down bool) { f.down.Store(down) }

// Fetches counts MaterialService calls answered.
func (f *Fake) Fetches() int64 { return f.fetches.Load() }

// Client returns a MaterialService client with a certificate from the
// internal CA.
func (f *Fake) Client(tb testing.TB) *material.Client {
	tb.Helper()
	return material.NewWithTLS(f.InternalURL, f.ClientTLS(tb), 0)
}

// ClientTLS is a TLS config that the internal port accepts.
func (f *Fake) ClientTLS(tb testing.TB) *tls.Config {
	tb.Helper()
	kp := f.Internal.Client("proxy-node")
	return &tls.Config{Certificates: []tls.Certificate{kp.TLS}, RootCAs: f.Internal.Pool(), MinVersion: tls.VersionTLS12}
}

// PutAlias stores kp (and the intermediates after it) as the next version
// of the alias, and returns that version.
func (f *Fake) PutAlias(keystore, alias string, kp *testca.KeyPair, intermediates ...*x509.Certificate) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ref := secretref.Ref{Keystore: keystore, Alias: alias}
	e := f.aliases[ref]
	e.version++
	e.pair, e.chain = kp, append([]*x509.Certificate{kp.Cert}, intermediates...)
	f.aliases[ref] = e
	return strconv.Itoa(e.version)
}

// PutTruststore stores cas as the next version of a truststore.
func (f *Fake) PutTruststore(name string, cas ...*x509.Certificate) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.truststores[name]
	e.version++
	e.cas = cas
	f.truststores[name] = e
	return strconv.Itoa(e.version)
}

// SecretVersion is what the real service publishes for an alias: the value
// of "alias.<keystore>.<alias>" in the keyway-secret-versions bucket.
func (f *Fake) SecretVersion(keystore, alias string) *secretsv1.SecretVersion {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.aliases[secretref.Ref{Keystore: keystore, Alias: alias}]
	return &secretsv1.SecretVersion{Keystore: keystore, Alias: alias, Version: strconv.Itoa(e.version),
		Sha256Fingerprint: certs.Fingerprint(e.pair.Cert), NotAfter: timestamppb.New(e.pair.Cert.NotAfter)}
}

// TruststoreVersion is the published value of "truststore.<name>".
func (f *Fake) TruststoreVersion(name string) *secretsv1.SecretVersion {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.truststores[name]
	return &secretsv1.SecretVersion{Truststore: name, Version: strconv.Itoa(e.version), Sha256Fingerprint: certs.Fingerprint(e.cas[0])}
}

func describe(c *x509.Certificate) *secretsv1.Certificate {
	s := certs.Summarize(c)
	return &secretsv1.Certificate{
		Subject: s.Subject, Issuer: s.Issuer, DnsNames: s.DNSNames, IpAddresses: s.IPAddresses,
		NotBefore: timestamppb.New(s.NotBefore), NotAfter: timestamppb.New(s.NotAfter),
		Sha256Fingerprint: s.Fingerprint, KeyType: s.KeyType, IsCa: s.IsCA,
	}
}

func (e aliasEntry) describe(ref secretref.Ref) *secretsv1.Alias {
	a := &secretsv1.Alias{Keystore: ref.Keystore, Alias: ref.Alias, Backend: secretsv1.Backend_BACKEND_LOCAL, Version: strconv.Itoa(e.version)}
	for _, c := range e.chain {
		a.Chain = append(a.Chain, describe(c))
	}
	return a
}

func (e storeEntry) describe(name string) *secretsv1.Truststore {
	t := &secretsv1.Truststore{Name: name, Backend: secretsv1.Backend_BACKEND_LOCAL, Version: strconv.Itoa(e.version)}
	for _, c := range e.cas {
		t.Certificates = append(t.Certificates, describe(c))
	}
	return t
}

func (f *Fake) alias(keystore, alias string) (aliasEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.aliases[secretref.Ref{Keystore: keystore, Alias: alias}]
	if !ok {
		return e, connect.NewError(connect.CodeNotFound, fmt.Errorf("keystore %q alias %q not found", keystore, alias))
	}
	return e, nil
}

func (f *Fake) truststore(name string) (storeEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.truststores[name]
	if !ok {
		return e, connect.NewError(connect.CodeNotFound, fmt.Errorf("truststore %q not found", name))
	}
	return e, nil
}

type api struct{ f *Fake }

func (a api) GetAlias(_ context.Context, req *connect.Request[secretsv1.GetAliasRequest]) (*connect.Response[secretsv1.GetAliasResponse], error) {
	e, err := a.f.alias(req.Msg.GetKeystore(), req.Msg.GetAlias())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&secretsv1.GetAliasResponse{Alias: e.describe(secretref.Ref{Keystore: req.Msg.GetKeystore(), Alias: req.Msg.GetAlias()})}), nil
}

func (a api) GetTruststore(_ context.Context, req *connect.Request[secretsv1.GetTruststoreRequest]) (*connect.Response[secretsv1.GetTruststoreResponse], error) {
	e, err := a.f.truststore(req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&secretsv1.GetTruststoreResponse{Truststore: e.describe(req.Msg.GetName())}), nil
}

func (a api) ListKeystores(context.Context, *connect.Request[secretsv1.ListKeystoresRequest]) (*connect.Response[secretsv1.ListKeystoresResponse], error) {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	byName := map[string]*secretsv1.Keystore{}
	for ref, e := range a.f.aliases {
		ks := byName[ref.Keystore]
		if ks == nil {
			ks = &secretsv1.Keystore{Name: ref.Keystore}
			byName[ref.Keystore] = ks
		}
		ks.Aliases = append(ks.Aliases, e.describe(ref))
	}
	resp := &secretsv1.ListKeystoresResponse{}
	for _, name := range slices.Sorted(mapKeys(byName)) {
		resp.Keystores = append(resp.Keystores, byName[name])
	}
	return connect.NewResponse(resp), nil
}

func (a api) ListTruststores(context.Context, *connect.Request[secretsv1.ListTruststoresRequest]) (*connect.Response[secretsv1.ListTruststoresResponse], error) {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	resp := &secretsv1.ListTruststoresResponse{}
	for name, e := range a.f.truststores {
		resp.Truststores = append(resp.Truststores, e.describe(name))
	}
	return connect.NewResponse(resp), nil
}

func (api) PutAlias(context.Context, *connect.Request[secretsv1.PutAliasRequest]) (*connect.Response[secretsv1.PutAliasResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("the fake stores through Fake.PutAlias"))
}

func (api) PutTruststore(context.Context, *connect.Request[secretsv1.PutTruststoreRequest]) (*connect.Response[secretsv1.PutTruststoreResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("the fake stores through Fake.PutTruststore"))
}

func (api) DeleteAlias(context.Context, *connect.Request[secretsv1.DeleteAliasRequest]) (*connect.Response[secretsv1.DeleteAliasResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("not in the fake"))
}

func (api) DeleteTruststore(context.Context, *connect.Request[secretsv1.DeleteTruststoreRequest]) (*connect.Response[secretsv1.DeleteTruststoreResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("not in the fake"))
}

type materialAPI struct{ f *Fake }

func (m materialAPI) FetchAlias(_ context.Context, req *connect.Request[secretsv1.FetchAliasRequest]) (*connect.Response[secretsv1.FetchAliasResponse], error) {
	e, err := m.f.alias(req.Msg.GetKeystore(), req.Msg.GetAlias())
	if err != nil {
		return nil, err
	}
	m.f.fetches.Add(1)
	chain := string(e.pair.CertPEM)
	for _, c := range e.chain[1:] {
		chain += string(pemOf(c))
	}
	return connect.NewResponse(&secretsv1.FetchAliasResponse{
		Alias:          e.describe(secretref.Ref{Keystore: req.Msg.GetKeystore(), Alias: req.Msg.GetAlias()}),
		CertificatePem: chain, PrivateKeyPem: string(e.pair.KeyPEM),
	}), nil
}

func (m materialAPI) FetchTruststore(_ context.Context, req *connect.Request[secretsv1.FetchTruststoreRequest]) (*connect.Response[secretsv1.FetchTruststoreResponse], error) {
	e, err := m.f.truststore(req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	m.f.fetches.Add(1)
	var bundle []byte
	for _, c := range e.cas {
		bundle = append(bundle, pemOf(c)...)
	}
	return connect.NewResponse(&secretsv1.FetchTruststoreResponse{Truststore: e.describe(req.Msg.GetName()), CertificatesPem: string(bundle)}), nil
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func mapKeys[K comparable, V any](m map[K]V) iter.Seq[K] { return maps.Keys(m) }
