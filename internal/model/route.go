package model

import (
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// httpMethods are the methods a route may list (RFC 9110 and PATCH).
var httpMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
}

// route builds a Route from its spec; at is the path of the spec. It also
// reports whether the route's patterns can be registered, for conflict checks.
func (c *checker) route(at fieldPath, name string, spec *policyv1.RouteSpec) (*Route, bool) {
	before := c.errorCount()
	r := &Route{Name: name, Path: spec.GetPath(), Host: spec.GetHost(), Service: spec.GetService()}

	for i, m := range spec.GetMethods() {
		p := at.Child("methods").Index(i)
		up := strings.ToUpper(strings.TrimSpace(m))
		switch {
		case !slices.Contains(httpMethods, up):
			c.errorf(p, "%q is not an HTTP method; use one of %s", m, strings.Join(httpMethods, ", "))
		case slices.Contains(r.Methods, up):
			c.errorf(p, "method %s is listed twice; remove one", up)
		default:
			r.Methods = append(r.Methods, up)
		}
	}

	if h := r.Host; h != "" {
		switch {
		case strings.Contains(h, ":"):
			c.errorf(at.Child("host"), "host %q has a port; routes match the host name only: write %q", h, strings.ToLower(strings.Split(h, ":")[0]))
		case !isDNSName(h) && !isIP(h):
			c.errorf(at.Child("host"), "host %q is not a DNS name (letters, digits, hyphens and dots; no wildcards); give the exact host name clients send, or leave host out to match any", h)
		case strings.ToLower(h) != h:
			c.errorf(at.Child("host"), "host %q has uppercase letters; write it in lowercase: %q", h, strings.ToLower(h))
		}
	}

	switch p := r.Path; {
	case p == "":
		c.errorf(at.Child("path"), "path is required; give a path template such as \"/orders/{id}\", or \"/\" for every path")
	case !strings.HasPrefix(p, "/"):
		c.errorf(at.Child("path"), "path %q does not start with \"/\"; write %q", p, "/"+p)
	default:
		if clean := cleanPath(p); clean != p {
			c.errorf(at.Child("path"), "path %q is not in canonical form (no \"//\", \".\" or \"..\" segments); write %q", p, clean)
		} else if !literalPath(p) {
			if err := registerPattern(http.NewServeMux(), p); err != nil {
				c.errorf(at.Child("path"), "path %q is not a valid route template: %s; use literal segments, \"{name}\" for one segment, \"{name...}\" as the last segment, or a trailing \"/\" for a prefix", p, err)
			}
		}
	}

	if r.Service == "" {
		c.errorf(at.Child("service"), "service is required: name the Service this route forwards to")
	}
	// Identity rules do not change the route's patterns: a mistake in them
	// should not hide a path conflict.
	patternsOK := c.errorCount() == before
	c.clientIdentity(at, r, spec)
	for i, l := range spec.GetListeners() {
		p := at.Child("listeners").Index(i)
		switch {
		case l == "":
			c.errorf(p, "listeners[%d] is empty; name a Listener, or leave listeners out to serve every Listener and the plain-HTTP port", i)
		case len(nameProblems(l)) > 0:
			c.errorf(p, "%q is not a Listener name: %s", l, nameRule)
		case slices.Contains(r.Listeners, l):
			c.errorf(p, "Listener %q is listed twice; remove one", l)
		default:
			r.Listeners = append(r.Listeners, l)
		}
	}
	return r, patternsOK
}

// literalPath reports whether p, which starts with "/", has no wildcard and
// no space or tab (which ServeMux reads as the end of a method): ServeMux
// accepts every such pattern (all its segments are literal), so that
// registering it on a ServeMux of its own, a tenth of a route's checks,
// tells nothing. TestLiteralPathsRegister holds it to that.
func literalPath(p string) bool { return !strings.ContainsAny(p, "{} \t") }

// cleanPath is path.Clean keeping a trailing slash, which in a pattern means
// "this prefix".
func cleanPath(p string) string {
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean
}

// patterns are the http.ServeMux patterns of a route, one per method.
func (r *Route) patterns() []string {
	if len(r.Methods) == 0 {
		return []string{r.Host + r.Path}
	}
	out := make([]string, len(r.Methods))
	for i, m := range r.Methods {
		out[i] = m + " " + r.Host + r.Path
	}
	return out
}

// registerPattern registers a pattern on mux and turns its panic (invalid or
// conflicting pattern) into an error. The proxy routes with http.ServeMux, so
// whatever it accepts here it accepts there.
func registerPattern(mux *http.ServeMux, pattern string) (err error) {
	defer func() {
		if v := recover(); v != nil {
			msg := fmt.Sprint(v)
			// "parsing \"/a/{x\": at offset 3: bad wildcard segment" → keep the reason.
			if _, after, ok := strings.Cut(msg, "\": "); ok && strings.HasPrefix(msg, "parsing ") {
				msg = after
			}
			err = fmt.Errorf("%s", msg)
		}
	}()
	mux.Handle(pattern, http.NotFoundHandler())
	return nil
}

// ownedPattern is a registered pattern and the route it belongs to.
type ownedPattern struct {
	pattern string
	route   string
	stored  bool
}

// routeConflicts registers every request route and every stored route not
// replaced by the request on one mux, and reports each request route that
// conflicts with one registered before it.
func (c *checker) routeConflicts(entries []built, stored Catalog) {
	replaced := make(map[string]bool)
	for _, e := range entries {
		if e.obj.Route != nil {
			replaced[e.obj.Route.Name] = true
		}
	}
	mux := http.NewServeMux()
	var registered []ownedPattern
	for _, r := range stored.Routes() {
		if replaced[r.Name] {
			continue
		}
		for _, p := range r.patterns() {
			// Stored routes were checked when applied; one that no longer
			// registers cannot conflict with anything either.
			if registerPattern(mux, p) == nil {
				registered = append(registered, ownedPattern{p, r.Name, true})
			}
		}
	}
	for _, e := range entries {
		r := e.obj.Route
		if r == nil || !e.patternsOK {
			continue
		}
		for _, p := range r.patterns() {
			if err := registerPattern(mux, p); err != nil {
				c.errorf(e.at.Child("spec").Child("path"), "%s", conflictMessage(r.Name, p, registered))
				break
			}
			registered = append(registered, ownedPattern{p, r.Name, false})
		}
	}
}

// conflictMessage finds which registered pattern conflicts with p (the mux
// only says that one does) by registering them in pairs.
func conflictMessage(route, p string, registered []ownedPattern) string {
	for _, other := range registered {
		mux := http.NewServeMux()
		if registerPattern(mux, other.pattern) != nil || registerPattern(mux, p) == nil {
			continue
		}
		where := "in this request"
		if other.stored {
			where = "already stored"
		}
		if other.pattern == p {
			return fmt.Sprintf("route %q pattern %q is the same as route %q (%s); two routes cannot match the same requests: change the path, methods or host of one, or delete the other", route, p, other.route, where)
		}
		return fmt.Sprintf("route %q pattern %q conflicts with %q of route %q (%s): both match some requests and neither is more specific; change the path, methods or host of one", route, p, other.pattern, other.route, where)
	}
	return fmt.Sprintf("route %q pattern %q conflicts with another route; change its path, methods or host", route, p)
}
