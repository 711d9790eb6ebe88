// Package tlsconf is the TLS snapshot step of proto → model → TLS snapshot
// → transport: it turns validated TLS contexts into *tls.Config, with the
// verification callbacks crypto/tls does not do itself. [Outbound] and
// [OutboundConn] build the client side of a tls-outbound context (proxy
// dials and the policy service's live probe); [InboundHost] builds the
// server side of one Listener host.
//
// It builds configs and nothing else: dialing, handshakes and the
// classification of their failures are [keyway.dev/internal/outbound]'s,
// listeners and SNI selection are the proxy's inbound package. The
// defaults a config falls back to (versions, cipher suites, ALPN) are the
// model's, so validation, fingerprints and the configs agree.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
)

// Outbound is the client config of tls-outbound context o for the
// upstream named upstream (named in errors), offering the ALPN protocols
// for the Service's protocol ([model.OutboundTLS.OfferedALPN]). It is the
// base of every connection of the context, which [OutboundConn] completes:
// ServerName and the callbacks are per connection. Resumption is across
// connections of this one config only.
func Outbound(upstream string, o *model.OutboundTLS, protocol string) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         o.MinVersion,
		MaxVersion:         o.MaxVersion,
		CipherSuites:       slices.Clone(o.CipherSuites),
		NextProtos:         o.OfferedALPN(protocol),
		InsecureSkipVerify: o.SkipValidation, //nolint:gosec // the binding's skipValidation, which the policy service warns about at apply
		// Resumption across connections of this one context only.
		ClientSessionCache: tls.NewLRUClientSessionCache(64),
	}
	if o.SkipValidation {
		return cfg, nil
	}
	switch {
	case o.SystemRoots:
		// An https:// Service without a binding. Said explicitly rather
		// than left to a nil RootCAs, so that a host without a usable
		// bundle fails here, by name, and not at every handshake.
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("upstream %q: its https:// address is verified against the system's trusted roots, and they cannot be loaded (%w); install the CA bundle (ca-certificates), point SSL_CERT_FILE at one, or bind a tls-outbound PolicyBinding with trustedCA", upstream, err)
		}
		cfg.RootCAs = pool
	case len(o.TrustedCAs) == 0:
		return nil, fmt.Errorf("upstream %q: tls-outbound context without trusted CAs and without skipValidation", upstream)
	default:
		pool := x509.NewCertPool()
		for _, ca := range o.TrustedCAs {
			pool.AddCert(ca)
		}
		cfg.RootCAs = pool
	}
	if o.LegacyCommonName {
		// crypto/tls matches names against SANs only, so this context
		// verifies the chain itself (verifyLegacy) and tells crypto/tls
		// not to: VerifyConnection runs on every handshake, resumed ones
		// included.
		cfg.InsecureSkipVerify = true
	}
	return cfg, nil
}

// OutboundServerName is the name context o sends as SNI to an endpoint
// whose host is host, and verifies in its certificate: o's sni, else host.
// o may be nil (plain TCP).
func OutboundServerName(o *model.OutboundTLS, host string) string {
	if o != nil && o.SNI != "" {
		return o.SNI
	}
	return host
}

// RevocationCheck checks the verified leaf certificate of an upstream,
// issued by issuer, for revocation: nil when it may be used, else an error
// carrying its [failure.Reason] (revoked, revocation_unknown). A proxy node
// supplies it from the CRLs and OCSP responses it holds; it is called from
// the handshake's goroutine, possibly from many at once, and may wait a
// bounded time for a first fetch.
type RevocationCheck func(leaf, issuer *x509.Certificate) error

// OutboundConn is base (from [Outbound] for o) completed for one
// connection to facts.ServerName: it sends o's client certificate when
// the server asks for one (none when o has none: the server decides), and
// verifies the server as o says (the chain and name by Common Name with
// legacyCommonName, the subjectAltNames o requires). What the handshake
// saw is recorded in facts as it happens, for the classification of a
// failure; the callbacks write facts from the handshake's goroutine. With
// revoked set (and o verifying), the leaf is then checked against its
// issuer in the verified chain, after crypto/tls verified that chain; a
// leaf that is itself a trusted certificate has no issuer to ask and is
// not checked.
func OutboundConn(base *tls.Config, o *model.OutboundTLS, facts *failure.HandshakeFacts, revoked RevocationCheck) *tls.Config {
	cfg := base.Clone()
	cfg.ServerName = facts.ServerName
	cert, sans, verify := o.Certificate, o.SubjectAltNames, !o.SkipValidation
	legacy := verify && o.LegacyCommonName
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		facts.ClientCertificateRequested = true
		if cert == nil {
			return &tls.Certificate{}, nil // send none; the server decides
		}
		facts.ClientCertificateSent = true
		return cert, nil
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		facts.ServerCertificateSeen = true
		chains := cs.VerifiedChains
		if legacy {
			var err error
			if chains, err = verifyLegacy(cs, cfg.RootCAs, facts.ServerName); err != nil {
				return err
			}
		}
		if !verify || len(cs.PeerCertificates) == 0 {
			return nil
		}
		if err := checkSANs(cs.PeerCertificates[0], sans, legacy); err != nil {
			return err
		}
		if revoked != nil && len(chains) > 0 && len(chains[0]) > 1 {
			// The name checks first: a certificate for another name
			// is refused for that, whatever its revocation status.
			return revoked(chains[0][0], chains[0][1])
		}
		return nil
	}
	return cfg
}

// checkSANs checks that leaf carries one of the subjectAltNames sans (none
// required when empty).
func checkSANs(leaf *x509.Certificate, sans []string, legacy bool) error {
	if len(sans) == 0 {
		return nil
	}
	for _, name := range sans {
		if matchName(leaf, name, legacy) == nil {
			return nil
		}
	}
	return failure.WithReason(failure.SANMismatch,
		fmt.Errorf("upstream certificate %q carries none of the subjectAltNames %q the binding requires (it has %q)", leaf.Subject, sans, leaf.DNSNames))
}

// verifyLegacy verifies the upstream's chain as crypto/tls would (roots,
// intermediates the server sent, validity now, server-auth key usage) and
// then its name, with the Common Name standing in for a DNS SAN that the
// certificate does not have. It returns the verified chains.
func verifyLegacy(cs tls.ConnectionState, roots *x509.CertPool, serverName string) ([][]*x509.Certificate, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, failure.WithReason(failure.HandshakeFailure, errors.New("the upstream sent no certificate"))
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return chains, matchName(leaf, serverName, true)
}

// matchName checks that leaf is valid for name: by its SANs, or, with
// legacy and no DNS SAN in leaf, by its Common Name (case-insensitive, a
// "*." wildcard covering one label, as VerifyHostname matches SANs).
func matchName(leaf *x509.Certificate, name string, legacy bool) error {
	err := leaf.VerifyHostname(name)
	if err == nil || !legacy || len(leaf.DNSNames) > 0 || net.ParseIP(name) != nil {
		return err
	}
	if certs.CommonNameCovers(leaf, name) {
		return nil
	}
	return failure.WithReason(failure.SANMismatch, fmt.Errorf("the upstream's certificate %q has no subjectAltName and its Common Name %q is not %q (legacyCommonName is on).%s",
		leaf.Subject.String(), leaf.Subject.CommonName, name, failure.UnexpandedVariable(leaf.Subject.CommonName)))
}
