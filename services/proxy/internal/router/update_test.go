package router_test

import (
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"testing"

	"keyway.dev/internal/model"
	"keyway.dev/proxy/internal/router"
)

// A route whose first segment is a wildcard is in every shard, also in
// shards made after it: there it leads to its own index (its Upstream),
// not another route's.
func TestGlobalRouteKeepsItsIndexInLaterShards(t *testing.T) {
	t.Parallel()
	table, errs := router.Build([]model.Route{
		{Name: "a-orders", Path: "/orders/", Service: "orders"},
		{Name: "b-root", Path: "/", Service: "root"},
		{Name: "c-zeta", Path: "/zeta/exact", Service: "zeta"},
	})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	got, ok := table.Match(httptest.NewRequest("GET", "/zeta/other", nil), "")
	if !ok || got.Route != "b-root" {
		t.Fatalf("GET /zeta/other → %+v, want b-root", got)
	}
	if svc := table.ServiceAt(got.Index()); svc != "root" {
		t.Fatalf("b-root's target in the zeta shard has index %d, whose Service is %q, want root", got.Index(), svc)
	}
}

// Update gives what Build gives for the same routes, change after change:
// the same route for every request, and indexes that lead to each route's
// Service; the changes of literal-segment routes that conflict with
// nothing take the incremental path.
func TestUpdateMatchesBuild(t *testing.T) {
	t.Parallel()
	routes := map[string]model.Route{}
	for i := range 40 {
		name := fmt.Sprintf("svc-%02d", i)
		routes[name] = model.Route{Name: name, Path: "/" + name + "/", Service: name}
	}
	routes["api-get"] = model.Route{Name: "api-get", Path: "/api/{id}/detail", Methods: []string{"GET"}, Service: "api"}
	routes["api-host"] = model.Route{Name: "api-host", Path: "/api/", Host: "api.example", Service: "api-host"}
	routes["root"] = model.Route{Name: "root", Path: "/", Service: "root"}
	routes["tenant"] = model.Route{Name: "tenant", Path: "/{tenant}/billing", Host: "billing.example", Service: "billing"}
	routes["internal"] = model.Route{Name: "internal", Path: "/admin/", Service: "admin", Listeners: []string{"internal"}}
	list := func() []model.Route { return slices.Collect(maps.Values(routes)) }
	table, errs := router.Build(list())
	if len(errs) != 0 {
		t.Fatal(errs)
	}

	steps := []struct {
		name        string
		changes     map[string]*model.Route
		incremental bool
	}{
		{"same value again", map[string]*model.Route{"svc-03": {Name: "svc-03", Path: "/svc-03/", Service: "svc-03"}}, true},
		{"path moves to another segment", map[string]*model.Route{"svc-03": {Name: "svc-03", Path: "/moved/{rest...}", Service: "svc-03"}}, true},
		{"service changes", map[string]*model.Route{"svc-04": {Name: "svc-04", Path: "/svc-04/", Service: "svc-05"}}, true},
		{"route deleted", map[string]*model.Route{"svc-06": nil}, true},
		{"route added", map[string]*model.Route{"new": {Name: "new", Path: "/new/x", Methods: []string{"POST"}, Service: "new"}}, true},
		{"two at once, one joining a shard", map[string]*model.Route{
			"svc-07": {Name: "svc-07", Path: "/api/{id}/items", Service: "items"},
			"svc-08": nil,
		}, true},
		{"route of a named Listener", map[string]*model.Route{"internal": {Name: "internal", Path: "/admin/{x}", Service: "admin2", Listeners: []string{"internal"}}}, true},
		{"conflict", map[string]*model.Route{"svc-09": {Name: "svc-09", Path: "/api/{other}/detail", Methods: []string{"GET"}, Service: "dup"}}, false},
		{"conflict resolved", map[string]*model.Route{"svc-09": nil}, false}, // the table it changes left a route out
		{"wildcard first segment", map[string]*model.Route{"tenant": {Name: "tenant", Path: "/{tenant}/invoices", Host: "billing.example", Service: "billing"}}, false},
		{"a new Listener", map[string]*model.Route{"svc-10": {Name: "svc-10", Path: "/svc-10/", Service: "svc-10", Listeners: []string{"partners"}}}, false},
		{"deleted again", map[string]*model.Route{"svc-11": nil, "svc-12": nil}, true},
	}
	requests := []string{"/", "/svc-03/x", "/moved/a/b", "/svc-04/", "/svc-05/", "/svc-06/", "/new/x", "/api/7/detail", "/api/7/items",
		"/svc-07/", "/svc-08/y", "/admin/a", "/admin/", "/acme/billing", "/acme/invoices", "/svc-10/", "/svc-11/", "/nothing"}
	for _, step := range steps {
		for name, r := range step.changes {
			if r == nil {
				delete(routes, name)
			} else {
				routes[name] = *r
			}
		}
		next, ok := table.Update(step.changes)
		if ok != step.incremental {
			t.Errorf("%s: incremental %v, want %v", step.name, ok, step.incremental)
		}
		if !ok {
			next, _ = router.Build(list())
		}
		want, _ := router.Build(list())
		for _, listener := range []string{"", "internal", "partners"} {
			for _, path := range requests {
				for _, method := range []string{"GET", "POST"} {
					host := "gw.example"
					if method == "POST" {
						host = "billing.example"
					}
					req := httptest.NewRequest(method, "http://"+host+path, nil)
					got, gotOK := next.Match(req, listener)
					exp, expOK := want.Match(req, listener)
					if gotOK != expOK || gotOK && (got.Route != exp.Route || got.Service != exp.Service) {
						t.Fatalf("%s: listener %q %s %s → %+v, Build's table → %+v", step.name, listener, method, path, got, exp)
					}
					if gotOK && next.ServiceAt(got.Index()) != got.Service {
						t.Fatalf("%s: %s %s → route %q of Service %q at index %d, whose Service is %q", step.name, method, path, got.Route, got.Service, got.Index(), next.ServiceAt(got.Index()))
					}
					if gotOK && !slices.Contains(next.RoutesTo(got.Service), got.Index()) {
						t.Fatalf("%s: RoutesTo(%q) = %v lacks index %d", step.name, got.Service, next.RoutesTo(got.Service), got.Index())
					}
				}
			}
		}
		if got, exp := next.Routes(), want.Routes(); !slices.EqualFunc(got, exp, func(a, b model.Route) bool { return a.Name == b.Name }) {
			t.Fatalf("%s: %d routes, Build's table %d", step.name, len(got), len(exp))
		}
		if step.incremental {
			if _, ok := next.ChangedSince(table); !ok {
				t.Errorf("%s: the updated table does not say what changed since the one it was made from", step.name)
			}
		}
		table = next
	}
}
