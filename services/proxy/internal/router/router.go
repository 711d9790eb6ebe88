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
	"slices"
	"strings"

	"keyway.dev/internal/identity"
	"keyway.dev/internal/model"
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

// Table matches requests to targets. Safe for concurrent use; immutable.
type Table struct {
	// all serves the plain-HTTP port and Listeners no route names.
	all *mux
	// byListener serves each Listener that routes name: its own routes and
	// those that serve every Listener.
	byListener map[string]*mux
	routes     []model.Route
	// byService are the indexes of the routes to each Service.
	byService map[string][]int
}

// Build compiles routes, in name order so that the result does not depend on
// the order they were read in. A route whose pattern conflicts with an
// earlier one (or is invalid) is left out and reported; the others are in
// the table. Routes that name Listeners serve only those Listeners, and
// conflict only with routes that serve them too.
func Build(routes []model.Route) (*Table, []error) {
	routes = slices.Clone(routes)
	slices.SortFunc(routes, func(a, b model.Route) int { return strings.Compare(a.Name, b.Name) })
	t := &Table{all: newMux(), byListener: make(map[string]*mux), byService: make(map[string][]int)}
	for _, r := range routes {
		for _, l := range r.Listeners {
			if t.byListener[l] == nil {
				t.byListener[l] = newMux()
			}
		}
	}
	var errs []error
	for _, r := range routes {
		muxes := []*mux{}
		if len(r.Listeners) == 0 {
			muxes = append(muxes, t.all)
			for _, name := range slices.Sorted(maps.Keys(t.byListener)) {
				muxes = append(muxes, t.byListener[name])
			}
		} else {
			for _, name := range r.Listeners {
				muxes = append(muxes, t.byListener[name])
			}
		}
		target := targetOf(&r)
		target.index = len(t.routes)
		if err := t.add(r, target, muxes); err != nil {
			errs = append(errs, err)
			continue
		}
		t.routes = append(t.routes, r)
		t.byService[r.Service] = append(t.byService[r.Service], target.index)
	}
	return t, errs
}

// add registers r, whose target is target, in every one of muxes, or in
// none.
func (t *Table) add(r model.Route, target *Target, muxes []*mux) error {
	patterns := Patterns(r)
	// An invalid pattern fails on its own; try it on a scratch mux so that
	// no real one holds part of the route.
	if err := register(http.NewServeMux(), patterns, target); err != nil {
		return fmt.Errorf("router: route %q: %w", r.Name, err)
	}
	for i, m := range muxes {
		if err := m.add(r, target, patterns); err != nil {
			for _, done := range muxes[:i] {
				done.remove(r)
			}
			return fmt.Errorf("router: route %q: %w", r.Name, err)
		}
	}
	return nil
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

// Len is the number of routes in the table.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.routes)
}

// ServiceAt is the Service of the route at index i (see [Target.Index]).
func (t *Table) ServiceAt(i int) string { return t.routes[i].Service }

// RoutesTo are the indexes of the routes to service, in order; the slice
// is the table's.
func (t *Table) RoutesTo(service string) []int {
	if t == nil {
		return nil
	}
	return t.byService[service]
}

// Routes are the routes in the table, in name order.
func (t *Table) Routes() []model.Route {
	if t == nil {
		return nil
	}
	return slices.Clone(t.routes)
}
