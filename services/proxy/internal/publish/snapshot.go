package publish

import (
	"fmt"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/proxy/internal/router"
	"keyway.dev/proxy/internal/upstream"
)

// Snapshot is the configuration a node serves at one revision. Immutable:
// nothing in it is modified after it is published.
type Snapshot struct {
	// Revision is the store revision of the last change applied.
	Revision uint64
	// Ready is set once the bucket's contents at start were all read.
	Ready  bool
	Router *router.Table
	// Upstreams by Service name.
	Upstreams *Upstreams
	// UpstreamNames are the keys of Upstreams in order, sorted again only
	// when an Upstream comes or goes (not when one is rebuilt).
	UpstreamNames []string
	// RouteErrors are the routes left out of the table (conflicts).
	RouteErrors []error
	// Listeners are every stored Listener, by name, including those
	// Options.Listeners could not serve (those are in Skipped too).
	Listeners []*model.Listener
	// Skipped are the stored values refused and not yet superseded, by
	// key then revision.
	Skipped []*SkippedError

	// routed is each route's Upstream, by [router.Target.Index] (nil for
	// a route to a Service that has none): resolved when the snapshot is
	// built, so that a request does not look its Upstream up by name.
	routed []*upstream.Upstream
}

// Upstream is the Upstream of a route of s.Router, nil when its Service
// has none. One slice index: the request path calls it.
func (s *Snapshot) Upstream(t *router.Target) *upstream.Upstream {
	if i := t.Index(); i < len(s.routed) {
		return s.routed[i]
	}
	return nil
}

// route resolves the Upstream of every route of s.Router: all of them
// when the table is not prev's nor made from it by one Update, else those
// of the routes the Update changed and of the routes to the Services in
// changed, the others' being prev's.
func (s *Snapshot) route(prev *Snapshot, changed map[string]bool) {
	indexes, incremental := s.Router.ChangedSince(prev.Router)
	if !incremental || len(prev.routed) != prev.Router.Len() {
		s.routed = make([]*upstream.Upstream, s.Router.Len())
		for i := range s.routed {
			s.routed[i] = s.Upstreams.Get(s.Router.ServiceAt(i))
		}
		return
	}
	s.routed = prev.routed
	copied := false
	set := func(i int, u *upstream.Upstream) {
		if !copied {
			// One copy of a slice of pointers: 80 KB at 10,000 routes.
			s.routed = make([]*upstream.Upstream, s.Router.Len())
			copy(s.routed, prev.routed)
			copied = true
		}
		s.routed[i] = u
	}
	for _, i := range indexes {
		set(i, s.Upstreams.Get(s.Router.ServiceAt(i)))
	}
	for name := range changed {
		for _, i := range s.Router.RoutesTo(name) {
			set(i, s.Upstreams.Get(name))
		}
	}
}

// SkippedError is a stored value the node refused: it does not decode, the
// Upstream it leads to cannot be built, or its Listener cannot be served. The node keeps serving the
// last good value of Key (if it had one).
type SkippedError struct {
	// Key is the bucket key, e.g. "policybinding.orders-mtls".
	Key string
	// Revision is the store revision of the refused value.
	Revision uint64
	Err      error
	// Time is when the node refused it.
	Time time.Time
}

// Error says what was refused. Its "config:" prefix is the one nodes have
// always reported refusals with (status, logs), kept as it was.
func (e *SkippedError) Error() string {
	return fmt.Sprintf("config: refused %s at revision %d: %v", e.Key, e.Revision, e.Err)
}

func (e *SkippedError) Unwrap() error { return e.Err }
