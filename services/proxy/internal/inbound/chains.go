package inbound

import (
	"crypto/fips140"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of a host's cache of verified client chains.
const (
	// ChainCacheMaxAge is the longest a verified chain is taken on trust
	// without being verified again, however far its NotAfter.
	ChainCacheMaxAge = 5 * time.Minute
	// ChainCacheMaxEntries bounds the chains one host remembers; beyond
	// it, one entry makes room for the next.
	ChainCacheMaxEntries = 4096
)

// ChainObserver counts the client chain verifications of hosts that verify
// client certificates: cached is set when the chain was verified before,
// within the cache's bounds, and its verification was reused. Called once
// per handshake that presents a certificate, from the handshake's
// goroutine; must be cheap and safe for concurrent use.
type ChainObserver interface {
	ObserveClientChain(listener string, cached bool)
}

// noChainCache, set by benchmarks only, leaves the verification of client
// chains to crypto/tls in the snapshots built from then on: the cache's
// effect measured in one process.
var noChainCache atomic.Bool

// chainCache verifies client certificate chains for one host of one
// snapshot, and remembers those that verified, so that a client that
// connects again with the same chain costs a lookup instead of a chain
// build and the CA's signature check.
//
// crypto/tls would verify the chain at every handshake (it keeps nothing
// between connections on the server side), so a host with a cache lets
// crypto/tls ask for the certificate without verifying it (RequireAny /
// Request) and verifies it here, in VerifyConnection, with the options
// crypto/tls uses: the host's clientCAs as the only roots, the client's
// other certificates as intermediates, client authentication as key usage,
// now as the time. The CertificateVerify signature (proof of the key) is
// still checked by crypto/tls at every handshake; revocation, verifyDepth
// and the request-time checks see the verified chains as before.
//
// An entry is keyed by the SHA-256 of the presented certificates' bytes in
// order, so only the very same chain hits. It lives until the earliest
// NotAfter among the certificates of its verified chains, and at most
// [ChainCacheMaxAge]. The cache belongs to one snapshot: any change to the
// Listener, its clientCAs included, builds new hosts with empty caches.
// Failures are not remembered (a chain that is not yet valid may become
// valid).
type chainCache struct {
	roots    *x509.CertPool
	listener string
	observer ChainObserver

	mu      sync.RWMutex
	entries map[[sha256.Size]byte]*chainEntry
}

// chainEntry is one verified chain. Immutable.
type chainEntry struct {
	chains [][]*x509.Certificate
	// verifiedAt and until bound when the entry is used.
	verifiedAt, until time.Time
	// verification is the host's judgement of the chain (verifyDepth,
	// issuer, XFCC), made once; its leaf is the first presenter's.
	verification *verification
}

// newChainCache is the cache of a host that has clientCAs: it verifies
// client chains at the handshake when the host's clientAuth verifies
// ([chainCache.install]), and at the first request of a connection
// ([ClientOf]) for the routes that require a verified certificate on a host
// that only requests one. nil (crypto/tls and ClientOf verify every time)
// when the host has no clientCAs, or when the FIPS 140 mode is on, in which
// crypto/tls also restricts the chains it accepts to FIPS-approved
// algorithms.
func newChainCache(h *host, listener string, observer ChainObserver) *chainCache {
	if h.roots == nil || fips140.Enabled() || noChainCache.Load() {
		return nil
	}
	return &chainCache{roots: h.roots, listener: listener, observer: observer, entries: make(map[[sha256.Size]byte]*chainEntry)}
}

// install makes h's config verify through c: crypto/tls asks for the
// certificate as h's clientAuth does but leaves its verification to c,
// which runs first in VerifyConnection (on resumed sessions too) and hands
// the verified chains on to the checks that follow.
// A host whose clientAuth does not verify is left as it is.
func (c *chainCache) install(h *host) {
	switch h.clientAuth {
	case tls.RequireAndVerifyClientCert:
		h.cfg.ClientAuth = tls.RequireAnyClientCert
	case tls.VerifyClientCertIfGiven:
		h.cfg.ClientAuth = tls.RequestClientCert
	default:
		return
	}
	next := h.cfg.VerifyConnection
	h.cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) > 0 {
			e, cached, err := c.verify(h, cs.PeerCertificates, time.Now())
			if c.observer != nil {
				c.observer.ObserveClientChain(c.listener, cached)
			}
			if err != nil {
				return err
			}
			cs.VerifiedChains = e.chains
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
}

// chainKey is the SHA-256 of certs' DER, each preceded by its length.
func chainKey(certs []*x509.Certificate) [sha256.Size]byte {
	d := sha256.New()
	var n [4]byte
	for _, cert := range certs {
		binary.BigEndian.PutUint32(n[:], uint32(len(cert.Raw)))
		d.Write(n[:])
		d.Write(cert.Raw)
	}
	var key [sha256.Size]byte
	d.Sum(key[:0])
	return key
}

// lookup is the entry of certs valid at now, or nil.
func (c *chainCache) lookup(certs []*x509.Certificate, now time.Time) *chainEntry {
	key := chainKey(certs)
	c.mu.RLock()
	e := c.entries[key]
	c.mu.RUnlock()
	if e == nil || now.Before(e.verifiedAt) || !now.Before(e.until) {
		return nil
	}
	return e
}

// verify verifies certs (leaf first) for h at now, from the cache when it
// holds them (cached is then set). The error is crypto/tls's own for a
// chain that does not verify: a *tls.CertificateVerificationError around
// x509's error.
func (c *chainCache) verify(h *host, certs []*x509.Certificate, now time.Time) (e *chainEntry, cached bool, err error) {
	if e := c.lookup(certs, now); e != nil {
		return e, true, nil
	}
	opts := x509.VerifyOptions{
		Roots:         c.roots,
		CurrentTime:   now,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, cert := range certs[1:] {
		opts.Intermediates.AddCert(cert)
	}
	chains, err := certs[0].Verify(opts)
	if err != nil {
		return nil, false, &tls.CertificateVerificationError{UnverifiedCertificates: certs, Err: err}
	}
	e = &chainEntry{chains: chains, verifiedAt: now, until: now.Add(ChainCacheMaxAge), verification: fromChains(h, certs[0], chains)}
	for _, chain := range chains {
		for _, cert := range chain {
			if cert.NotAfter.Before(e.until) {
				e.until = cert.NotAfter
			}
		}
	}
	c.mu.Lock()
	if len(c.entries) >= ChainCacheMaxEntries {
		c.evictLocked(now)
	}
	c.entries[chainKey(certs)] = e
	c.mu.Unlock()
	return e, false, nil
}

// evictLocked drops the expired entries, or, when none has, one entry
// (the map's order: an arbitrary one). c.mu is held.
func (c *chainCache) evictLocked(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.until) {
			delete(c.entries, k)
		}
	}
	if len(c.entries) < ChainCacheMaxEntries {
		return
	}
	for k := range c.entries {
		delete(c.entries, k)
		return
	}
}

// len is the number of chains held.
func (c *chainCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
