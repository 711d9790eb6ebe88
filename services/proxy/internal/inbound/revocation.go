package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
)

// Phases of a revocation check, as metrics label them.
const (
	// PhaseHandshake is the check of a new connection's client
	// certificate, in VerifyConnection.
	PhaseHandshake = "handshake"
	// PhaseRequest is the check again at each request on an open
	// connection, so that a certificate revoked while its connection is
	// open is refused at its next request.
	PhaseRequest = "request"
)

// DefaultRevocationWait bounds how long a handshake waits for the first
// fetch of a CRL or an OCSP response that its client certificate needs.
const DefaultRevocationWait = 2 * time.Second

// RevocationObserver counts revocation checks of client certificates. Called
// at every handshake and request on a host that checks; must be cheap and
// safe for concurrent use.
type RevocationObserver interface {
	ObserveRevocationCheck(mode revocation.Mode, phase string, result revocation.Result)
}

// hostRevocation is how one host of a snapshot checks client certificates
// for revocation. The checker belongs to the snapshot, which closes it.
type hostRevocation struct {
	checker  *revocation.Checker
	cache    *revocation.Cache
	mode     revocation.Mode
	observer RevocationObserver
	// wait bounds a handshake's wait for a first fetch.
	wait time.Duration
}

// newHostRevocation makes h's checker; nil when h does not check. m.mu is
// held (by Apply).
func (m *Manager) newHostRevocation(h *model.ListenerHost) (*hostRevocation, error) {
	if !h.Revocation.On() {
		return nil, nil
	}
	ch, err := m.cacheLocked().Checker(revocation.Policy{
		Mode:               h.Revocation.Mode,
		CRLs:               h.Revocation.CRLs,
		DistributionPoints: h.Revocation.DistributionPoints,
		OCSP:               h.Revocation.OCSP,
		OCSPResponder:      h.Revocation.OCSPResponder,
		Issuers:            h.ClientCAs,
	})
	if err != nil {
		return nil, err
	}
	return &hostRevocation{checker: ch, cache: m.revocation, mode: ch.Mode(), observer: m.opts.RevocationChecks, wait: m.opts.RevocationWait}, nil
}

func (r *hostRevocation) observe(phase string, result revocation.Result) {
	if r.observer != nil {
		r.observer.ObserveRevocationCheck(r.mode, phase, result)
	}
}

// verifyConnection checks the client certificate of a handshake whose chain
// crypto/tls verified. In hard-fail mode, a certificate that needs a list
// or response not fetched yet waits for that first fetch, at most r.wait,
// rather than be refused for want of it; in soft-fail mode it is allowed at
// once (and checked again at each request).
func (r *hostRevocation) verifyConnection(cs tls.ConnectionState, depth int) error {
	leaf, issuer := chainIssuer(cs.VerifiedChains, depth)
	if issuer == nil {
		return nil // no verified chain, or the leaf is a trusted CA itself
	}
	st := r.checker.Check(leaf, issuer)
	if st.Pending && r.mode == revocation.HardFail {
		ctx, cancel := context.WithTimeout(context.Background(), r.wait)
		st = r.checker.Await(ctx, leaf, issuer)
		cancel()
	}
	r.observe(PhaseHandshake, st.Result)
	if err := r.checker.Decide(st, leaf); err != nil {
		return failure.WithReason(revocationReason(st), fmt.Errorf("inbound: %w", err))
	}
	return nil
}

// verifyAfter is a host's VerifyConnection: next (the verifyDepth check,
// when set), then the revocation check.
func (r *hostRevocation) verifyAfter(next func(tls.ConnectionState) error, depth int) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if next != nil {
			if err := next(cs); err != nil {
				return err
			}
		}
		return r.verifyConnection(cs, depth)
	}
}

// revocationVerdict is a connection's last revocation judgement: of leaf,
// on host h, while the cache holds generation, and until until when set.
// Immutable.
type revocationVerdict struct {
	host       *host
	leaf       *x509.Certificate
	generation uint64
	until      time.Time
	result     revocation.Result
	reason     failure.Reason
}

// request checks leaf, issued by issuer, again for a request on connection
// c at now: no I/O, and while nothing the cache holds has changed, the
// connection's last judgement, which spares the map lookups of a check. It
// returns the reason to refuse the request, or "".
func (r *hostRevocation) request(c *conn, h *host, leaf, issuer *x509.Certificate, now time.Time) failure.Reason {
	if issuer == nil {
		return ""
	}
	// Read before the check: a change during it makes the next request
	// check again.
	gen := r.cache.Generation()
	if v := c.revocation.Load(); v != nil && v.host == h && v.leaf == leaf && v.generation == gen && (v.until.IsZero() || now.Before(v.until)) {
		r.observe(PhaseRequest, v.result)
		return v.reason
	}
	st := r.checker.CheckAt(leaf, issuer, now)
	r.observe(PhaseRequest, st.Result)
	v := &revocationVerdict{host: h, leaf: leaf, generation: gen, result: st.Result}
	if !r.checker.Allows(st) {
		v.reason = revocationReason(st)
	}
	if st.Result == revocation.Good {
		v.until = st.Until
	}
	if !st.Pending {
		// A pending status asked for a fetch; the next request asks
		// again if the request was dropped.
		c.revocation.Store(v)
	}
	return v.reason
}

// revocationReason is the failure reason of a status that is refused.
func revocationReason(st revocation.Status) failure.Reason {
	if st.Result == revocation.Revoked {
		return failure.Revoked
	}
	return failure.RevocationUnknown
}

// chainIssuer is the leaf of verified chains and its issuer, from the first
// chain within depth (0: any); issuer is nil when there is no such chain,
// or when the leaf is itself a trusted CA.
func chainIssuer(chains [][]*x509.Certificate, depth int) (leaf, issuer *x509.Certificate) {
	for _, chain := range chains {
		if depth > 0 && len(chain) > depth {
			continue
		}
		if len(chain) < 2 {
			return chain[0], nil
		}
		return chain[0], chain[1]
	}
	return nil, nil
}

// cacheLocked is the node's revocation cache, started on first use. m.mu
// is held.
func (m *Manager) cacheLocked() *revocation.Cache {
	if m.revocation == nil {
		m.revocation = revocation.NewCache(m.opts.Revocation)
		if m.closed {
			// Asked after Close: it answers from nothing and fetches
			// nothing.
			m.revocation.Close()
		}
	}
	return m.revocation
}

// RevocationCache is the cache that holds the CRLs and OCSP responses of
// the node, started on first use with Options.Revocation: the Listener
// hosts' and the Upstreams' checkers share it, so that a CRL both name is
// fetched once and counted once. Close closes it.
func (m *Manager) RevocationCache() *revocation.Cache {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cacheLocked()
}

// RevocationLists describes the CRLs the manager holds for its hosts and
// the Upstreams; nil when nothing checks revocation.
func (m *Manager) RevocationLists() []revocation.ListStatus {
	m.mu.Lock()
	c := m.revocation
	m.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Lists()
}

// RevocationOCSP is the number of OCSP responses the manager holds.
func (m *Manager) RevocationOCSP() int {
	m.mu.Lock()
	c := m.revocation
	m.mu.Unlock()
	if c == nil {
		return 0
	}
	return c.OCSPResponses()
}
