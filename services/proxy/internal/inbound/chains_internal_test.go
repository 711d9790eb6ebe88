package inbound

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// chainHost is the one host of a snapshot that requires and verifies
// client certificates from clients.
func chainHost(t *testing.T, clients *testca.CA) *host {
	t.Helper()
	servers := testca.New(t, "server CA")
	kp := servers.Server("test.com")
	snap, err := buildSnapshot(&model.Listener{Name: "l", Hosts: []model.ListenerHost{{
		Hostnames: []string{"test.com"}, Certificate: &kp.TLS, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: []*x509.Certificate{clients.Cert},
	}}}, func(*model.ListenerHost) (*hostRevocation, error) { return nil, nil }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := snap.def
	if h.chains == nil {
		t.Fatal("a host that requires and verifies client certificates has no chain cache")
	}
	if h.cfg.ClientAuth != tls.RequireAnyClientCert || h.cfg.VerifyConnection == nil {
		t.Fatalf("crypto/tls still verifies the chain (ClientAuth %v)", h.cfg.ClientAuth)
	}
	return h
}

// A cached chain is used only while every certificate of it is valid:
// past the leaf's NotAfter it is verified again, and refused as expired.
// An entry is also verified again after ChainCacheMaxAge, and before the
// time it was verified at (a clock set back).
func TestChainCacheBounds(t *testing.T) {
	clients := testca.New(t, "client CA")
	h := chainHost(t, clients)
	now := time.Now()
	leaf := clients.Issue(testca.Options{CommonName: "alice", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Minute)})
	certs := []*x509.Certificate{leaf.Cert}
	check := func(at time.Time, wantCached bool, want failure.Reason) {
		t.Helper()
		e, cached, err := h.chains.verify(h, certs, at)
		var got failure.Reason
		if err != nil {
			got = verifyReason(err)
		}
		if cached != wantCached || got != want {
			t.Errorf("at now%+v: cached %v, refused %q (%v); want cached %v, refused %q", at.Sub(now), cached, got, err, wantCached, want)
		}
		if err == nil && (e.verification.xfcc == "" || e.verification.reason != "") {
			t.Errorf("at now%+v: entry's judgement %+v", at.Sub(now), e.verification)
		}
	}
	check(now, false, "")
	check(now.Add(30*time.Second), true, "")
	check(now.Add(-time.Second), false, "") // before it was verified: again
	check(now.Add(2*time.Minute), false, failure.ClientCertificateExpired)

	long := clients.Client("bob")
	certs = []*x509.Certificate{long.Cert}
	check(now, false, "")
	check(now.Add(ChainCacheMaxAge-time.Second), true, "")
	check(now.Add(ChainCacheMaxAge), false, "")
}

// The intermediates the client sends are part of the key: the same leaf
// with another chain is verified on its own.
func TestChainCacheKeyIsTheWholeChain(t *testing.T) {
	root := testca.New(t, "client root")
	inter := root.Intermediate("client intermediate")
	h := chainHost(t, root)
	leaf := inter.Client("alice")
	now := time.Now()
	if _, _, err := h.chains.verify(h, []*x509.Certificate{leaf.Cert}, now); err == nil {
		t.Fatal("a leaf without its intermediate verified")
	}
	if _, cached, err := h.chains.verify(h, []*x509.Certificate{leaf.Cert, inter.Cert}, now); err != nil || cached {
		t.Fatalf("with its intermediate: cached %v, %v", cached, err)
	}
	if _, cached, err := h.chains.verify(h, []*x509.Certificate{leaf.Cert}, now); err == nil || cached {
		t.Errorf("the leaf alone after its full chain was cached: cached %v, %v", cached, err)
	}
}

// The cache holds at most ChainCacheMaxEntries chains.
func TestChainCacheIsBounded(t *testing.T) {
	clients := testca.New(t, "client CA")
	h := chainHost(t, clients)
	now := time.Now()
	for i := range ChainCacheMaxEntries {
		var k [sha256.Size]byte
		k[0], k[1] = byte(i), byte(i>>8)
		h.chains.entries[k] = &chainEntry{verifiedAt: now, until: now.Add(time.Minute)}
	}
	if _, cached, err := h.chains.verify(h, []*x509.Certificate{clients.Client("alice").Cert}, now); err != nil || cached {
		t.Fatalf("cached %v, %v", cached, err)
	}
	if n := h.chains.len(); n != ChainCacheMaxEntries {
		t.Errorf("%d chains held, want %d", n, ChainCacheMaxEntries)
	}
}

// BenchmarkChainVerify is what a handshake spends on the client's chain:
// verified (x509's Verify with crypto/tls's options, the CA's ECDSA P-256
// signature included, and the judgement the first request needs) against
// taken from the host's cache (the chain's SHA-256 and a map lookup).
func BenchmarkChainVerify(b *testing.B) {
	clients := testca.New(b, "client CA")
	servers := testca.New(b, "server CA")
	kp := servers.Server("test.com")
	snap, err := buildSnapshot(&model.Listener{Name: "l", Hosts: []model.ListenerHost{{
		Hostnames: []string{"test.com"}, Certificate: &kp.TLS, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: []*x509.Certificate{clients.Cert},
	}}}, func(*model.ListenerHost) (*hostRevocation, error) { return nil, nil }, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	h := snap.def
	certs := []*x509.Certificate{clients.Client("alice").Cert}
	b.Run("verified", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.chains.mu.Lock()
			clear(h.chains.entries)
			h.chains.mu.Unlock()
			if _, cached, err := h.chains.verify(h, certs, time.Now()); err != nil || cached {
				b.Fatal(cached, err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, cached, err := h.chains.verify(h, certs, time.Now()); err != nil || !cached {
				b.Fatal(cached, err)
			}
		}
	})
}

// A host that only requests client certificates keeps crypto/tls's
// clientAuth (nothing verified at the handshake) and uses its cache for the
// requests that judge the certificate (ClientOf).
func TestChainCacheOnRequestingHost(t *testing.T) {
	clients := testca.New(t, "client CA")
	servers := testca.New(t, "server CA")
	kp := servers.Server("test.com")
	snap, err := buildSnapshot(&model.Listener{Name: "l", Hosts: []model.ListenerHost{{
		Hostnames: []string{"test.com"}, Certificate: &kp.TLS, ClientAuth: tls.RequestClientCert,
		ClientCAs: []*x509.Certificate{clients.Cert},
	}}}, func(*model.ListenerHost) (*hostRevocation, error) { return nil, nil }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := snap.def
	if h.chains == nil || h.cfg.ClientAuth != tls.RequestClientCert || h.cfg.VerifyConnection != nil {
		t.Fatalf("chains %v, ClientAuth %v, VerifyConnection set %v; want a cache, request, none", h.chains != nil, h.cfg.ClientAuth, h.cfg.VerifyConnection != nil)
	}
	certs := []*x509.Certificate{clients.Client("alice").Cert}
	now := time.Now()
	if v := verify(h, certs, now); v.reason != "" || v.xfcc == "" {
		t.Fatalf("first verification: %+v", v)
	}
	if e := h.chains.lookup(certs, now); e == nil {
		t.Error("the chain verified at a request is not in the cache")
	}
	other := testca.New(t, "other CA").Client("mallory")
	if v := verify(h, []*x509.Certificate{other.Cert}, now); v.reason != failure.ClientCertificateUntrusted {
		t.Errorf("another CA's certificate: %q, want %q", v.reason, failure.ClientCertificateUntrusted)
	}
}
