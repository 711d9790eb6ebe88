package tlsconf

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
)

// InboundHost is the server config of one Listener host: its certificate,
// client authentication against its clientCAs and verifyDepth (in
// VerifyConnection), versions, cipher suites and ALPN, each falling back
// to the model's default when the host gives none. Every call makes a new
// session ticket key, so a ticket issued under one config is not resumed
// under another. The config is the caller's; it may wrap VerifyConnection
// with further checks (revocation).
func InboundHost(h *model.ListenerHost) (*tls.Config, error) {
	if h.Certificate == nil || len(h.Certificate.Certificate) == 0 {
		return nil, errors.New("no server certificate")
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{*h.Certificate},
		ClientAuth:   h.ClientAuth,
		MinVersion:   h.MinVersion,
		MaxVersion:   h.MaxVersion,
		CipherSuites: slices.Clone(h.CipherSuites),
		NextProtos:   slices.Clone(h.ALPN),
	}
	if len(cfg.CipherSuites) == 0 {
		// Go's own defaults still include ECDHE suites with CBC and SHA-1.
		cfg.CipherSuites = model.IntermediateCipherSuites()
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = model.DefaultMinVersion
	}
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = defaultInboundALPN()
	}
	if len(h.ClientCAs) > 0 {
		cfg.ClientCAs = x509.NewCertPool()
		for _, c := range h.ClientCAs {
			cfg.ClientCAs.AddCert(c)
		}
	} else if h.ClientAuth == tls.VerifyClientCertIfGiven || h.ClientAuth == tls.RequireAndVerifyClientCert {
		// An empty pool, not nil: nil would mean the system roots.
		return nil, fmt.Errorf("client auth %s without client CAs", model.ClientAuthName(h.ClientAuth))
	}
	if h.VerifyDepth > 0 {
		cfg.VerifyConnection = verifyDepth(h.VerifyDepth)
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("making a session ticket key: %w", err)
	}
	cfg.SetSessionTicketKeys([][32]byte{key})
	return cfg, nil
}

// verifyDepth refuses a client whose every verified chain (leaf to root,
// both included) is longer than depth. A connection without verified
// chains (no certificate, or a mode that does not verify) is left to
// ClientAuth.
func verifyDepth(depth int) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 {
			return nil
		}
		shortest := len(cs.VerifiedChains[0])
		for _, chain := range cs.VerifiedChains[1:] {
			shortest = min(shortest, len(chain))
		}
		if shortest > depth {
			return failure.WithReason(failure.InvalidCertificate,
				fmt.Errorf("inbound: client certificate chain of %d certificates exceeds verifyDepth %d", shortest, depth))
		}
		return nil
	}
}

// InboundTrust identifies which client certificates [InboundHost]'s config
// for h accepts as verified: h's verifyDepth and the SHA-256 of each of its
// clientCAs, sorted. Two hosts with the same trust judge every client
// alike, so a verdict on a client certificate may be shared between them.
func InboundTrust(h *model.ListenerHost) string {
	fps := make([]string, len(h.ClientCAs))
	for i, ca := range h.ClientCAs {
		fps[i] = certs.Fingerprint(ca)
	}
	slices.Sort(fps)
	return fmt.Sprintf("%d/%s", h.VerifyDepth, strings.Join(fps, ","))
}

// defaultInboundALPN is what a Listener host without alpn accepts: h2,
// then http/1.1, then http/1.0, which clients that speak only HTTP/1.0
// offer (curl --http1.0) and which NGINX accepts too. crypto/tls refuses a
// client whose ALPN list has nothing in common with the server's, so
// without it those clients fail the handshake (no_application_protocol);
// a connection that negotiates it is served as HTTP/1.x.
func defaultInboundALPN() []string { return append(model.DefaultALPN(), "http/1.0") }
