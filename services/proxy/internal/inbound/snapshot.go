package inbound

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
)

// defaultALPN is offered when a host names no ALPN protocols.
var defaultALPN = []string{"h2", "http/1.1"}

// snapshot is one Listener's TLS as served: every host's *tls.Config built
// once from the model, then only read by handshakes. Immutable.
type snapshot struct {
	listener *model.Listener
	// exact are the hosts by lowercase SNI name; wildcard by the domain
	// under the wildcard label ("*.example.com" under "example.com").
	exact    map[string]*host
	wildcard map[string]*host
	def      *host
	// revocations are the hosts' revocation checkers, closed with the
	// snapshot.
	revocations []*hostRevocation
}

// host is one host of a snapshot: its prebuilt server config and what a
// request needs to re-verify a client certificate against it. A *host
// belongs to exactly one snapshot, so its identity is the (snapshot, host)
// generation that per-connection caches are keyed by.
type host struct {
	cfg        *tls.Config
	clientAuth tls.ClientAuthType
	// roots are the host's clientCAs; nil when it has none.
	roots       *x509.CertPool
	verifyDepth int
	// trust identifies which client certificates the host accepts as
	// verified (its clientCAs and verifyDepth): two hosts with the same
	// trust judge every client alike.
	trust string
	// revocation checks client certificates for revocation; nil when the
	// host does not.
	revocation *hostRevocation
}

// buildSnapshot prepares every host of l, with revocations making the
// revocation checker of each host that checks. Each snapshot gets its own
// session ticket keys (one per host): a ticket issued under one host's
// material is not resumed under another host's, or under a later snapshot.
func buildSnapshot(l *model.Listener, revocations func(*model.ListenerHost) (*hostRevocation, error)) (*snapshot, error) {
	if len(l.Hosts) == 0 {
		return nil, fmt.Errorf("inbound: listener %q has no hosts: add hosts to it, or apply a tls-inbound PolicyBinding that targets it", l.Name)
	}
	if l.Default < 0 || l.Default >= len(l.Hosts) {
		return nil, fmt.Errorf("inbound: listener %q: default host %d out of range (%d hosts)", l.Name, l.Default, len(l.Hosts))
	}
	s := &snapshot{listener: l, exact: make(map[string]*host), wildcard: make(map[string]*host)}
	var errs []error
	for i := range l.Hosts {
		h := &l.Hosts[i]
		built, err := hostConfig(h)
		if err != nil {
			errs = append(errs, fmt.Errorf("inbound: listener %q host %d %v: %w", l.Name, i, h.Hostnames, err))
			continue
		}
		rev, err := revocations(h)
		if err != nil {
			errs = append(errs, fmt.Errorf("inbound: listener %q host %d %v: %w", l.Name, i, h.Hostnames, err))
			continue
		}
		if rev != nil {
			s.revocations = append(s.revocations, rev)
			built.VerifyConnection = rev.verifyAfter(built.VerifyConnection, h.VerifyDepth)
		}
		cfg := &host{cfg: built, clientAuth: h.ClientAuth, roots: built.ClientCAs, verifyDepth: h.VerifyDepth, trust: clientTrust(h), revocation: rev}
		if i == l.Default {
			s.def = cfg
		}
		for _, name := range h.Hostnames {
			name = strings.ToLower(name)
			if domain, ok := strings.CutPrefix(name, "*."); ok {
				s.wildcard[domain] = cfg
			} else {
				s.exact[name] = cfg
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// close releases the snapshot's revocation checkers, once no handshake or
// request uses the snapshot any more (a request uses its server's current
// snapshot). Safe on nil.
func (s *snapshot) close() {
	if s == nil {
		return
	}
	for _, r := range s.revocations {
		r.checker.Close()
	}
}

func hostConfig(h *model.ListenerHost) (*tls.Config, error) {
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
		cfg.MinVersion = tls.VersionTLS12
	}
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = slices.Clone(defaultALPN)
	}
	if len(h.ClientCAs) > 0 {
		cfg.ClientCAs = x509.NewCertPool()
		for _, c := range h.ClientCAs {
			cfg.ClientCAs.AddCert(c)
		}
	} else if h.ClientAuth == tls.VerifyClientCertIfGiven || h.ClientAuth == tls.RequireAndVerifyClientCert {
		// An empty pool, not nil: nil would mean the system roots.
		return nil, fmt.Errorf("client auth %s without client CAs", ClientAuthName(h.ClientAuth))
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

// clientTrust is the trust key of a host: its verifyDepth and the SHA-256
// of each of its clientCAs, sorted.
func clientTrust(h *model.ListenerHost) string {
	fps := make([]string, len(h.ClientCAs))
	for i, ca := range h.ClientCAs {
		fps[i] = model.CertFingerprint(ca)
	}
	slices.Sort(fps)
	return fmt.Sprintf("%d/%s", h.VerifyDepth, strings.Join(fps, ","))
}

// hostFor picks the host for an SNI name: exact, then the wildcard for
// the first label, then the default. Map lookups only.
func (s *snapshot) hostFor(serverName string) *host {
	if h, ok := s.named(serverName); ok {
		return h
	}
	return s.def
}

// named is the host that lists name, exactly or by a wildcard; ok is
// false when none does.
func (s *snapshot) named(name string) (h *host, ok bool) {
	if name == "" {
		return nil, false
	}
	name = strings.ToLower(name) // no copy when already lowercase
	if h, ok := s.exact[name]; ok {
		return h, true
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if h, ok := s.wildcard[name[i+1:]]; ok {
			return h, true
		}
	}
	return nil, false
}

// ClientAuthName is the model's name for a client auth mode, as in the
// Listener resource: none, request, require, verify-if-given,
// require-and-verify.
func ClientAuthName(a tls.ClientAuthType) string {
	switch a {
	case tls.NoClientCert:
		return "none"
	case tls.RequestClientCert:
		return "request"
	case tls.RequireAnyClientCert:
		return "require"
	case tls.VerifyClientCertIfGiven:
		return "verify-if-given"
	case tls.RequireAndVerifyClientCert:
		return "require-and-verify"
	}
	return a.String()
}
