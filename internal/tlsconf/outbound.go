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

// OutboundConn is base (from [Outbound] for o) completed for one
// connection to facts.ServerName: it sends o's client certificate when
// the server asks for one (none when o has none: the server decides), and
// verifies the server as o says (the chain and name by Common Name with
// legacyCommonName, the subjectAltNames o requires). What the handshake
// saw is recorded in facts as it happens, for the classification of a
// failure; the callbacks write facts from the handshake's goroutine.
func OutboundConn(base *tls.Config, o *model.OutboundTLS, facts *failure.HandshakeFacts) *tls.Config {
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
		if legacy {
			if err := verifyLegacy(cs, cfg.RootCAs, facts.ServerName); err != nil {
				return err
			}
		}
		if !verify || len(sans) == 0 || len(cs.PeerCertificates) == 0 {
			return nil
		}
		leaf := cs.PeerCertificates[0]
		for _, name := range sans {
			if matchName(leaf, name, legacy) == nil {
				return nil
			}
		}
		return failure.WithReason(failure.SANMismatch,
			fmt.Errorf("upstream certificate %q carries none of the subjectAltNames %q the binding requires (it has %q)", leaf.Subject, sans, leaf.DNSNames))
	}
	return cfg
}

// verifyLegacy verifies the upstream's chain as crypto/tls would (roots,
// intermediates the server sent, validity now, server-auth key usage) and
// then its name, with the Common Name standing in for a DNS SAN that the
// certificate does not have.
func verifyLegacy(cs tls.ConnectionState, roots *x509.CertPool, serverName string) error {
	if len(cs.PeerCertificates) == 0 {
		return failure.WithReason(failure.HandshakeFailure, errors.New("the upstream sent no certificate"))
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return matchName(leaf, serverName, true)
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
