package upstream

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync/atomic"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
)

// PhaseHandshake labels the revocation check of an upstream's certificate
// at a new connection's handshake, as the Listener hosts' checks of client
// certificates are labelled.
const PhaseHandshake = "handshake"

// DefaultRevocationWait bounds how long a handshake waits for the first
// fetch of a CRL or an OCSP response that the upstream's certificate needs.
const DefaultRevocationWait = 2 * time.Second

// Revocation is how a node checks the certificates of upstreams whose
// tls-outbound context turns revocation on.
type Revocation struct {
	// Cache is the node's cache of CRLs and OCSP responses, shared with
	// the Listener hosts' checks; called when such an Upstream is built.
	Cache func() *revocation.Cache
	// Checks, if set, counts each check.
	Checks RevocationObserver
	// Wait bounds a hard-fail handshake's wait for a first fetch.
	// Default [DefaultRevocationWait].
	Wait time.Duration
}

// RevocationObserver counts revocation checks of upstream certificates.
// Called at every handshake of an Upstream that checks; must be cheap and
// safe for concurrent use.
type RevocationObserver interface {
	ObserveRevocationCheck(mode revocation.Mode, phase string, result revocation.Result)
}

// upstreamRevocation is how one Upstream checks its upstream's
// certificate. The checker is the Upstream's, which closes it at Drain.
type upstreamRevocation struct {
	checker  *revocation.Checker
	cache    *revocation.Cache
	mode     revocation.Mode
	observer RevocationObserver
	wait     time.Duration
	// swept is the cache generation at which the idle connections were
	// last closed: every pooled connection was verified against lists at
	// least that recent.
	swept atomic.Uint64
}

// newUpstreamRevocation is the check of an Upstream for context o; nil
// when o does not check revocation.
func newUpstreamRevocation(name string, o *model.OutboundTLS, r *Revocation) (*upstreamRevocation, error) {
	if o == nil || o.SkipValidation || !o.Revocation.On() {
		return nil, nil
	}
	if r == nil || r.Cache == nil {
		return nil, fmt.Errorf("upstream %q: its tls-outbound binding checks revocation, and this node was started without revocation checks", name)
	}
	cache := r.Cache()
	ch, err := cache.Checker(revocation.Policy{
		Mode:               o.Revocation.Mode,
		CRLs:               o.Revocation.CRLs,
		DistributionPoints: o.Revocation.DistributionPoints,
		OCSP:               o.Revocation.OCSP,
		OCSPResponder:      o.Revocation.OCSPResponder,
		Issuers:            o.TrustedCAs,
	})
	if err != nil {
		return nil, fmt.Errorf("upstream %q: revocation: %w", name, err)
	}
	ur := &upstreamRevocation{checker: ch, cache: cache, mode: ch.Mode(), observer: r.Checks, wait: r.Wait}
	if ur.wait <= 0 {
		ur.wait = DefaultRevocationWait
	}
	ur.swept.Store(cache.Generation())
	return ur, nil
}

// check is the dialer's revocation check of a handshake
// ([tlsconf.RevocationCheck]). In hard-fail mode, a certificate that needs
// a list or response not fetched yet waits for that first fetch, at most
// r.wait, rather than be refused for want of it.
func (r *upstreamRevocation) check(leaf, issuer *x509.Certificate) error {
	st := r.checker.Check(leaf, issuer)
	if st.Pending && r.mode == revocation.HardFail {
		ctx, cancel := context.WithTimeout(context.Background(), r.wait)
		st = r.checker.Await(ctx, leaf, issuer)
		cancel()
	}
	if r.observer != nil {
		r.observer.ObserveRevocationCheck(r.mode, PhaseHandshake, st.Result)
	}
	if err := r.checker.Decide(st, leaf); err != nil {
		reason := failure.RevocationUnknown
		if st.Result == revocation.Revoked {
			reason = failure.Revoked
		}
		return failure.WithReason(reason, fmt.Errorf("checking the upstream's certificate: %w", err))
	}
	return nil
}

// sweep closes u's idle connections when the lists have changed since
// they were last closed, so that the request about to be sent goes on a
// connection verified against the lists held now. It returns the
// generation the request starts at. Called at the start of each request:
// one atomic load while nothing changes.
func (r *upstreamRevocation) sweep(u *Upstream) uint64 {
	gen := r.cache.Generation()
	if old := r.swept.Load(); old != gen && r.swept.CompareAndSwap(old, gen) {
		u.closeIdle()
	}
	return gen
}

// after closes u's idle connections once more when the lists changed
// while a request was on its connection: that connection was busy when
// the others were closed, and is back in the pool now.
func (r *upstreamRevocation) after(u *Upstream, started uint64) {
	if r.cache.Generation() != started {
		u.closeIdle()
	}
}
