package node

import (
	"crypto/tls"
	"crypto/x509"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	nodev1 "keyway.dev/gen/keyway/node/v1"

	"keyway.dev/internal/revocation"
)

// presented finds the revocation state of the certificates the node
// presents (Listener hosts' certificates, upstream client certificates),
// for its status: from the lists and responders they name, through the
// node's revocation cache (shared with the checks of clients and
// upstreams, and with OCSP stapling: one fetch each). Safe for concurrent
// use.
type presented struct {
	cache func() *revocation.Cache

	mu      sync.Mutex
	checker *revocation.Checker
	// issuers are the issuers parsed from each chain, by chain: a chain
	// is immutable, and its parse is kept while it is presented.
	issuers map[*tls.Certificate]*x509.Certificate
	seen    map[*tls.Certificate]bool
}

func newPresented(cache func() *revocation.Cache) *presented {
	return &presented{cache: cache, issuers: make(map[*tls.Certificate]*x509.Certificate)}
}

// begin and end bracket one status: the issuers of chains not presented in
// it are forgotten.
func (p *presented) begin() {
	p.mu.Lock()
	p.seen = make(map[*tls.Certificate]bool, len(p.issuers))
	p.mu.Unlock()
}

func (p *presented) end() {
	p.mu.Lock()
	for c := range p.issuers {
		if !p.seen[c] {
			delete(p.issuers, c)
		}
	}
	p.mu.Unlock()
}

// Why a presented certificate that names a list or responder cannot be
// checked.
const (
	whyNoIssuer    = "the chain the node presents does not include the issuer, which checking needs: add it after the certificate"
	whyWrongIssuer = "the second certificate of the chain the node presents did not issue the first: put the issuer after the certificate"
)

// state is c's revocation state and its detail; "" when the node does not
// check it (it names no CRL distribution point and no OCSP responder).
func (p *presented) state(c *tls.Certificate, now time.Time) (state, detail string) {
	if c == nil || c.Leaf == nil {
		return "", ""
	}
	if crl, ocsp := revocation.Names(c.Leaf); !crl && !ocsp {
		return "", ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	issuer, ok := p.issuers[c]
	if !ok {
		if len(c.Certificate) >= 2 {
			if parsed, err := x509.ParseCertificate(c.Certificate[1]); err == nil && c.Leaf.CheckSignatureFrom(parsed) == nil {
				issuer = parsed
			}
		}
		p.issuers[c] = issuer
	}
	if p.seen != nil {
		p.seen[c] = true
	}
	switch {
	case issuer == nil && len(c.Certificate) < 2:
		return revocation.Unknown.String(), whyNoIssuer
	case issuer == nil:
		return revocation.Unknown.String(), whyWrongIssuer
	}
	if p.checker == nil {
		ch, err := p.cache().Checker(revocation.Policy{Mode: revocation.SoftFail, DistributionPoints: true, OCSP: true})
		if err != nil {
			return revocation.Unknown.String(), err.Error()
		}
		p.checker = ch
	}
	st := p.checker.CheckAt(c.Leaf, issuer, now)
	switch st.Result {
	case revocation.Unknown:
		return st.Result.String(), cut(st.Why)
	case revocation.Revoked:
		return st.Result.String(), cut(st.Source + ", reason " + st.Reason.String())
	}
	return st.Result.String(), cut(st.Source)
}

// withState is sc, or a copy of it with c's revocation state when the node
// checks c: the entries of upstreams are shared between statuses.
func (p *presented) withState(sc *nodev1.ServedCertificate, c *tls.Certificate, now time.Time) *nodev1.ServedCertificate {
	state, detail := p.state(c, now)
	if state == "" {
		return sc
	}
	out := proto.Clone(sc).(*nodev1.ServedCertificate)
	out.Revocation, out.RevocationDetail = state, detail
	return out
}
