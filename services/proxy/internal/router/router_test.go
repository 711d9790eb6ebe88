package router_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"keyway.dev/internal/model"
	"keyway.dev/proxy/internal/router"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	table, errs := router.Build([]model.Route{
		{Name: "orders", Path: "/orders/{id}", Methods: []string{"GET", "DELETE"}, Service: "orders"},
		{Name: "orders-create", Path: "/orders/", Methods: []string{"POST"}, Service: "orders-write"},
		{Name: "admin", Path: "/admin/{rest...}", Host: "admin.example", Service: "admin"},
		{Name: "catch-all", Path: "/", Service: "web"},
	})
	if len(errs) != 0 {
		t.Fatalf("Build: %v", errs)
	}
	tests := []struct {
		method, target, host string
		want                 string // service, "" for no match
	}{
		{"GET", "/orders/42", "gw.example", "orders"},
		{"HEAD", "/orders/42", "gw.example", "orders"}, // GET patterns match HEAD
		{"DELETE", "/orders/42", "gw.example", "orders"},
		{"PUT", "/orders/42", "gw.example", "web"}, // falls back to the catch-all
		{"POST", "/orders/", "gw.example", "orders-write"},
		{"POST", "/orders/new/x", "gw.example", "orders-write"},
		{"GET", "/admin/a/b", "admin.example", "admin"},
		{"GET", "/admin/a/b", "admin.example:8443", "admin"},
		{"GET", "/admin/a/b", "other.example", "web"},
		{"GET", "/anything", "gw.example", "web"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(tt.method, "http://"+tt.host+tt.target, nil)
		got, ok := table.Match(r, "")
		if !ok {
			t.Errorf("%s %s%s: no match, want %q", tt.method, tt.host, tt.target, tt.want)
			continue
		}
		if got.Service != tt.want {
			t.Errorf("%s %s%s: service %q, want %q", tt.method, tt.host, tt.target, got.Service, tt.want)
		}
	}
}

func TestNoRoute(t *testing.T) {
	t.Parallel()
	table, _ := router.Build([]model.Route{{Name: "orders", Path: "/orders/{id}", Methods: []string{"GET"}, Service: "orders"}})
	for _, r := range []struct{ method, target string }{{"GET", "/billing"}, {"POST", "/orders/1"}, {"GET", "/orders/1/x"}} {
		if got, ok := table.Match(httptest.NewRequest(r.method, r.target, nil), ""); ok {
			t.Errorf("%s %s matched %+v", r.method, r.target, got)
		}
	}
	var empty *router.Table
	if _, ok := empty.Match(httptest.NewRequest("GET", "/", nil), ""); ok {
		t.Error("nil table matched")
	}
}

func TestConflictsAreReported(t *testing.T) {
	t.Parallel()
	table, errs := router.Build([]model.Route{
		{Name: "b-dup", Path: "/orders/{id}", Methods: []string{"POST", "GET"}, Service: "two"},
		{Name: "a-first", Path: "/orders/{id}", Methods: []string{"GET"}, Service: "one"},
		{Name: "c-bad", Path: "/x/{", Service: "three"},
		{Name: "d-fine", Path: "/billing", Service: "billing"},
	})
	if len(errs) != 2 {
		t.Fatalf("errors %v, want 2 (b-dup conflicts, c-bad invalid)", errs)
	}
	if !strings.Contains(errs[0].Error(), `"b-dup"`) || !strings.Contains(errs[1].Error(), `"c-bad"`) {
		t.Errorf("errors %v", errs)
	}
	// The first route keeps its pattern; the conflicting route is out as a
	// whole (its POST pattern did not conflict, but is not there either).
	if got, _ := table.Match(httptest.NewRequest("GET", "/orders/1", nil), ""); got == nil || got.Service != "one" {
		t.Errorf("GET /orders/1 → %+v, want one", got)
	}
	if got, ok := table.Match(httptest.NewRequest("POST", "/orders/1", nil), ""); ok {
		t.Errorf("POST /orders/1 → %+v, want no match", got)
	}
	if got, _ := table.Match(httptest.NewRequest("GET", "/billing", nil), ""); got == nil || got.Service != "billing" {
		t.Errorf("GET /billing → %+v", got)
	}
	if n := len(table.Routes()); n != 2 {
		t.Errorf("%d routes in table, want 2", n)
	}
}

func TestRoutesPerListener(t *testing.T) {
	t.Parallel()
	table, errs := router.Build([]model.Route{
		{Name: "public", Path: "/", Service: "web"},
		{Name: "admin", Path: "/admin/", Service: "admin", Listeners: []string{"internal"}},
		{Name: "partner", Path: "/partner/", Service: "partner", Listeners: []string{"internal", "partners"}},
		// Conflicts with admin on "internal" only: left out everywhere.
		{Name: "z-admin-again", Path: "/admin/", Service: "other", Listeners: []string{"partners", "internal"}},
	})
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `"z-admin-again"`) {
		t.Fatalf("Build errors %v, want z-admin-again's conflict", errs)
	}
	tests := []struct {
		listener, path string
		want           string // service; "" for no match
	}{
		{"", "/admin/x", "web"}, // the plain port does not serve listener-only routes
		{"", "/partner/x", "web"},
		{"internal", "/admin/x", "admin"},
		{"internal", "/partner/x", "partner"},
		{"internal", "/other", "web"}, // routes without listeners serve every Listener
		{"partners", "/admin/x", "web"},
		{"partners", "/partner/x", "partner"},
		{"unnamed", "/admin/x", "web"}, // a Listener no route names
	}
	for _, tt := range tests {
		got, ok := table.Match(httptest.NewRequest("GET", tt.path, nil), tt.listener)
		if !ok || got.Service != tt.want {
			t.Errorf("listener %q %s → %+v (%v), want %q", tt.listener, tt.path, got, ok, tt.want)
		}
	}
	if n := len(table.Routes()); n != 3 {
		t.Errorf("%d routes in table, want 3", n)
	}
}

// The table's shards (one ServeMux per literal first segment) match exactly
// as one ServeMux holding every route does: the plain ServeMux is the oracle
// here, over routes that mix literal and wildcard first segments, hosts,
// methods, prefixes, and conflicts.
func TestShardsMatchLikeOneServeMux(t *testing.T) {
	t.Parallel()
	routes := []model.Route{
		{Name: "a-root", Path: "/", Service: "root"},
		{Name: "b-orders", Path: "/orders/", Service: "orders"},
		{Name: "c-order", Path: "/orders/{id}", Methods: []string{"GET"}, Service: "order"},
		{Name: "d-tenant-billing", Path: "/{tenant}/billing", Service: "billing"},
		{Name: "e-host-orders", Path: "/orders/", Host: "api.example.com", Service: "api-orders"},
		{Name: "f-exact", Path: "/health", Service: "health"},
		{Name: "g-rest", Path: "/files/{path...}", Service: "files"},
		{Name: "h-conflict", Path: "/orders/{id}", Methods: []string{"GET"}, Service: "dup"}, // conflicts with c-order
		{Name: "i-tenant-files", Path: "/{tenant}/files/{rest...}", Service: "tenant-files"},
	}
	table, errs := router.Build(routes)
	oracle := http.NewServeMux()
	var refused []string
	for _, r := range routes {
		func() {
			defer func() {
				if recover() != nil {
					refused = append(refused, r.Name)
				}
			}()
			for _, p := range router.Patterns(r) {
				oracle.Handle(p, routeName(r.Name))
			}
		}()
	}
	if len(errs) != len(refused) {
		t.Fatalf("Build refused %d routes (%v), one ServeMux %v", len(errs), errs, refused)
	}
	for _, path := range []string{"/", "/x", "/orders", "/orders/", "/orders/7", "/orders/7/items", "/acme/billing",
		"/orders/billing", "/health", "/health/x", "/files/a/b", "/acme/files/x/y", "/files/billing", "/ord%65rs/7"} {
		for _, host := range []string{"gw.example", "api.example.com"} {
			for _, method := range []string{"GET", "POST"} {
				req := httptest.NewRequest(method, "http://"+host+path, nil)
				h, _ := oracle.Handler(req)
				want, _ := h.(routeName) // "" for none, or a redirect
				got, ok := table.Match(req, "")
				if name := routeName(""); ok {
					name = routeName(got.Route)
					if name != want {
						t.Errorf("%s %s%s: table matched route %q, one ServeMux %q", method, host, path, name, want)
					}
				} else if want != "" {
					t.Errorf("%s %s%s: table matched nothing, one ServeMux route %q", method, host, path, want)
				}
			}
		}
	}
}

// routeName is a handler that names a route, for the oracle ServeMux.
type routeName string

func (routeName) ServeHTTP(http.ResponseWriter, *http.Request) {}
