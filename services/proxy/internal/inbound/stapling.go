package inbound

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
)

// staple serves one Listener host's certificate with its OCSP response
// stapled (RFC 6066 status_request), when the certificate names an OCSP
// responder and its chain includes its issuer: the node's revocation cache
// asks the responder, verifies the answer (signed by the issuer or a
// responder it delegated to, current) and refreshes it before its
// nextUpdate; the host's certificate is replaced, whole, when the response
// changes. A response that is not current is never stapled: the
// certificate is then served without one, as before the first answer.
type staple struct {
	leaf, issuer *x509.Certificate
	checker      *revocation.Checker
	// cur is what handshakes serve: the certificate, with the current
	// response or none. Replaced, never modified.
	cur atomic.Pointer[tls.Certificate]
}

// newStaple makes h's stapler; nil when h's certificate names no OCSP
// responder or its chain lacks the issuer. m.mu is held (by Apply).
func (m *Manager) newStaple(h *model.ListenerHost) (*staple, error) {
	c := h.Certificate
	if c == nil || c.Leaf == nil || len(c.Certificate) < 2 {
		return nil, nil
	}
	if _, names := revocation.Names(c.Leaf); !names {
		return nil, nil
	}
	issuer, err := x509.ParseCertificate(c.Certificate[1])
	if err != nil || c.Leaf.CheckSignatureFrom(issuer) != nil {
		return nil, nil // the second certificate is not the issuer: no OCSP request can be made
	}
	ch, err := m.cacheLocked().Checker(revocation.Policy{Mode: revocation.SoftFail, OCSP: true})
	if err != nil {
		return nil, err
	}
	s := &staple{leaf: c.Leaf, issuer: issuer, checker: ch}
	base := *c
	base.OCSPStaple = nil
	s.cur.Store(&base)
	s.refresh(time.Now())
	return s, nil
}

// getCertificate is the host's tls.Config.GetCertificate.
func (s *staple) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load(), nil
}

// refresh staples the response the cache holds now, and says until when it
// is current (zero when none is stapled). Asking the cache also keeps the
// response refreshed.
func (s *staple) refresh(now time.Time) time.Time {
	raw, st := s.checker.Staple(s.leaf, s.issuer, now)
	cur := s.cur.Load()
	if !bytes.Equal(cur.OCSPStaple, raw) {
		next := *cur
		next.OCSPStaple = raw
		s.cur.Store(&next)
	}
	if raw == nil {
		return time.Time{}
	}
	return st.Until
}

// Stapled is the OCSP response stapled to the certificate now; nil when
// none is.
func (s *staple) Stapled() []byte { return s.cur.Load().OCSPStaple }

// maxStapleWait bounds the wait between two looks at the responses when
// nothing changes, so that one that goes stale is unstapled.
const maxStapleWait = time.Minute

// keepStapled refreshes the staples whenever the cache changes (a response
// fetched), and when the stapled response stops being current, until stop
// is closed.
func keepStapled(cache *revocation.Cache, staples []*staple, stop <-chan struct{}) {
	for {
		changed := cache.Changed()
		now := time.Now()
		wait := maxStapleWait
		for _, s := range staples {
			if until := s.refresh(now); !until.IsZero() {
				wait = min(wait, max(until.Sub(now), time.Millisecond))
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-stop:
			t.Stop()
			return
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}
