// Package router is a node's routing table: Routes compiled into one
// net/http.ServeMux used as a matcher (method, host, path template with
// {name} and {name...} wildcards, ServeMux's precedence rules). A Table is
// immutable; a route change builds a new one.
package router

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"keyway.dev/common/model"
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
	Allow             []model.IdentityRule
}

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
	mux    *http.ServeMux
	routes []model.Route
}

// Build compiles routes, in name order so that the result does not depend on
// the order they were read in. A route whose pattern conflicts with an
// earlier one (or is invalid) is left out and reported; the others are in
// the table.
func Build(routes []model.Route) (*Table, []error) {
	routes = slices.Clone(routes)
	slices.SortFunc(routes, func(a, b model.Route) int { return strings.Compare(a.Name, b.Name) })
	t := &Table{mux: http.NewServeMux()}
	var errs []error
	for _, r := range routes {
		target := targetOf(&r)
		patterns := Patterns(r)
		// Register all the route's patterns or none: a mux cannot
		// unregister, so try them on a scratch mux first.
		if err := register(http.NewServeMux(), patterns, target); err != nil {
			errs = append(errs, fmt.Errorf("router: route %q: %w", r.Name, err))
			continue
		}
		if err := register(t.mux, patterns, target); err != nil {
			errs = append(errs, fmt.Errorf("router: route %q: %w", r.Name, err))
			// The mux may hold some of its patterns now; rebuild it
			// without this route.
			t.mux = http.NewServeMux()
			for _, ok := range t.routes {
				_ = register(t.mux, Patterns(ok), targetOf(&ok))
			}
			continue
		}
		t.routes = append(t.routes, r)
	}
	return t, errs
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

// Match finds the route for r. It does not modify r.
func (t *Table) Match(r *http.Request) (*Target, bool) {
	if t == nil {
		return nil, false
	}
	h, _ := t.mux.Handler(r)
	target, ok := h.(*Target)
	return target, ok
}

// Routes are the routes in the table, in name order.
func (t *Table) Routes() []model.Route {
	if t == nil {
		return nil
	}
	return slices.Clone(t.routes)
}
