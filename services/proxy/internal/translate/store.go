package translate

import (
	"iter"
	"maps"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
	"keyway.dev/proxy/internal/secrets"
)

// Stored is a key's last good model and the revision it was read at.
type Stored struct {
	Obj model.Object
	Rev uint64
}

// Store holds the stored objects by bucket key, with the indexes that make a
// change cost the same with 10 or 10,000 Services. Not safe for concurrent
// use: one goroutine applies changes and translates.
type Store struct {
	objects map[string]Stored
	// byTarget indexes tls-outbound bindings by the Service they target
	// (bucket keys).
	byTarget map[string]map[string]bool
	// users is the dependency index of references: secret bucket key
	// (secrets.AliasKey, secrets.TruststoreKey form) → config bucket keys
	// whose value names it.
	users map[string]map[string]bool
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{
		objects:  make(map[string]Stored),
		byTarget: make(map[string]map[string]bool),
		users:    make(map[string]map[string]bool),
	}
}

// Reserve sizes an empty Store for n objects, so that reading a large
// bucket does not grow its map step by step. It does nothing to a Store
// that holds objects.
func (s *Store) Reserve(n int) {
	if len(s.objects) == 0 && n > 0 {
		s.objects = make(map[string]Stored, n)
	}
}

// Get returns the object stored under key.
func (s *Store) Get(key string) (Stored, bool) {
	o, ok := s.objects[key]
	return o, ok
}

// Rev is the revision of the object stored under key, 0 when there is none.
func (s *Store) Rev(key string) uint64 { return s.objects[key].Rev }

// Keys yields the keys of the stored objects, in no particular order.
// Deleting the key yielded is allowed.
func (s *Store) Keys() iter.Seq[string] { return maps.Keys(s.objects) }

// Len is the number of stored objects.
func (s *Store) Len() int { return len(s.objects) }

// Put stores obj, read at revision rev, under key, and marks in d what the
// old value (if any) and the new one invalidate.
func (s *Store) Put(key string, obj model.Object, rev uint64, d *Dirty) {
	if old, ok := s.objects[key]; ok {
		d.Touch(old.Obj) // a binding may have changed its target
		s.index(key, old.Obj, false)
		s.unindexBinding(key, old.Obj)
	}
	s.objects[key] = Stored{Obj: obj, Rev: rev}
	s.index(key, obj, true)
	s.indexBinding(key, obj)
	d.Touch(obj)
}

// Delete removes key, marking in d what its value invalidates.
func (s *Store) Delete(key string, d *Dirty) {
	if old, ok := s.objects[key]; ok {
		delete(s.objects, key)
		s.index(key, old.Obj, false)
		s.unindexBinding(key, old.Obj)
		d.Touch(old.Obj)
	}
}

// Users yields the config keys whose value names the secret secretKey
// (secrets.AliasKey, secrets.TruststoreKey form).
func (s *Store) Users(secretKey string) iter.Seq[string] { return maps.Keys(s.users[secretKey]) }

// index adds (or removes) the references of obj, stored under key, to the
// dependency index.
func (s *Store) index(key string, obj model.Object, add bool) {
	for _, sk := range SecretKeys(obj) {
		users := s.users[sk]
		if add {
			if users == nil {
				users = make(map[string]bool)
				s.users[sk] = users
			}
			users[key] = true
			continue
		}
		delete(users, key)
		if len(users) == 0 {
			delete(s.users, sk)
		}
	}
}

// indexBinding records a binding under the Service it targets.
func (s *Store) indexBinding(key string, obj model.Object) {
	b := obj.Binding
	if b == nil || b.Target.Kind != model.KindService {
		return
	}
	m := s.byTarget[b.Target.Name]
	if m == nil {
		m = make(map[string]bool)
		s.byTarget[b.Target.Name] = m
	}
	m[key] = true
}

func (s *Store) unindexBinding(key string, obj model.Object) {
	b := obj.Binding
	if b == nil || b.Target.Kind != model.KindService {
		return
	}
	if m := s.byTarget[b.Target.Name]; m != nil {
		delete(m, key)
		if len(m) == 0 {
			delete(s.byTarget, b.Target.Name)
		}
	}
}

// SecretKeys lists the secrets an object references, as bucket keys of the
// secrets service's versions bucket.
func SecretKeys(obj model.Object) []string {
	switch {
	case obj.Binding != nil && obj.Binding.Outbound != nil:
		return refKeys(nil, obj.Binding.Outbound.CertificateRef, obj.Binding.Outbound.Truststore)
	case obj.Binding != nil && obj.Binding.Inbound != nil:
		return HostSecretKeys(obj.Binding.Inbound.Host)
	case obj.Listener != nil:
		var keys []string
		for _, h := range obj.Listener.Hosts {
			keys = refKeys(keys, h.CertificateRef, h.ClientTruststore)
		}
		return keys
	}
	return nil
}

// OutboundSecretKeys lists the secrets a TLS context references.
func OutboundSecretKeys(o *model.OutboundTLS) []string {
	if o == nil {
		return nil
	}
	return refKeys(nil, o.CertificateRef, o.Truststore)
}

// HostSecretKeys lists the secrets a Listener host references.
func HostSecretKeys(h model.ListenerHost) []string {
	return refKeys(nil, h.CertificateRef, h.ClientTruststore)
}

func refKeys(keys []string, ref *secretref.Ref, truststore string) []string {
	if ref != nil {
		keys = append(keys, secrets.AliasKey(*ref))
	}
	if truststore != "" {
		keys = append(keys, secrets.TruststoreKey(truststore))
	}
	return keys
}

// key is the bucket key of the resource kind/name.
func key(kind, name string) string { return configkv.Key(model.Ref{Kind: kind, Name: name}) }

// Dirty is what a batch of changes invalidated: the Upstreams of some
// Services, the routing table, the Listeners.
type Dirty struct {
	Services map[string]bool
	// Routes is set when a route changed; RouteNames are the routes
	// stored, changed or deleted.
	Routes     bool
	RouteNames map[string]bool
	Listeners  bool
}

// NewDirty returns a Dirty that marks nothing.
func NewDirty() *Dirty {
	return &Dirty{Services: make(map[string]bool), RouteNames: make(map[string]bool)}
}

// Touch marks what obj, stored or removed, invalidates.
func (d *Dirty) Touch(obj model.Object) {
	switch {
	case obj.Service != nil:
		d.Services[obj.Service.Name] = true
	case obj.Route != nil:
		d.Routes = true
		if d.RouteNames == nil {
			d.RouteNames = make(map[string]bool)
		}
		d.RouteNames[obj.Route.Name] = true
	case obj.Listener != nil:
		d.Listeners = true
	case obj.Binding != nil && obj.Binding.Target.Kind == model.KindService:
		d.Services[obj.Binding.Target.Name] = true
	case obj.Binding != nil && obj.Binding.Target.Kind == model.KindListener:
		d.Listeners = true
	}
}
