package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/proxy/internal/secrets"
)

// resolveTimeout bounds the resolution of one value's references: the
// first time a reference is used the material is fetched, later it is
// cached.
const resolveTimeout = 15 * time.Second

// resolvedListener is a Listener as served: out is the copy with its
// references resolved.
type resolvedListener struct {
	out *model.Listener
}

// UseSecrets sets the resolver of references (Options.Secrets) on a
// watcher built without one. Call it before Run.
func (w *Watcher) UseSecrets(r Resolver) { w.opts.Secrets = r }

// SecretsChanged tells the watcher that the material behind these secret
// keys (secrets.AliasKey, secrets.TruststoreKey) was replaced: the Upstreams
// and Listeners that use them are rebuilt, and nothing else. Safe for
// concurrent use; it does not wait for the rebuild.
func (w *Watcher) SecretsChanged(keys []string) {
	w.mu.Lock()
	for _, k := range keys {
		w.secretKeys[k] = true
	}
	w.mu.Unlock()
	select {
	case w.secretKick <- struct{}{}:
	default:
	}
}

// markSecretUsers marks dirty what depends on the secrets reported changed,
// by the dependency index, and reports whether anything was.
func (w *Watcher) markSecretUsers() bool {
	w.mu.Lock()
	keys := w.secretKeys
	w.secretKeys = make(map[string]bool)
	w.mu.Unlock()
	marked := false
	for key := range keys {
		for user := range w.users[key] {
			if o, ok := w.objects[user]; ok {
				w.dirty.touch(o.obj)
				marked = true
				w.log.Info("rebuilding for new secret material", "secret", key, "key", user)
			}
		}
	}
	return marked
}

// index adds (or removes) the references of obj, stored under key, to the
// dependency index.
func (w *Watcher) index(key string, obj model.Object, add bool) {
	for _, s := range secretKeys(obj) {
		users := w.users[s]
		if add {
			if users == nil {
				users = make(map[string]bool)
				w.users[s] = users
			}
			users[key] = true
			continue
		}
		delete(users, key)
		if len(users) == 0 {
			delete(w.users, s)
		}
	}
}

// secretKeys lists the secrets an object references, as bucket keys.
func secretKeys(obj model.Object) []string {
	var keys []string
	add := func(ref *model.SecretRef, truststore string) {
		if ref != nil {
			keys = append(keys, secrets.AliasKey(*ref))
		}
		if truststore != "" {
			keys = append(keys, secrets.TruststoreKey(truststore))
		}
	}
	switch {
	case obj.Binding != nil && obj.Binding.Outbound != nil:
		add(obj.Binding.Outbound.CertificateRef, obj.Binding.Outbound.Truststore)
	case obj.Binding != nil && obj.Binding.Inbound != nil:
		add(obj.Binding.Inbound.Host.CertificateRef, obj.Binding.Inbound.Host.ClientTruststore)
	case obj.Listener != nil:
		for _, h := range obj.Listener.Hosts {
			add(h.CertificateRef, h.ClientTruststore)
		}
	}
	return keys
}

// material fetches (or reads from the cache) what a certificate reference
// and a truststore name stand for.
func (w *Watcher) material(ref *model.SecretRef, truststore string) (*tls.Certificate, []*x509.Certificate, error) {
	if w.opts.Secrets == nil {
		return nil, nil, errNoSecrets
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	var cert *tls.Certificate
	var cas []*x509.Certificate
	var errs []error
	if ref != nil {
		a, err := w.opts.Secrets.Alias(ctx, *ref)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: resolving keystore %q alias %q: %w", ref.Keystore, ref.Alias, err))
		} else {
			cert = a.Certificate
		}
	}
	if truststore != "" {
		t, err := w.opts.Secrets.Truststore(ctx, truststore)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: resolving truststore %q: %w", truststore, err))
		} else {
			cas = t.CAs
		}
	}
	return cert, cas, errors.Join(errs...)
}

// resolveOutbound returns o with its references resolved.
func (w *Watcher) resolveOutbound(o *model.OutboundTLS) (*model.OutboundTLS, error) {
	cert, cas, err := w.material(o.CertificateRef, o.Truststore)
	if err != nil {
		return nil, err
	}
	return o.Resolve(cert, cas), nil
}

// resolveListeners returns the Listeners with their hosts' references
// resolved. A Listener whose resolved hosts are unchanged keeps its previous
// *model.Listener, so that the inbound servers leave it alone; one that
// cannot be resolved is refused and keeps what it served before.
func (w *Watcher) resolveListeners(listeners []*model.Listener) []*model.Listener {
	w.secretErrs = w.secretErrs[:0]
	out := make([]*model.Listener, 0, len(listeners))
	seen := make(map[string]bool, len(listeners))
	for _, l := range listeners {
		seen[l.Name] = true
		if !slices.ContainsFunc(l.Hosts, func(h model.ListenerHost) bool { return h.References() }) {
			delete(w.resolved, l.Name)
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
			cert, cas, err := w.material(h.CertificateRef, h.ClientTruststore)
			if err != nil {
				errs = append(errs, fmt.Errorf("host %d %v: %w", i, h.Hostnames, err))
				continue
			}
			hosts[i] = h.Resolve(cert, cas)
		}
		prev, served := w.resolved[l.Name]
		if err := errors.Join(errs...); err != nil {
			key := configkv.Key(model.Ref{Kind: model.KindListener, Name: l.Name})
			w.secretErrs = append(w.secretErrs, &SkippedError{Key: key, Revision: w.objects[key].rev, Err: err})
			w.log.Error("cannot resolve the listener's references; keeping what it served before, if anything", "listener", l.Name, "error", err)
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
		w.resolved[l.Name] = resolvedListener{out: &cp}
		out = append(out, &cp)
	}
	for name := range maps.Keys(w.resolved) {
		if !seen[name] {
			delete(w.resolved, name)
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
