package router

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// mux is the routes one Listener (or the plain-HTTP port) serves, split by
// their first path segment. ServeMux compares every new pattern that ends in
// "/" or {name...} with every such pattern already registered, so 10,000
// prefix routes in one ServeMux took over a second to build. A route whose
// first segment is a literal ("/orders/{id}") can only match requests with
// that first segment, so each such segment gets a ServeMux of its own (a
// shard), holding its routes and the routes whose first segment is not a
// literal ("/", "/{id}"): those are in every shard, and in the shared
// ServeMux that serves the other segments. Matching in the request's shard
// therefore gives what one ServeMux of all the routes would, and a change
// to a route of one segment rebuilds that segment's shard alone
// ([Table.Update]).
type mux struct {
	global  *http.ServeMux
	globals []*entry
	shards  *cowMap[*shard]
}

// shard is the ServeMux of one first path segment and the routes of that
// segment in it (the globals are in it too). Immutable once its table is
// built.
type shard struct {
	mux    *http.ServeMux
	routes []*entry
}

func newMux() *mux {
	return &mux{global: http.NewServeMux(), shards: &cowMap[*shard]{}}
}

// shardKey is the shard of a route's path: its first segment, unescaped,
// when it is a literal ("orders" for "/orders/{id}"); ok is false when it
// is not ("/", "/{id}"): the route is then in every shard.
func shardKey(path string) (seg string, ok bool) {
	seg, _, _ = strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if seg == "" || strings.Contains(seg, "{") {
		return "", false
	}
	if unescaped, err := url.PathUnescape(seg); err == nil {
		seg = unescaped
	}
	return seg, true
}

// serveMux is the ServeMux for r: its first segment's shard, or the shared
// one. A map lookup.
func (m *mux) serveMux(r *http.Request) *http.ServeMux {
	seg, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if seg == "" {
		return m.global
	}
	if s, ok := m.shards.get(seg); ok {
		return s.mux
	}
	return m.global
}

// add registers e (valid patterns) where it belongs, or nowhere when it
// conflicts with a route already there. For Build only: it modifies m.
func (m *mux) add(e *entry) error {
	if seg, ok := shardKey(e.route.Path); ok {
		s, _ := m.shards.get(seg)
		if s == nil {
			s = &shard{mux: m.serveMuxOf(nil)}
		}
		if err := register(s.mux, e.patterns, e.target); err != nil {
			if len(s.routes) == 0 {
				m.shards.del(seg)
			} else {
				m.shards.set(seg, &shard{mux: m.serveMuxOf(s.routes), routes: s.routes}) // without e
			}
			return err
		}
		s.routes = append(s.routes, e)
		m.shards.set(seg, s)
		return nil
	}
	err := register(m.global, e.patterns, e.target)
	for _, seg := range slices.Sorted(slices.Values(m.shards.keys())) {
		if err != nil {
			break
		}
		s, _ := m.shards.get(seg)
		err = register(s.mux, e.patterns, e.target)
	}
	if err != nil {
		m.rebuild() // without e
		return err
	}
	m.globals = append(m.globals, e)
	return nil
}

// remove takes the route name out again (another mux refused it). For
// Build only.
func (m *mux) remove(name string) {
	drop := func(es []*entry) []*entry {
		return slices.DeleteFunc(es, func(e *entry) bool { return e.route.Name == name })
	}
	m.globals = drop(m.globals)
	for _, seg := range m.shards.keys() {
		s, _ := m.shards.get(seg)
		if s.routes = drop(s.routes); len(s.routes) == 0 {
			m.shards.del(seg)
		}
	}
	m.rebuild()
}

// serveMuxOf is a new ServeMux with the globals and routes, which are known
// not to conflict.
func (m *mux) serveMuxOf(routes []*entry) *http.ServeMux {
	s := http.NewServeMux()
	for _, e := range m.globals {
		_ = register(s, e.patterns, e.target)
	}
	for _, e := range routes {
		_ = register(s, e.patterns, e.target)
	}
	return s
}

// newShard is a new shard of the globals and routes, or the error of the
// first pattern that conflicts.
func (m *mux) newShard(routes []*entry) (*shard, error) {
	s := &shard{mux: http.NewServeMux(), routes: routes}
	for _, e := range m.globals {
		_ = register(s.mux, e.patterns, e.target)
	}
	for _, e := range routes {
		if err := register(s.mux, e.patterns, e.target); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// rebuild makes every ServeMux again from the routes kept.
func (m *mux) rebuild() {
	m.global = m.serveMuxOf(nil)
	for _, seg := range m.shards.keys() {
		s, _ := m.shards.get(seg)
		m.shards.set(seg, &shard{mux: m.serveMuxOf(s.routes), routes: s.routes})
	}
}
