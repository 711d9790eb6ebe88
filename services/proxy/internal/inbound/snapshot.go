package inbound

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/tlsconf"
)

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
	// staples are the hosts' OCSP staplers, kept fresh by a goroutine
	// that stop ends (closed with the snapshot).
	staples []*staple
	stop    chan struct{}
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
	// chains verifies client chains and remembers those that verified;
	// nil when crypto/tls verifies them ([newChainCache]).
	chains *chainCache
}

// buildSnapshot prepares every host of l, with revocations making the
// revocation checker of each host that checks. Each snapshot gets its own
// session ticket keys (one per host): a ticket issued under one host's
// material is not resumed under another host's, or under a later snapshot.
// staples makes the OCSP stapler of each host whose certificate has a
// responder (nil: none). Each host that verifies client certificates gets
// its own cache of verified chains ([chainCache]), counted by chains (nil:
// not counted), so a new snapshot starts with none.
func buildSnapshot(l *model.Listener, revocations func(*model.ListenerHost) (*hostRevocation, error), staples func(*model.ListenerHost) (*staple, error), chains ChainObserver) (*snapshot, error) {
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
		built, err := tlsconf.InboundHost(h)
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
		if staples != nil {
			st, err := staples(h)
			if err != nil {
				errs = append(errs, fmt.Errorf("inbound: listener %q host %d %v: OCSP stapling: %w", l.Name, i, h.Hostnames, err))
				continue
			}
			if st != nil {
				s.staples = append(s.staples, st)
				built.Certificates = nil
				built.GetCertificate = st.getCertificate
			}
		}
		cfg := &host{cfg: built, clientAuth: h.ClientAuth, roots: built.ClientCAs, verifyDepth: h.VerifyDepth, trust: tlsconf.InboundTrust(h), revocation: rev}
		if cfg.chains = newChainCache(cfg, l.Name, chains); cfg.chains != nil {
			cfg.chains.install(cfg)
		}
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
	for _, st := range s.staples {
		st.checker.Close()
	}
	if s.stop != nil {
		close(s.stop)
	}
}

// startStapling keeps the snapshot's staples fresh from cache until the
// snapshot is closed; nothing when no host staples.
func (s *snapshot) startStapling(cache *revocation.Cache) {
	if len(s.staples) == 0 || cache == nil {
		return
	}
	s.stop = make(chan struct{})
	go keepStapled(cache, s.staples, s.stop)
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
