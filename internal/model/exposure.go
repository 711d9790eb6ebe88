package model

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// PlainPort names the proxy nodes' plain-HTTP port in messages.
const PlainPort = "the proxy nodes' plain-HTTP port (keyway-proxy --listen, 127.0.0.1:8080 by default)"

// NeedsIdentity reports whether the route serves only requests with a
// verified client certificate (clientCertificate: required, or allow
// rules).
func (r *Route) NeedsIdentity() bool { return r.ClientCertificate || len(r.Allow) > 0 }

// VerifiesClients reports whether the host verifies client certificates:
// it has clientCAs (or a client truststore) to verify them with. A route
// that needs a verified client certificate is refused on every other host.
func (h *ListenerHost) VerifiesClients() bool {
	return len(h.ClientCAs) > 0 || h.ClientTruststore != ""
}

// identityExposure warns where a route that needs a verified client
// certificate is reachable without one: on the plain-HTTP port (a route
// without listeners:) or on a Listener host that does not verify client
// certificates. Proxy nodes refuse such requests (401), so these are
// warnings: the configuration is safe, but the route answers 401 where its
// author may expect it to be served, or not served at all.
//
// Routes of the request are checked against every Listener as it will be
// served (stored ones and the request's, with their tls-inbound bindings);
// Listeners the request changes are checked against the stored routes too.
func (c *checker) identityExposure(entries []built, stored Catalog) {
	listeners := make(map[string]*Listener)
	listenerAt := make(map[string]fieldPath)
	for _, l := range stored.Listeners() {
		listeners[l.Name] = &l
	}
	bindings := make(map[string]*Binding)
	for _, b := range stored.Bindings() {
		if b.Policy == PolicyTLSInbound && b.Inbound != nil {
			bindings[b.Name] = &b
		}
	}
	inRequest := make(map[string]bool) // routes of the request, by name
	for _, e := range entries {
		switch o := e.obj; {
		case o.Route != nil:
			inRequest[o.Route.Name] = true
		case o.Listener != nil && o.Listener.Name != "":
			listeners[o.Listener.Name], listenerAt[o.Listener.Name] = o.Listener, e.at.Child("spec").Child("hosts")
		case o.Binding != nil && o.Binding.Name != "":
			delete(bindings, o.Binding.Name)
			if o.Binding.Policy == PolicyTLSInbound && o.Binding.Inbound != nil {
				bindings[o.Binding.Name] = o.Binding
				if _, ok := listenerAt[o.Binding.Target.Name]; !ok {
					listenerAt[o.Binding.Target.Name] = e.at.Child("spec").Child("config")
				}
			}
		}
	}
	all := slices.Collect(maps.Values(bindings))
	// open are the hosts of each Listener, as served, that do not verify
	// client certificates; verifying lists the Listeners all of whose
	// hosts do.
	open := make(map[string][]ListenerHost)
	var verifying []string
	for _, name := range slices.Sorted(maps.Keys(listeners)) {
		served, _ := listeners[name].WithInbound(all)
		for _, h := range served.Hosts {
			if !h.VerifiesClients() {
				open[name] = append(open[name], h)
			}
		}
		if len(served.Hosts) > 0 && len(open[name]) == 0 {
			verifying = append(verifying, name)
		}
	}
	addListeners := "add listeners: [<listener>] naming Listeners whose hosts verify client certificates (clientAuth: verify-if-given or require-and-verify, with clientCAs)"
	if len(verifying) > 0 {
		addListeners = fmt.Sprintf("add listeners: [%s] (Listeners all of whose hosts verify client certificates)", strings.Join(verifying, ", "))
	}

	for _, e := range entries {
		r := e.obj.Route
		if r == nil || !r.NeedsIdentity() {
			continue
		}
		at := e.at.Child("spec")
		if len(r.Listeners) == 0 {
			c.warnf(at, "route %q needs a verified client certificate and names no listeners, so it is also served on %s, where no certificate is asked for: requests for it there get 401 client_certificate_required. To serve it only over mutual TLS, %s", r.Name, PlainPort, addListeners)
			for _, name := range slices.Sorted(maps.Keys(open)) {
				c.warnf(at, "%s; or %s", openHostMessage(r.Name, listeners[name], open[name]), addListeners)
			}
			continue
		}
		for i, name := range r.Listeners {
			if hosts := open[name]; len(hosts) > 0 {
				c.warnf(at.Child("listeners").Index(i), "%s; or list in listeners: only Listeners whose hosts verify client certificates", openHostMessage(r.Name, listeners[name], hosts))
			}
		}
	}

	// Listeners the request changes, against the stored routes it keeps.
	var storedRoutes []Route
	for _, r := range stored.Routes() {
		if !inRequest[r.Name] && r.NeedsIdentity() {
			storedRoutes = append(storedRoutes, r)
		}
	}
	slices.SortFunc(storedRoutes, func(a, b Route) int { return strings.Compare(a.Name, b.Name) })
	for _, name := range slices.Sorted(maps.Keys(listenerAt)) {
		hosts := open[name]
		if len(hosts) == 0 || listeners[name] == nil {
			continue
		}
		var names []string
		for _, r := range storedRoutes {
			if len(r.Listeners) == 0 || slices.Contains(r.Listeners, name) {
				names = append(names, fmt.Sprintf("%q", r.Name))
			}
		}
		if len(names) == 0 {
			continue
		}
		if len(names) > 5 {
			names = append(names[:5], fmt.Sprintf("and %d more", len(names)-5))
		}
		c.warnf(listenerAt[name], "Listener %q at %s serves routes that need a verified client certificate (%s), and its host %s does not verify client certificates (clientAuth: %s): requests for those routes there get 401. Set the host's clientAuth to verify-if-given or require-and-verify with clientCAs, or give those routes listeners: naming only Listeners whose hosts verify",
			name, listeners[name].Address, strings.Join(names, ", "), hostLabel(hosts[0]), ClientAuthName(hosts[0].ClientAuth))
	}
}

// openHostMessage says that route is served on Listener l, whose hosts do
// not verify client certificates.
func openHostMessage(route string, l *Listener, hosts []ListenerHost) string {
	labels := make([]string, len(hosts))
	for i, h := range hosts {
		labels[i] = fmt.Sprintf("%s (clientAuth: %s)", hostLabel(h), ClientAuthName(h.ClientAuth))
	}
	return fmt.Sprintf("route %q needs a verified client certificate and is served on Listener %q at %s, whose host %s does not verify client certificates: requests for it there get 401. Set that host's clientAuth to verify-if-given or require-and-verify with clientCAs",
		route, l.Name, l.Address, strings.Join(labels, " and "))
}

// hostLabel names a Listener host by its hostnames.
func hostLabel(h ListenerHost) string {
	if len(h.Hostnames) == 0 {
		return "for clients without SNI"
	}
	return strings.Join(h.Hostnames, ", ")
}
