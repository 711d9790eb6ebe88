package publish

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"
	"weak"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/material"
	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
	"keyway.dev/proxy/internal/translate"
)

// Resolver hands over the material behind references: the secrets package's
// Source in production, which caches by version. Safe for concurrent use.
type Resolver interface {
	Alias(ctx context.Context, ref secretref.Ref) (*material.Alias, error)
	Truststore(ctx context.Context, name string) (*material.Truststore, error)
}

// errNoSecrets refuses a reference on a node started without the secrets
// service.
var errNoSecrets = errors.New("config: the value references the secrets service, and this node has no secrets service configured (--secrets-internal-url, --secrets-cert, --secrets-key, --secrets-ca)")

// resolveTimeout bounds the resolution of one value's references: the
// first time a reference is used the material is fetched, later it is
// cached.
const resolveTimeout = 15 * time.Second

// resolvedListener is a Listener as served: out is the copy with its
// references resolved.
type resolvedListener struct {
	out *model.Listener
}

// material fetches (or reads from the cache) what a certificate reference
// and a truststore name stand for.
func (p *Publisher) material(ref *secretref.Ref, truststore string) (*tls.Certificate, []*x509.Certificate, error) {
	if p.opts.Secrets == nil {
		return nil, nil, errNoSecrets
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	var cert *tls.Certificate
	var cas []*x509.Certificate
	var errs []error
	if ref != nil {
		a, err := p.opts.Secrets.Alias(ctx, *ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: resolving keystore %q alias %q: %w", ref.Keystore, ref.Alias, err))
		} else {
			cert = a.Certificate
		}
	}
	if truststore != "" {
		t, err := p.opts.Secrets.Truststore(ctx, truststore)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: resolving truststore %q: %w", truststore, err))
		} else {
			cas = t.CAs
		}
	}
	return cert, cas, errors.Join(errs...)
}

// resolveOutbound returns o with its references resolved. Bindings decoded
// to one context (model.OutboundCache) and resolved to the same material
// get the same copy, and so share its CA pool and tls.Config
// (tlsconf.SharedOutbound, keyed by the context): 10,000 bindings naming
// one alias hold one of each, not 10,000.
func (p *Publisher) resolveOutbound(o *model.OutboundTLS) (*model.OutboundTLS, error) {
	cert, cas, err := p.material(o.CertificateRef, o.Truststore)
	if err != nil {
		return nil, err
	}
	key := resolvedKey{in: o, cert: cert, cas: len(cas)}
	if len(cas) > 0 {
		key.ca = &cas[0]
	}
	if out := p.outbound.get(key); out != nil {
		return out, nil
	}
	out := o.Resolve(cert, cas)
	p.outbound.put(key, out)
	return out, nil
}

// resolvedKey names one resolution of a context: the context as decoded
// and the material its references stood for, by identity. The Resolver
// hands out the same values until the material's version changes, and a
// new version is a new key.
type resolvedKey struct {
	in   *model.OutboundTLS
	cert *tls.Certificate
	ca   **x509.Certificate // the first element of the CAs
	cas  int
}

// resolvedOutbound holds the resolved contexts by what they were resolved
// from. Its values are weak: a context no Upstream holds any more is
// collected, and its entry goes with it.
type resolvedOutbound struct {
	mu sync.Mutex // the cleanups run on their own goroutine
	m  map[resolvedKey]weak.Pointer[model.OutboundTLS]
}

func (r *resolvedOutbound) get(key resolvedKey) *model.OutboundTLS {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[key].Value()
}

func (r *resolvedOutbound) put(key resolvedKey, out *model.OutboundTLS) {
	wp := weak.Make(out)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[key] = wp
	runtime.AddCleanup(out, func(wp weak.Pointer[model.OutboundTLS]) {
		r.mu.Lock()
		defer r.mu.Unlock()
		// Only its own entry: a later put under the same key may have
		// replaced it.
		if r.m[key] == wp {
			delete(r.m, key)
		}
	}, wp)
}

// len is the number of resolved contexts held.
func (r *resolvedOutbound) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// resolveListeners returns the Listeners with their hosts' references
// resolved. A Listener whose resolved hosts are unchanged keeps its previous
// *model.Listener, so that the inbound servers leave it alone; one that
// cannot be resolved is refused and keeps what it served before.
func (p *Publisher) resolveListeners(store *translate.Store, listeners []*model.Listener) []*model.Listener {
	p.secretErrs = p.secretErrs[:0]
	out := make([]*model.Listener, 0, len(listeners))
	seen := make(map[string]bool, len(listeners))
	for _, l := range listeners {
		seen[l.Name] = true
		if !slices.ContainsFunc(l.Hosts, func(h model.ListenerHost) bool { return h.References() }) {
			delete(p.resolved, l.Name)
			out = append(out, l)
			continue
		}
		hosts := make([]model.ListenerHost, len(l.Hosts))
		var errs []error
		for i, h := range l.Hosts {
			if !h.References() {
				hosts[i] = h
				continue
			}
			cert, cas, err := p.material(h.CertificateRef, h.ClientTruststore)
			if err != nil {
				errs = append(errs, fmt.Errorf("host %d %v: %w", i, h.Hostnames, err))
				continue
			}
			hosts[i] = h.Resolve(cert, cas)
		}
		prev, served := p.resolved[l.Name]
		if err := errors.Join(errs...); err != nil {
			key := configkv.Key(model.Ref{Kind: model.KindListener, Name: l.Name})
			p.secretErrs = append(p.secretErrs, &SkippedError{Key: key, Revision: store.Rev(key), Err: err})
			p.log.Error("cannot resolve the listener's references; keeping what it served before, if anything", "listener", l.Name, "error", err)
			if served {
				out = append(out, prev.out)
			}
			continue
		}
		if served && sameListener(prev.out, l, hosts) {
			out = append(out, prev.out)
			continue
		}
		cp := *l
		cp.Hosts = hosts
		p.resolved[l.Name] = resolvedListener{out: &cp}
		out = append(out, &cp)
	}
	for name := range maps.Keys(p.resolved) {
		if !seen[name] {
			delete(p.resolved, name)
		}
	}
	return out
}

// sameListener reports whether prev (as served) is l with hosts: the
// Listener is rebuilt with tls-inbound bindings on every change, so pointers
// differ; fingerprints and hostnames tell whether anything served does.
func sameListener(prev, l *model.Listener, hosts []model.ListenerHost) bool {
	return prev.Address == l.Address && prev.Default == l.Default && prev.DefaultSet == l.DefaultSet &&
		slices.EqualFunc(prev.Hosts, hosts, func(x, y model.ListenerHost) bool {
			return x.Fingerprint == y.Fingerprint && slices.Equal(x.Hostnames, y.Hostnames)
		})
}
