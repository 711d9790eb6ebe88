// Package router is a node's routing table: Routes compiled into one
// net/http.ServeMux used as a matcher (method, host, path template with
// {name} and {name...} wildcards, ServeMux's precedence rules). A Table is
// immutable; a route change builds a new one.
package router

import (
	"crypto/x509"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/identity"
	"keyway.dev/internal/model"
	"keyway.dev/internal/telemetry"
)

// Target is what a matched route sends the request to.
type Target struct {
	// Route is the Route's name.
	Route string
	// Service is the name of the Service to forward to.
	Service string
	// Path is the Route's path template ("/orders/{id}"): the request
	// span's http.route.
	Path string
	// ClientCertificate and Allow are the Route's client-certificate
	// rules, checked on requests that arrive on a Listener.
	ClientCertificate bool
	Allow             []identity.Rule

	// index is the route's position in its Table: see [Target.Index].
	index int
	// spanAttrs are made by the first traced request: see
	// [Target.SpanAttributes].
	spanAttrs atomic.Pointer[spanAttrs]
}

type spanAttrs struct {
	attrs []attribute.KeyValue
	event []trace.EventOption
}

// SpanAttributes are the request span's attributes of the route:
// keyway.route and keyway.upstream first, then http.route if the route has
// a path; event holds the first two as the options of the route's
// [telemetry.EventRouteMatch]. Made once per Target, by its first traced
// request, not per request nor for every route at start; shared, so read
// only.
func (t *Target) SpanAttributes() (attrs []attribute.KeyValue, event []trace.EventOption) {
	if a := t.spanAttrs.Load(); a != nil {
		return a.attrs, a.event
	}
	a := []attribute.KeyValue{telemetry.AttrRoute.String(t.Route), telemetry.AttrUpstream.String(t.Service)}
	if t.Path != "" {
		a = append(a, telemetry.AttrHTTPRoute.String(t.Path))
	}
	a = a[:len(a):len(a)] // an append by a reader copies
	t.spanAttrs.CompareAndSwap(nil, &spanAttrs{attrs: a, event: []trace.EventOption{trace.WithAttributes(a[:2]...)}})
	got := t.spanAttrs.Load()
	return got.attrs, got.event
}

// Index is the route's position among its Table's routes, from 0 to
// [Table.Len]-1: a snapshot keeps the route's Upstream at that index, so
// that a request finds it without a lookup by name.
func (t *Target) Index() int { return t.index }

func targetOf(r *model.Route) *Target {
	return &Target{Route: r.Name, Service: r.Service, Path: r.Path, ClientCertificate: r.ClientCertificate, Allow: r.Allow}
}

// NeedsIdentity reports whether the route needs a client certificate
// verified by the Listener's host.
func (t *Target) NeedsIdentity() bool { return t.ClientCertificate || len(t.Allow) > 0 }

// Admits reports whether cert matches one of the Allow rules (any
// certificate when there are none); see [model.Route.Admits].
func (t *Target) Admits(cert *x509.Certificate) bool {
	return (&model.Route{Allow: t.Allow}).Admits(cert)
}

// ServeHTTP is never called: Targets are only registered in the mux to be
// found again by Match.
func (*Target) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "router: target used as a handler", http.StatusInternalServerError)
}

// Table matches requests to targets. Safe for concurrent use; immutable:
// [Table.Update] makes a new one that shares what did not change.
type Table struct {
	// all serves the plain-HTTP port and Listeners no route names.
	all *mux
	// byListener serves each Listener that routes name: its own routes and
	// those that serve every Listener.
	byListener map[string]*mux
	// entries are the routes in the table, by name.
	entries *cowMap[*entry]
	// services is the Service of the route at each index ("" for an
	// index an Update freed).
	services []string
	// byService are the indexes of the routes to each Service, in order.
	byService *cowMap[[]int]
	// refused counts the routes Build left out; holes, the indexes
	// Updates freed.
	refused, holes int
	// base is the table Update made this one from, changed the indexes
	// whose route it changed; nil for a table Build made.
	base    *Table
	changed []int
}

// entry is one route of a table, with the target its patterns lead to.
type entry struct {
	route    model.Route
	target   *Target
	patterns []string
}

func newEntry(r *model.Route) *entry {
	return &entry{route: *r, target: targetOf(r), patterns: Patterns(*r)}
}

// Build compiles routes, in name order so that the result does not depend on
// the order they were read in. A route whose pattern conflicts with an
// earlier one (or is invalid) is left out and reported; the others are in
// the table. Routes that name Listeners serve only those Listeners, and
// conflict only with routes that serve them too.
func Build(routes []model.Route) (*Table, []error) {
	routes = slices.Clone(routes)
	slices.SortFunc(routes, func(a, b model.Route) int { return strings.Compare(a.Name, b.Name) })
	t := &Table{all: newMux(), byListener: make(map[string]*mux), entries: &cowMap[*entry]{}, byService: &cowMap[[]int]{}}
	for _, r := range routes {
		for _, l := range r.Listeners {
			if t.byListener[l] == nil {
				t.byListener[l] = newMux()
			}
		}
	}
	var errs []error
	for i := range routes {
		e := newEntry(&routes[i])
		e.target.index = len(t.services)
		if err := t.add(e, t.muxesOf(&e.route)); err != nil {
			errs = append(errs, err)
			t.refused++
			continue
		}
		t.entries.set(e.route.Name, e)
		t.services = append(t.services, e.route.Service)
		is, _ := t.byService.get(e.route.Service)
		t.byService.set(e.route.Service, append(is, e.target.index))
	}
	return t, errs
}

// muxesOf are the muxes that serve r: those of the Listeners it names
// (nil for one the table has none for), else all of them.
func (t *Table) muxesOf(r *model.Route) []*mux {
	if len(r.Listeners) == 0 {
		muxes := []*mux{t.all}
		for _, name := range slices.Sorted(maps.Keys(t.byListener)) {
			muxes = append(muxes, t.byListener[name])
		}
		return muxes
	}
	muxes := make([]*mux, len(r.Listeners))
	for i, name := range r.Listeners {
		muxes[i] = t.byListener[name]
	}
	return muxes
}

// add registers e in every one of muxes, or in none.
func (t *Table) add(e *entry, muxes []*mux) error {
	// An invalid pattern fails on its own; try it on a scratch mux so that
	// no real one holds part of the route.
	if err := register(http.NewServeMux(), e.patterns, e.target); err != nil {
		return fmt.Errorf("router: route %q: %w", e.route.Name, err)
	}
	for i, m := range muxes {
		if err := m.add(e); err != nil {
			for _, done := range muxes[:i] {
				done.remove(e.route.Name)
			}
			return fmt.Errorf("router: route %q: %w", e.route.Name, err)
		}
	}
	return nil
}

// Update is the table of t's routes with changes applied: by route name,
// the route's new value, or nil for a route deleted. It rebuilds only the
// shards (first path segments) the changed routes leave and join, and
// shares the rest of t, so that a change costs about the same with 10 or
// 10,000 routes. ok is false when it cannot tell that the result would be
// the table Build makes of the same routes, and the caller builds that
// instead: when t left a route out, a changed route's first path segment
// is not a literal ("/", "/{tenant}/x": such routes are in every shard),
// it names a Listener no route of t names, or it conflicts.
func (t *Table) Update(changes map[string]*model.Route) (next *Table, ok bool) {
	if t == nil || t.refused > 0 || len(changes) > maxUpdate {
		return nil, false
	}
	type edit struct{ old, new *entry }
	var edits []edit
	changedNames := make(map[string]bool, len(changes))
	for _, name := range slices.Sorted(maps.Keys(changes)) {
		r := changes[name]
		old, _ := t.entries.get(name)
		if r != nil && r.Name != name {
			return nil, false
		}
		if r == nil && old == nil || r != nil && old != nil && reflect.DeepEqual(*r, old.route) {
			continue
		}
		ed := edit{old: old}
		if r != nil {
			ed.new = newEntry(r)
		}
		for _, e := range []*entry{ed.old, ed.new} {
			if e == nil {
				continue
			}
			if _, ok := shardKey(e.route.Path); !ok {
				return nil, false
			}
			if slices.Contains(t.muxesOf(&e.route), nil) {
				return nil, false
			}
		}
		changedNames[name] = true
		edits = append(edits, ed)
	}
	if len(edits) == 0 {
		return t, true
	}

	next = &Table{all: t.all, byListener: t.byListener, entries: t.entries.clone(), services: slices.Clone(t.services), byService: t.byService, holes: t.holes, base: t}
	setIndexes := func(service string, f func([]int) []int) {
		if next.byService == t.byService {
			next.byService = t.byService.clone()
		}
		is, _ := next.byService.get(service)
		if is = f(slices.Clone(is)); len(is) > 0 {
			next.byService.set(service, is)
		} else {
			next.byService.del(service)
		}
	}
	for _, ed := range edits {
		var i int
		switch {
		case ed.old != nil && ed.new != nil && ed.old.route.Service == ed.new.route.Service:
			// Same index, same Service: byService stays.
			i = ed.old.target.index
			next.changed = append(next.changed, i)
			ed.new.target.index = i
			next.entries.set(ed.new.route.Name, ed.new)
			continue
		case ed.old != nil:
			i = ed.old.target.index
			next.entries.del(ed.old.route.Name)
			next.services[i] = ""
			setIndexes(ed.old.route.Service, func(is []int) []int { return slices.DeleteFunc(is, func(x int) bool { return x == i }) })
			if ed.new == nil {
				next.holes++
			}
		default:
			i = len(next.services)
			next.services = append(next.services, "")
		}
		next.changed = append(next.changed, i)
		if ed.new == nil {
			continue
		}
		ed.new.target.index = i
		next.entries.set(ed.new.route.Name, ed.new)
		next.services[i] = ed.new.route.Service
		setIndexes(ed.new.route.Service, func(is []int) []int {
			is = append(is, i)
			slices.Sort(is)
			return is
		})
	}
	if next.holes > len(next.services)/2+16 {
		return nil, false // Build packs the indexes again
	}

	// The shards each changed route leaves or joins, by mux, with the
	// changed routes that join them.
	type place struct {
		m   *mux
		seg string
	}
	joining := make(map[place][]*entry)
	touched := make(map[*mux][]string)
	for _, ed := range edits {
		for _, e := range []*entry{ed.old, ed.new} {
			if e == nil {
				continue
			}
			seg, _ := shardKey(e.route.Path)
			for _, m := range t.muxesOf(&e.route) {
				p := place{m, seg}
				if _, seen := joining[p]; !seen {
					joining[p] = nil
					touched[m] = append(touched[m], seg)
				}
				if e == ed.new {
					joining[p] = append(joining[p], e)
				}
			}
		}
	}
	replaced := make(map[*mux]*mux, len(touched))
	for m, segs := range touched {
		nm := &mux{global: m.global, globals: m.globals, shards: m.shards.clone()}
		for _, seg := range segs {
			var routes []*entry
			if s, _ := m.shards.get(seg); s != nil {
				routes = slices.DeleteFunc(slices.Clone(s.routes), func(e *entry) bool { return changedNames[e.route.Name] })
			}
			routes = append(routes, joining[place{m, seg}]...)
			if len(routes) == 0 {
				nm.shards.del(seg)
				continue
			}
			slices.SortFunc(routes, func(a, b *entry) int { return strings.Compare(a.route.Name, b.route.Name) })
			s, err := m.newShard(routes)
			if err != nil {
				return nil, false // a conflict: Build says which route is out
			}
			nm.shards.set(seg, s)
		}
		replaced[m] = nm
	}
	if nm := replaced[t.all]; nm != nil {
		next.all = nm
	}
	for name, m := range t.byListener {
		if nm := replaced[m]; nm != nil {
			if sameMap(next.byListener, t.byListener) {
				next.byListener = maps.Clone(t.byListener)
			}
			next.byListener[name] = nm
		}
	}
	return next, true
}

// maxUpdate is the most changes Update applies: a bootstrap, or a batch
// that changes many routes, builds the table anew.
const maxUpdate = 64

// sameMap reports whether a and b are the same map (not only equal).
func sameMap(a, b map[string]*mux) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// ChangedSince is what [Table.Update] changed when it made t from prev:
// the indexes whose route came, went or changed; ok is false when t was
// not made from prev by one Update (nor is prev).
func (t *Table) ChangedSince(prev *Table) (indexes []int, ok bool) {
	switch {
	case t == prev:
		return nil, true
	case t != nil && t.base == prev:
		return t.changed, true
	}
	return nil, false
}

// Patterns are the ServeMux patterns of a route: one per method ("GET
// orders.example/orders/{id}"), or one without a method when the route
// takes all methods.
func Patterns(r model.Route) []string {
	hostPath := r.Host + r.Path
	if len(r.Methods) == 0 {
		return []string{hostPath}
	}
	ps := make([]string, len(r.Methods))
	for i, m := range r.Methods {
		ps[i] = m + " " + hostPath
	}
	return ps
}

// register adds patterns to mux, turning ServeMux's panics (conflicting or
// invalid patterns) into an error.
func register(mux *http.ServeMux, patterns []string, h http.Handler) (err error) {
	var current string
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("pattern %q: %v", current, p)
		}
	}()
	for _, p := range patterns {
		current = p
		mux.Handle(p, h)
	}
	return nil
}

// Match finds the route for r, which arrived on the named Listener ("" for
// the plain-HTTP port). It does not modify r.
func (t *Table) Match(r *http.Request, listener string) (*Target, bool) {
	if t == nil {
		return nil, false
	}
	m := t.all
	if listener != "" {
		if own := t.byListener[listener]; own != nil {
			m = own
		}
	}
	h, _ := m.serveMux(r).Handler(r)
	target, ok := h.(*Target)
	return target, ok
}

// Len is the number of route indexes of the table: its routes, and the
// indexes Updates freed since it was built (see [Target.Index]).
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.services)
}

// ServiceAt is the Service of the route at index i (see [Target.Index]),
// "" for an index no route has.
func (t *Table) ServiceAt(i int) string { return t.services[i] }

// RoutesTo are the indexes of the routes to service, in order; the slice
// is the table's.
func (t *Table) RoutesTo(service string) []int {
	if t == nil {
		return nil
	}
	is, _ := t.byService.get(service)
	return is
}

// Count is the number of routes in the table.
func (t *Table) Count() int {
	if t == nil {
		return 0
	}
	return t.entries.len()
}

// Routes are the routes in the table, in name order.
func (t *Table) Routes() []model.Route {
	if t == nil {
		return nil
	}
	out := make([]model.Route, 0, t.entries.len())
	for _, e := range t.entries.all() {
		out = append(out, e.route)
	}
	slices.SortFunc(out, func(a, b model.Route) int { return strings.Compare(a.Name, b.Name) })
	return out
}
