package router

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"keyway.dev/internal/model"
)

// mux is the routes one Listener (or the plain-HTTP port) serves, split by
// their first path segment. ServeMux compares every new pattern that ends in
// "/" or {name...} with every such pattern already registered, so 10,000
// prefix routes in one ServeMux took over a second to build. A route whose
// first segment is a literal ("/orders/{id}") can only match requests with
// that first segment, so each such segment gets a ServeMux of its own,
// holding its routes and the routes whose first segment is not a literal
// ("/", "/{id}"): those are in every shard, and in the shared ServeMux that
// serves the other segments. Matching in the request's shard therefore gives
// what one ServeMux of all the routes would.
type mux struct {
	global  *http.ServeMux
	shards  map[string]*http.ServeMux
	globals []model.Route
	bySeg   map[string][]model.Route
}

func newMux() *mux {
	return &mux{global: http.NewServeMux(), shards: make(map[string]*http.ServeMux), bySeg: make(map[string][]model.Route)}
}

// firstSegment is the first segment of a route's path when it is a literal
// ("orders" for "/orders/{id}"), "" otherwise ("/", "/{id}").
func firstSegment(path string) string {
	seg, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if strings.Contains(seg, "{") {
		return ""
	}
	return seg
}

// serveMux is the ServeMux for r: its first segment's shard, or the shared
// one. A map lookup.
func (m *mux) serveMux(r *http.Request) *http.ServeMux {
	seg, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if s, ok := m.shards[seg]; ok && seg != "" {
		return s
	}
	return m.global
}

// add registers r (valid patterns) where it belongs, or nowhere when it
// conflicts with a route already there.
func (m *mux) add(r model.Route, target *Target, patterns []string) error {
	seg := firstSegment(r.Path)
	if seg != "" {
		if unescaped, err := url.PathUnescape(seg); err == nil {
			seg = unescaped
		}
		s := m.shards[seg]
		if s == nil {
			s = m.shard(nil)
		}
		if err := register(s, patterns, target); err != nil {
			m.shards[seg] = m.shard(m.bySeg[seg]) // without r
			if len(m.bySeg[seg]) == 0 {
				delete(m.shards, seg)
			}
			return err
		}
		m.shards[seg] = s
		m.bySeg[seg] = append(m.bySeg[seg], r)
		return nil
	}
	err := register(m.global, patterns, target)
	for _, seg := range slices.Sorted(maps.Keys(m.shards)) {
		if err != nil {
			break
		}
		err = register(m.shards[seg], patterns, target)
	}
	if err != nil {
		m.rebuild() // without r
		return err
	}
	m.globals = append(m.globals, r)
	return nil
}

// remove takes r out again (another mux refused it).
func (m *mux) remove(r model.Route) {
	drop := func(rs []model.Route) []model.Route {
		return slices.DeleteFunc(rs, func(x model.Route) bool { return x.Name == r.Name })
	}
	m.globals = drop(m.globals)
	for seg := range m.bySeg {
		m.bySeg[seg] = drop(m.bySeg[seg])
		if len(m.bySeg[seg]) == 0 {
			delete(m.bySeg, seg)
		}
	}
	m.rebuild()
}

// shard is a new ServeMux with the global routes and routes.
func (m *mux) shard(routes []model.Route) *http.ServeMux {
	s := http.NewServeMux()
	for _, r := range m.globals {
		_ = register(s, Patterns(r), targetOf(&r))
	}
	for _, r := range routes {
		_ = register(s, Patterns(r), targetOf(&r))
	}
	return s
}

// rebuild makes every ServeMux again from the routes kept.
func (m *mux) rebuild() {
	m.global = m.shard(nil)
	m.shards = make(map[string]*http.ServeMux, len(m.bySeg))
	for seg, routes := range m.bySeg {
		m.shards[seg] = m.shard(routes)
	}
}
