package revocation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Policy is what a [Checker] consults and what it does with an unknown
// status.
type Policy struct {
	Mode Mode
	// CRLs are lists to consult for every certificate whose issuer signed
	// them: http(s) URLs or absolute file paths (see [ParseLocation]).
	CRLs []string
	// DistributionPoints consults, in addition, the http(s) CRLs that the
	// certificate names in its CRL distribution points extension.
	DistributionPoints bool
	// OCSP asks the certificate's OCSP responder (its authority
	// information access), or OCSPResponder when set.
	OCSP          bool
	OCSPResponder string
	// Issuers are the CAs whose CRLs are expected at CRLs (typically the
	// trusted CAs). Issuers of certificates checked later are learnt too,
	// so a CRL of an intermediate CA verifies once a certificate it issued
	// is checked.
	Issuers []*x509.Certificate
}

// Checker answers for one [Policy] from a [Cache]. Its methods are safe for
// concurrent use.
type Checker struct {
	cache     *Cache
	mode      Mode
	crls      []string
	dp, ocsp  bool
	responder string
	// noSource is Status.Why when nothing consulted covers a certificate.
	noSource string
	closed   bool
}

// Checker makes a checker for p and starts fetching the CRLs it names (the
// first fetch begins now; see [Checker.Ready]). Close releases them.
func (c *Cache) Checker(p Policy) (*Checker, error) {
	mode, err := ParseMode(string(p.Mode))
	if err != nil {
		return nil, err
	}
	ch := &Checker{cache: c, mode: mode, dp: p.DistributionPoints, ocsp: p.OCSP}
	var errs []error
	for i, loc := range p.CRLs {
		norm, err := ParseLocation(loc)
		if err != nil {
			errs = append(errs, fmt.Errorf("revocation: crl[%d]: %w", i, err))
			continue
		}
		if !slices.Contains(ch.crls, norm) {
			ch.crls = append(ch.crls, norm)
		}
	}
	if p.OCSPResponder != "" {
		if u, err := url.Parse(p.OCSPResponder); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(p.OCSPResponder) > maxLocation {
			errs = append(errs, fmt.Errorf("revocation: OCSP responder %q is not an http:// or https:// URL", p.OCSPResponder))
		}
		ch.responder = p.OCSPResponder
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var consulted []string
	if len(ch.crls) > 0 {
		consulted = append(consulted, "the CRLs "+strings.Join(ch.crls, ", "))
	}
	if ch.dp {
		consulted = append(consulted, "the CRL distribution points the certificate names")
	}
	if ch.ocsp {
		consulted = append(consulted, "OCSP")
	}
	if len(consulted) == 0 {
		ch.noSource = "no CRL and no OCSP responder is configured to check revocation"
	} else {
		ch.noSource = "nothing consulted covers certificates of this issuer (" + strings.Join(consulted, "; ") + ")"
	}
	if mode == Off {
		return ch, nil
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("revocation: the cache is closed")
	}
	for _, iss := range p.Issuers {
		c.addIssuerLocked(iss)
	}
	var added []*source
	for _, loc := range ch.crls {
		s := c.addSourceLocked(loc)
		if s == nil {
			for _, a := range added {
				c.releaseLocked(a)
			}
			return nil, fmt.Errorf("revocation: more than %d CRLs to fetch: name fewer", c.opts.MaxSources)
		}
		s.refs++
		added = append(added, s)
	}
	return ch, nil
}

// Mode is the checker's mode.
func (ch *Checker) Mode() Mode { return ch.mode }

// Close stops fetching the CRLs only this checker named. Checks keep
// answering from what is held, until the lists go stale.
func (ch *Checker) Close() {
	c := ch.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch.closed || ch.mode == Off {
		ch.closed = true
		return
	}
	ch.closed = true
	for _, loc := range ch.crls {
		if s := c.sources[loc]; s != nil {
			c.releaseLocked(s)
		}
	}
}

func (c *Cache) releaseLocked(s *source) {
	s.refs--
	if s.refs <= 0 && !s.discovered {
		c.removeSourceLocked(s)
	}
}

// Check is what is known now of cert's revocation, cert being issued by
// issuer. It reads what the cache holds: no I/O, no allocation when the
// status is good, and a few map lookups. What it finds missing (a
// distribution point, an OCSP response, an issuer) is asked for in the
// background; the status is then unknown and Pending.
//
// A list or response that revokes cert wins; else a current one that
// covers it makes it good; else it is unknown, with the reason of the
// first source consulted. The mode does not apply: see [Checker.Verify].
func (ch *Checker) Check(cert, issuer *x509.Certificate) Status {
	return ch.check(ch.cache.state.Load(), cert, issuer, time.Now())
}

// CheckAt is Check at now, for a caller that read the clock already:
// reading it is a good part of a check's cost on some hosts.
func (ch *Checker) CheckAt(cert, issuer *x509.Certificate, now time.Time) Status {
	return ch.check(ch.cache.state.Load(), cert, issuer, now)
}

// Verify checks cert and applies the mode: nil when cert may be used, an
// *[Error] wrapping [ErrRevoked] when it is revoked, or [ErrUnknown] when
// its status is unknown in hard-fail mode. In [Off] mode it is always nil.
func (ch *Checker) Verify(cert, issuer *x509.Certificate) error {
	if ch.mode == Off {
		return nil
	}
	return ch.Decide(ch.Check(cert, issuer), cert)
}

// Allows reports whether the mode lets a certificate with status s be
// used: always in [Off] mode; otherwise unless it is revoked, or unknown in
// [HardFail] mode.
func (ch *Checker) Allows(s Status) bool {
	switch {
	case ch.mode == Off, s.Result == Good:
		return true
	case s.Result == Unknown:
		return ch.mode == SoftFail
	}
	return false
}

// Decide applies the mode to a status of cert: see [Checker.Verify].
func (ch *Checker) Decide(s Status, cert *x509.Certificate) error {
	if ch.Allows(s) {
		return nil
	}
	e := &Error{Status: s}
	if cert != nil {
		e.Subject = cert.Subject.String()
		if cert.SerialNumber != nil {
			e.Serial = cert.SerialNumber.Text(16)
		}
	}
	return e
}

// Await is Check, except that when the status is unknown only because a
// source has not been tried yet (a CRL or OCSP response being fetched for
// the first time), it waits for that fetch, or until ctx is done. For a
// certificate seen for the first time, where a hard-fail checker would
// otherwise refuse before it could know.
func (ch *Checker) Await(ctx context.Context, cert, issuer *x509.Certificate) Status {
	for {
		st := ch.cache.state.Load()
		s := ch.check(st, cert, issuer, time.Now())
		if s.Result != Unknown || !s.Pending {
			return s
		}
		select {
		case <-st.changed:
		case <-ctx.Done():
			return s
		}
	}
}

// Ready waits until every CRL the checker names has been fetched once,
// successfully or not, or until ctx is done.
func (ch *Checker) Ready(ctx context.Context) error {
	for {
		st := ch.cache.state.Load()
		waiting := ""
		for _, loc := range ch.crls {
			if v := st.lists[loc]; v != nil && !v.tried {
				waiting = loc
				break
			}
		}
		if waiting == "" {
			return nil
		}
		select {
		case <-st.changed:
		case <-ctx.Done():
			return fmt.Errorf("revocation: CRL %s not fetched yet: %w", waiting, ctx.Err())
		}
	}
}

// verdict gathers what the sources of one check say.
type verdict struct {
	good       bool
	goodSource string
	goodUntil  time.Time
	// why and source explain an unknown status: first from a source of
	// the certificate's issuer, else from one of another CA.
	why, source string
	whyOther    string
	pending     bool
}

func (v *verdict) unknown(why, source string, pending bool) {
	if v.why == "" {
		v.why, v.source = why, source
	}
	v.pending = v.pending || pending
}

func (v *verdict) current(source string, until time.Time) {
	if !v.good {
		v.good, v.goodSource = true, source
	}
	// Good until the last of the current answers expires.
	if until.After(v.goodUntil) {
		v.goodUntil = until
	}
}

// crl consults one list; it returns a revoked status, or ok false.
func (v *verdict) crl(vw *view, cert *x509.Certificate, ikey []byte, skey []byte, now time.Time) (Status, bool) {
	switch {
	case vw == nil:
		return Status{}, false
	case vw.list == nil:
		v.unknown(vw.why, vw.location, !vw.tried)
		return Status{}, false
	}
	l := vw.list
	if l.issuerKey != string(ikey) {
		if v.whyOther == "" {
			v.whyOther = l.otherIssuerWhy
		}
		if !vw.tried || vw.why != "" {
			// The last fetch may have been another CA's list; or the
			// list of the certificate's issuer, failing.
			v.unknown(vw.why, vw.location, !vw.tried)
		}
		return Status{}, false
	}
	if !l.scope.covers(cert) {
		if v.whyOther == "" {
			v.whyOther = l.outOfScopeWhy
		}
		return Status{}, false
	}
	if e, ok := l.revoked[string(skey)]; ok {
		return Status{Result: Revoked, Reason: e.reason, RevokedAt: e.at, Source: vw.location}, true
	}
	if now.Before(l.nextUpdate) {
		v.current(vw.location, l.nextUpdate)
	} else {
		v.unknown(vw.whyStale, vw.location, false)
	}
	return Status{}, false
}

const (
	whyPointPending = "the CRL distribution point the certificate names has not been fetched yet"
	whyNoResponder  = "the certificate names no OCSP responder (authority information access) and none is configured"
	whyOCSPPending  = "the OCSP responder has not been asked yet"
	whyNoIssuer     = "no issuer certificate to check the certificate against"
)

func (ch *Checker) check(st *state, cert, issuer *x509.Certificate, now time.Time) Status {
	if cert == nil || issuer == nil || cert.SerialNumber == nil {
		return Status{Why: whyNoIssuer}
	}
	var buf [serialBuf]byte
	skey := serialKey(cert.SerialNumber, buf[:])
	ikey := issuer.RawSubjectPublicKeyInfo
	var v verdict

	for _, loc := range ch.crls {
		if s, revoked := v.crl(st.lists[loc], cert, ikey, skey, now); revoked {
			return s
		}
	}
	if len(ch.crls) > 0 && !v.good {
		if _, known := st.issuers[string(ikey)]; !known {
			// A CRL of this CA may be waiting for it.
			ch.cache.learn(issuer)
			v.pending = true
		}
	}
	if ch.dp {
		for _, loc := range cert.CRLDistributionPoints {
			if !fetchable(loc) {
				continue
			}
			vw := st.lists[loc]
			if vw == nil {
				ch.cache.discover(loc, issuer)
				v.unknown(whyPointPending, loc, true)
				continue
			}
			if vw.src != nil {
				touch(&vw.src.used, now)
			}
			if s, revoked := v.crl(vw, cert, ikey, skey, now); revoked {
				return s
			}
		}
	}
	if ch.ocsp {
		if s, revoked := ch.checkOCSP(st, &v, cert, issuer, ikey, skey, now); revoked {
			return s
		}
	}

	if v.good {
		return Status{Result: Good, Source: v.goodSource, Until: v.goodUntil}
	}
	s := Status{Why: v.why, Source: v.source, Pending: v.pending}
	if s.Why == "" {
		s.Why = v.whyOther
		if s.Why == "" {
			s.Why = ch.noSource
		}
	}
	return s
}

func (ch *Checker) checkOCSP(st *state, v *verdict, cert, issuer *x509.Certificate, ikey, skey []byte, now time.Time) (Status, bool) {
	e := st.ocsp[string(ikey)][string(skey)]
	if e == nil {
		responder := ch.responderFor(cert)
		if responder == "" {
			v.unknown(whyNoResponder, "", false)
			return Status{}, false
		}
		ch.cache.askOCSP(cert, issuer, responder)
		v.unknown(whyOCSPPending, "ocsp "+responder, true)
		return Status{}, false
	}
	touch(&e.used, now)
	a := e.answer.Load()
	switch {
	case !a.verified:
		v.unknown(a.why, e.source, !a.tried)
	case a.result == Revoked:
		return Status{Result: Revoked, Reason: a.reason, RevokedAt: a.revokedAt, Source: e.source}, true
	case !now.Before(a.until):
		v.unknown(a.whyStale, e.source, false)
	case a.result == Good:
		v.current(e.source, a.until)
	default:
		v.unknown(a.why, e.source, false)
	}
	return Status{}, false
}

// touch records that a check needed something at now, writing only when
// the second changed, so that checks on many cores rarely share a write.
func touch(used *atomic.Int64, now time.Time) {
	if sec := now.Unix(); used.Load() != sec {
		used.Store(sec)
	}
}

// Names reports whether cert names where its revocation is published, in
// forms a [Checker] fetches: an http(s) CRL distribution point, an http(s)
// OCSP responder.
func Names(cert *x509.Certificate) (crl, ocsp bool) {
	if cert == nil {
		return false, false
	}
	return slices.ContainsFunc(cert.CRLDistributionPoints, fetchable), slices.ContainsFunc(cert.OCSPServer, fetchable)
}
