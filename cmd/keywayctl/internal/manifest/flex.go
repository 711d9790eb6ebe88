package manifest

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"keyway.dev/internal/model"

	"keyway.dev/keywayctl/internal/resource"
)

// MuleSoft Flex Gateway's Local Mode resources (apiVersion
// gateway.mulesoft.com/v1alpha1) are read here and become Keyway's:
//
//	ApiInstance https://host:port  → Listener (its TLS from the tls policy)
//	ApiInstance http://host:port   → no Listener: each proxy node's plain-HTTP port
//	ApiInstance spec.services.K    → Service <instance>-K, as Flex names it
//	ApiInstance routes and rules   → Routes <instance>-0, -1, …
//	ApiInstance spec.policies      → PolicyBindings <instance>-<policy>
//	Service                        → Service (https:// keeps its scheme: TLS by default)
//	PolicyBinding tls-outbound     → PolicyBinding, as written
//	PolicyBinding tls              → PolicyBinding on the Listener of the ApiInstance
//	PolicyBinding route            → Routes <binding>-0, -1, …
//
// Each Flex document gets a note saying what it became. What Keyway cannot
// do as Flex would (path rewriting, header rules, other policies,
// namespaces that disambiguate) is an error at the field, with the fix.

// Flex kinds and policies.
const (
	flexAPIInstance   = "ApiInstance"
	flexService       = "Service"
	flexPolicyBinding = "PolicyBinding"
	flexConfiguration = "Configuration"

	flexPolicyRoute = "route"
)

var flexKinds = []string{flexAPIInstance, flexService, flexPolicyBinding}

// flexInstance is what the cross-document pass needs to know of an
// ApiInstance.
type flexInstance struct {
	name  string
	https bool
	// services maps the keys of spec.services to the Service names made.
	services map[string]string
	at       Position
}

// flexTarget is a binding, or Routes made from one, that names an
// ApiInstance: the cross-document pass checks it against the instance.
type flexTarget struct {
	policy   string // model.FlexPolicyTLS or flexPolicyRoute
	instance string
	at       *yaml.Node
	// routes are the Documents of a route binding, whose listeners depend
	// on the instance's scheme.
	routes []*Document
}

// flexDoc reads one Flex document; kindNode is its kind as written. The
// notes of the conversion go to the first resource made.
func (p *parser) flexDoc(n, kindNode *yaml.Node) {
	before := len(p.docs)
	p.pending = nil
	defer func() {
		if len(p.docs) > before {
			p.docs[before].Notes = append(p.docs[before].Notes, p.pending...)
		}
		p.pending = nil
	}()
	switch kindNode.Value {
	case flexService:
		p.flexService(n)
	case flexPolicyBinding:
		p.flexBinding(n)
	case flexAPIInstance:
		p.flexAPIInstance(n)
	case flexConfiguration:
		p.errorf(kindNode, "Flex Gateway's Configuration (logging, shared storage) has no Keyway resource: Keyway's logs, tracing and metrics are set by flags of its processes (docs/reference/flags.md); remove this document")
	default:
		if k, ok := resource.ByName(kindNode.Value); ok {
			p.errorf(deref(lookup(n, "apiVersion")), "unknown apiVersion %q for kind %s; want %s (Flex Gateway's apiVersion takes %s)", resource.FlexAPIVersion, k.Name, resource.APIVersion, strings.Join(flexKinds, ", "))
			return
		}
		msg := fmt.Sprintf("unknown kind %q for apiVersion %s; want %s", kindNode.Value, resource.FlexAPIVersion, strings.Join(flexKinds, ", "))
		if s := model.DidYouMean(kindNode.Value, flexKinds); s != "" {
			msg = fmt.Sprintf("unknown kind %q; did you mean %q?", kindNode.Value, s)
		}
		p.errorf(kindNode, "%s", msg)
	}
}

// flexMeta reads metadata: its name, and the rest to carry over (labels;
// for a Service or PolicyBinding, which are stored as such, also revision
// and updateTime, as keywayctl get prints them). A namespace is dropped with
// a note: Keyway names are global.
func (p *parser) flexMeta(n *yaml.Node, kind string) (name, extra *yaml.Node, ok bool) {
	if !p.onlyKeys(n, "", kind, "apiVersion", "kind", "metadata", "spec") {
		return nil, nil, false
	}
	meta := lookup(n, "metadata")
	if meta == nil {
		p.errorf(n, "%s: missing metadata.name", kind)
		return nil, nil, false
	}
	meta = deref(meta)
	known := []string{"name", "namespace", "labels"}
	if kind != flexAPIInstance {
		known = append(known, "revision", "updateTime")
	}
	if !p.onlyKeys(meta, "metadata", "metadata", known...) {
		return nil, nil, false
	}
	name = scalar(lookup(meta, "name"))
	if name == nil || name.Value == "" {
		p.errorf(meta, "%s: missing metadata.name", kind)
		return nil, nil, false
	}
	if ns := scalar(lookup(meta, "namespace")); ns != nil && ns.Value != "" {
		p.note(ns, "%s %s: metadata.namespace %q is dropped: Keyway has no namespaces, so names are unique across all of them", kind, name.Value, ns.Value)
	}
	extra = mapping(meta)
	for i := 0; i+1 < len(meta.Content); i += 2 {
		if k := meta.Content[i].Value; k != "name" && k != "namespace" {
			extra.Content = append(extra.Content, meta.Content[i], meta.Content[i+1])
		}
	}
	return name, extra, true
}

// labelsOnly is the part of extra metadata that resources made from an
// ApiInstance carry: its labels.
func labelsOnly(extra *yaml.Node) *yaml.Node {
	out := mapping(extra)
	for i := 0; i+1 < len(extra.Content); i += 2 {
		if extra.Content[i].Value == "labels" {
			out.Content = append(out.Content, extra.Content[i], extra.Content[i+1])
		}
	}
	return out
}

// flexURL reads a Flex address: http:// or https://, a host and a port (80
// or 443 when not given); the caller decides about u.Path.
func (p *parser) flexURL(n *yaml.Node, field string) (u *url.URL, hostPort string, ok bool) {
	if n == nil || n.Value == "" {
		return nil, "", false
	}
	u, err := url.Parse(n.Value)
	if err != nil || u.Host == "" {
		p.errorf(n, "%s: %q is not a URL; Flex Gateway writes addresses as http://host:port or https://host:port", field, n.Value)
		return nil, "", false
	}
	port := ""
	switch u.Scheme {
	case "https":
		port = "443"
	case "http":
		port = "80"
	default:
		p.errorf(n, "%s: scheme %q is not supported; want http or https", field, u.Scheme)
		return nil, "", false
	}
	if u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		p.errorf(n, "%s: %q has a query, fragment or user; write %s://host:port", field, n.Value, u.Scheme)
		return nil, "", false
	}
	if u.Port() != "" {
		port = u.Port()
	}
	return u, net.JoinHostPort(u.Hostname(), port), true
}

// flexService turns Flex's Service into a Keyway Service. Its https://
// keeps meaning TLS: the model reaches such a Service over TLS verified
// against the system's trusted roots until a tls-outbound binding targets it.
func (p *parser) flexService(n *yaml.Node) {
	name, extra, ok := p.flexMeta(n, flexService)
	if !ok {
		return
	}
	spec := deref(orNull(lookup(n, "spec")))
	if spec.Kind != yaml.MappingNode || !p.onlyKeys(spec, "spec", "Service spec", "address") {
		if spec.Kind != yaml.MappingNode {
			p.errorf(spec, "Service %q (%s): missing spec.address, a URL such as https://orders.internal:9443", name.Value, resource.FlexAPIVersion)
		}
		return
	}
	addr := scalar(lookup(spec, "address"))
	if addr == nil || addr.Value == "" {
		p.errorf(spec, "Service %q (%s): missing spec.address, a URL such as https://orders.internal:9443", name.Value, resource.FlexAPIVersion)
		return
	}
	u, hostPort, ok := p.flexURL(addr, "spec.address")
	if !ok {
		return
	}
	if u.Path != "" && u.Path != "/" {
		p.errorf(addr, "spec.address: %q has a path; a Service is %s://host:port (Flex Gateway takes no path here either): remove %q", addr.Value, u.Scheme, u.Path)
		return
	}
	address := u.Scheme + "://" + hostPort
	doc := p.synth(model.KindService, n, name, extra, mapping(spec, "address", str(addr, address)))
	if doc == nil {
		return
	}
	doc.Notes = append(doc.Notes, Note{Pos: p.pos(addr), Msg: fmt.Sprintf("Flex Service %s → Service %s at %s: %s", name.Value, name.Value, address, serviceTLS(u.Scheme))})
}

// serviceTLS says how a Service with this scheme is reached.
func serviceTLS(scheme string) string {
	if scheme == "https" {
		return "TLS verified against the system's trusted roots, as Flex does, until a tls-outbound PolicyBinding targets it"
	}
	return "plain HTTP, unless a tls-outbound PolicyBinding targets it"
}

// flexBinding reads Flex's PolicyBinding: tls-outbound passes through as
// written; tls moves from an ApiInstance to its Listener; route becomes
// Routes; other policies have no Keyway equivalent.
func (p *parser) flexBinding(n *yaml.Node) {
	name, extra, ok := p.flexMeta(n, flexPolicyBinding)
	if !ok {
		return
	}
	spec := deref(orNull(lookup(n, "spec")))
	if spec.Kind != yaml.MappingNode {
		p.errorf(spec, "PolicyBinding %s: missing spec (targetRef, policyRef, config)", name.Value)
		return
	}
	if !p.onlyKeys(spec, "spec", "PolicyBinding spec", "targetRef", "policyRef", "config", "rules") {
		return
	}
	policy, ok := p.flexPolicyRef(lookup(spec, "policyRef"), "spec.policyRef", spec)
	if !ok {
		return
	}
	target := deref(orNull(lookup(spec, "targetRef")))
	if target.Kind != yaml.MappingNode {
		p.errorf(spec, "spec.targetRef is required: name the %s the policy binds to", bindsTo(policy.Value))
		return
	}
	if !p.onlyKeys(target, "spec.targetRef", "targetRef", "kind", "name", "namespace", "selector") {
		return
	}
	kind, tname := scalar(lookup(target, "kind")), scalar(lookup(target, "name"))
	if sel := lookup(target, "selector"); kind != nil && kind.Value == "Selector" || sel != nil {
		at := kind
		if at == nil || at.Value != "Selector" {
			at = deref(sel)
		}
		p.errorf(at, "spec.targetRef: a Selector binds the policy to every ApiInstance, now and later; Keyway binds a policy to one resource at a time: bind it to each ApiInstance by name (targetRef: {kind: ApiInstance, name: NAME}), one binding each")
		return
	}
	if tname == nil || tname.Value == "" {
		p.errorf(target, "spec.targetRef.name is required: name the %s the policy binds to", bindsTo(policy.Value))
		return
	}
	if ns := scalar(lookup(target, "namespace")); ns != nil && ns.Value != "" {
		p.note(ns, "PolicyBinding %s: spec.targetRef.namespace %q is dropped: Keyway has no namespaces", name.Value, ns.Value)
	}
	config, rules := lookup(spec, "config"), lookup(spec, "rules")

	switch policy.Value {
	case model.PolicyTLSOutbound:
		if kind != nil && kind.Value != model.KindService {
			p.errorf(kind, "spec.targetRef.kind %q: tls-outbound binds to the upstream Service (kind: Service), as Flex Gateway's outbound TLS does", kind.Value)
			return
		}
		if !p.noRules(rules, policy.Value) {
			return
		}
		doc := p.passBinding(n, target, nil)
		if doc == nil {
			return
		}
		doc.Notes = append(doc.Notes, Note{Pos: p.pos(n), Msg: fmt.Sprintf("Flex PolicyBinding %s (tls-outbound) → PolicyBinding %s on Service %s, as written", name.Value, name.Value, tname.Value)})
	case model.FlexPolicyTLS, model.PolicyTLSInbound:
		if kind != nil && kind.Value != flexAPIInstance && kind.Value != model.KindListener {
			p.errorf(kind, "spec.targetRef.kind %q: the %s policy binds to an ApiInstance (Flex) or a Listener (Keyway)", kind.Value, policy.Value)
			return
		}
		if !p.noRules(rules, policy.Value) {
			return
		}
		doc := p.passBinding(n, target, tname)
		if doc == nil {
			return
		}
		doc.flex = &flexTarget{policy: model.FlexPolicyTLS, instance: tname.Value, at: tname}
		doc.Notes = append(doc.Notes, Note{Pos: p.pos(n), Msg: fmt.Sprintf("Flex PolicyBinding %s (%s) → PolicyBinding %s on Listener %s, the port of the https ApiInstance %s", name.Value, policy.Value, name.Value, tname.Value, tname.Value)})
	case flexPolicyRoute:
		if kind != nil && kind.Value != flexAPIInstance {
			p.errorf(kind, "spec.targetRef.kind %q: the route policy binds to an ApiInstance", kind.Value)
			return
		}
		dest := p.flexDestination(config, spec)
		if dest == nil {
			return
		}
		routes := p.flexRoutes(name.Value, name, labelsOnly(extra), dest.Value, orNull(rules), "spec.rules", true, nil, nil)
		if len(routes) == 0 {
			return
		}
		routes[0].flex = &flexTarget{policy: flexPolicyRoute, instance: tname.Value, at: tname, routes: routes}
		routes[0].Notes = append(routes[0].Notes, Note{Pos: p.pos(n), Msg: fmt.Sprintf("Flex PolicyBinding %s (route) → %s to Service %s", name.Value, routeList(routes), dest.Value)})
	default:
		p.unsupportedPolicy(policy)
	}
}

// passBinding decodes a Flex tls-outbound or tls binding as written, less
// its namespaces (noted by flexMeta and flexBinding); with listener set
// (the targetRef's name), its target becomes the Listener of that
// ApiInstance. The nodes stay the user's, so every position does.
func (p *parser) passBinding(n, target, listener *yaml.Node) *Document {
	dropKey(deref(lookup(n, "metadata")), "namespace")
	dropKey(target, "namespace")
	if ref := lookupPath(n, "spec", "policyRef"); ref != nil {
		dropKey(deref(ref), "namespace")
	}
	if listener != nil {
		if k := scalar(lookup(target, "kind")); k != nil {
			k.Value = model.KindListener
		} else {
			target.Content = append(target.Content, str(listener, "kind"), str(listener, model.KindListener))
		}
	}
	k, _ := resource.ByName(model.KindPolicyBinding)
	before := len(p.docs)
	doc := &Document{Pos: p.pos(n), fields: map[string]Position{}}
	p.decode(doc, k, n)
	if len(p.docs) == before {
		return nil
	}
	return doc
}

// dropKey removes a key and its value from a mapping.
func dropKey(m *yaml.Node, key string) {
	if m == nil || m.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

// bindsTo names what a policy's targetRef names, for messages.
func bindsTo(policy string) string {
	if policy == model.PolicyTLSOutbound {
		return "Service"
	}
	return "ApiInstance"
}

// flexPolicyRef reads policyRef {name, namespace}; at is where to report a
// missing one.
func (p *parser) flexPolicyRef(ref *yaml.Node, path string, at *yaml.Node) (*yaml.Node, bool) {
	ref = deref(orNull(ref))
	if ref.Kind != yaml.MappingNode {
		p.errorf(at, "%s.name is required: the policy to bind (tls-outbound, tls or route)", path)
		return nil, false
	}
	if !p.onlyKeys(ref, path, "policyRef", "name", "namespace") {
		return nil, false
	}
	if ns := scalar(lookup(ref, "namespace")); ns != nil && ns.Value != "" && ns.Value != "default" {
		p.errorf(ns, "%s.namespace %q: Flex Gateway's included policies are in namespace default; Keyway knows only those (tls-outbound, tls, route)", path, ns.Value)
		return nil, false
	}
	name := scalar(lookup(ref, "name"))
	if name == nil || name.Value == "" {
		p.errorf(ref, "%s.name is required: the policy to bind (tls-outbound, tls or route)", path)
		return nil, false
	}
	return name, true
}

func (p *parser) unsupportedPolicy(policy *yaml.Node) {
	p.errorf(policy, "policy %q has no Keyway equivalent: Keyway takes Flex Gateway's tls-outbound, tls and route policies; it does not authenticate, rate-limit or transform requests. Remove this policy (and do it in the upstream or in front of Keyway) before applying", policy.Value)
}

// noRules refuses request rules on a TLS policy: TLS applies to the whole
// connection.
func (p *parser) noRules(rules *yaml.Node, policy string) bool {
	if rules == nil || isNull(deref(rules)) {
		return true
	}
	p.errorf(rules, "rules: the %s policy applies to every connection, not to some requests; Keyway has no per-request TLS: remove rules", policy)
	return false
}

// flexDestination reads a route policy's config.destinationRef.name.
func (p *parser) flexDestination(config, at *yaml.Node) *yaml.Node {
	config = deref(orNull(config))
	if config.Kind != yaml.MappingNode {
		p.errorf(at, "config.destinationRef.name is required: the Service the route sends requests to")
		return nil
	}
	if !p.onlyKeys(config, "config", "route config", "destinationRef") {
		return nil
	}
	ref := deref(orNull(lookup(config, "destinationRef")))
	if ref.Kind != yaml.MappingNode {
		p.errorf(config, "config.destinationRef.name is required: the Service the route sends requests to")
		return nil
	}
	if !p.onlyKeys(ref, "config.destinationRef", "destinationRef", "name", "namespace", "kind") {
		return nil
	}
	if k := scalar(lookup(ref, "kind")); k != nil && k.Value != model.KindService {
		p.errorf(k, "config.destinationRef.kind %q: a route sends requests to a Service", k.Value)
		return nil
	}
	name := scalar(lookup(ref, "name"))
	if name == nil || name.Value == "" {
		p.errorf(ref, "config.destinationRef.name is required: the Service the route sends requests to")
		return nil
	}
	if ns := scalar(lookup(ref, "namespace")); ns != nil && ns.Value != "" {
		p.note(ns, "config.destinationRef.namespace %q is dropped: Keyway has no namespaces", ns.Value)
	}
	return name
}

// flexAPIInstance turns an ApiInstance into a Listener (https), Services,
// Routes and PolicyBindings.
func (p *parser) flexAPIInstance(n *yaml.Node) {
	name, extra, ok := p.flexMeta(n, flexAPIInstance)
	if !ok {
		return
	}
	labels := labelsOnly(extra)
	spec := deref(orNull(lookup(n, "spec")))
	if spec.Kind != yaml.MappingNode {
		p.errorf(n, "ApiInstance %s: missing spec.address, the URL the API is served at, such as http://0.0.0.0:8081", name.Value)
		return
	}
	if !p.onlyKeys(spec, "spec", "ApiInstance spec", "address", "services", "policies") {
		return
	}
	addr := scalar(lookup(spec, "address"))
	if addr == nil || addr.Value == "" {
		p.errorf(spec, "ApiInstance %s: missing spec.address, the URL the API is served at, such as http://0.0.0.0:8081", name.Value)
		return
	}
	u, hostPort, ok := p.flexURL(addr, "spec.address")
	if !ok {
		return
	}
	if u.Path != "" && u.Path != "/" {
		p.errorf(addr, "spec.address: base path %q: Flex Gateway serves the instance under it; Keyway routes forward the request path unchanged and strip nothing: remove the base path and write the full paths in the route rules (for example path: %s/.*), with the upstream serving them", u.Path, strings.TrimSuffix(u.Path, "/"))
		return
	}
	https := u.Scheme == "https"
	inst := &flexInstance{name: name.Value, https: https, services: map[string]string{}, at: p.pos(n)}
	var made []string
	var first *Document
	add := func(d *Document, what string) {
		if d == nil {
			return
		}
		if first == nil {
			first = d
		}
		made = append(made, what)
	}
	var listeners []*yaml.Node
	if https {
		d := p.synth(model.KindListener, n, name, labels, mapping(addr, "address", str(addr, hostPort)))
		add(d, "Listener "+name.Value+" on "+hostPort)
		listeners = []*yaml.Node{str(addr, name.Value)}
	}

	nerrs := len(p.errs)
	var routes []*Document
	if svcs := lookup(spec, "services"); svcs != nil && !isNull(deref(svcs)) {
		svcs = deref(svcs)
		if svcs.Kind != yaml.MappingNode {
			p.errorf(svcs, "spec.services: want a mapping of service names to {address, routes}, got %s", describe(svcs))
			return
		}
		for i := 0; i+1 < len(svcs.Content); i += 2 {
			key, val := deref(svcs.Content[i]), deref(svcs.Content[i+1])
			path := "spec.services." + key.Value
			svcName := name.Value + "-" + key.Value
			if !p.generatedName(key, svcName, "the Service of "+path) {
				continue
			}
			if val.Kind != yaml.MappingNode {
				p.errorf(val, "%s: want {address, routes}, got %s", path, describe(val))
				continue
			}
			if !p.onlyKeys(val, path, "service", "address", "routes") {
				continue
			}
			saddr := scalar(lookup(val, "address"))
			if saddr == nil || saddr.Value == "" {
				p.errorf(val, "%s.address is required: the upstream's URL, such as https://orders.internal:443", path)
				continue
			}
			su, shostPort, ok := p.flexURL(saddr, path+".address")
			if !ok {
				continue
			}
			if su.Path != "" && su.Path != "/" {
				p.errorf(saddr, "%s.address: %q has a path; Flex Gateway takes protocol://host:port here: remove %q (a destinationPath is not supported either: Keyway forwards the request path unchanged)", path, saddr.Value, su.Path)
				continue
			}
			inst.services[key.Value] = svcName
			saddress := su.Scheme + "://" + shostPort
			sd := p.synth(model.KindService, val, str(key, svcName), labels, mapping(saddr, "address", str(saddr, saddress)))
			add(sd, fmt.Sprintf("Service %s at %s (%s)", svcName, saddress, serviceTLS(su.Scheme)))
			rs := p.flexRoutes(name.Value, key, labels, svcName, orNull(lookup(val, "routes")), path+".routes", false, listeners, &routes)
			for _, r := range rs {
				add(r, "")
			}
		}
	}

	if pols := lookup(spec, "policies"); pols != nil && !isNull(deref(pols)) {
		pols = deref(pols)
		if pols.Kind != yaml.SequenceNode {
			p.errorf(pols, "spec.policies: want a list of {policyRef, config}, got %s", describe(pols))
			return
		}
		seen := map[string]int{}
		for i, pol := range pols.Content {
			pol = deref(pol)
			path := "spec.policies[" + strconv.Itoa(i) + "]"
			if pol.Kind != yaml.MappingNode || !p.onlyKeys(pol, path, "policy", "policyRef", "config", "rules") {
				if pol.Kind != yaml.MappingNode {
					p.errorf(pol, "%s: want {policyRef, config}, got %s", path, describe(pol))
				}
				continue
			}
			policy, ok := p.flexPolicyRef(lookup(pol, "policyRef"), path+".policyRef", pol)
			if !ok {
				continue
			}
			config, rules := lookup(pol, "config"), lookup(pol, "rules")
			switch policy.Value {
			case model.FlexPolicyTLS, model.PolicyTLSInbound:
				if !https {
					p.errorf(policy, "%s: the tls policy serves HTTPS, and spec.address %q is http://: write https://%s", path, addr.Value, hostPort)
					continue
				}
				if !p.noRules(rules, policy.Value) {
					continue
				}
				bname := name.Value + "-tls"
				if seen[bname]++; seen[bname] > 1 {
					bname += "-" + strconv.Itoa(seen[bname])
				}
				if !p.generatedName(policy, bname, "the PolicyBinding of "+path) {
					continue
				}
				d := p.synthBinding(pol, str(policy, bname), labels, model.KindListener, str(policy, name.Value), policy, config)
				add(d, "PolicyBinding "+bname+" ("+policy.Value+") on it")
			case model.PolicyTLSOutbound:
				p.errorf(policy, "%s: tls-outbound binds to an upstream Service, not to an ApiInstance: write a PolicyBinding with targetRef: {kind: Service, name: %s-<service>} (the Services of spec.services are named so)", path, name.Value)
			case flexPolicyRoute:
				dest := p.flexDestination(config, pol)
				if dest == nil {
					continue
				}
				for _, r := range p.flexRoutes(name.Value, policy, labels, dest.Value, orNull(rules), path+".rules", true, listeners, &routes) {
					add(r, "")
				}
			default:
				p.unsupportedPolicy(policy)
			}
		}
	}
	if len(p.errs) > nerrs || first == nil {
		if first == nil && len(p.errs) == nerrs {
			p.errorf(spec, "ApiInstance %s: nothing to serve; give spec.services (a map of upstreams with their routes)", name.Value)
		}
		return
	}
	first.instance = inst
	if len(routes) > 0 {
		made = append(made, routeList(routes))
	}
	var parts []string
	for _, m := range made {
		if m != "" {
			parts = append(parts, m)
		}
	}
	msg := fmt.Sprintf("Flex ApiInstance %s → %s", name.Value, strings.Join(parts, ", "))
	host, port, _ := net.SplitHostPort(hostPort)
	switch {
	case !https:
		msg += fmt.Sprintf(". Its address %s is plain HTTP, which Keyway serves on each proxy node's plain-HTTP port (keyway-proxy --listen, 127.0.0.1:8080 by default), not per resource: %s is not opened, and the routes also serve every Listener. To serve it where Flex did, start keyway-proxy with --listen %s",
			addr.Value, hostPort, hostPort)
		if unspecified(host) {
			msg += fmt.Sprintf(" (all interfaces; --listen 127.0.0.1:%s keeps it on this host)", port)
		}
	case unspecified(host):
		msg += fmt.Sprintf(". The Listener binds %s on every proxy node, which is every interface, as Flex's address says; write https://127.0.0.1:%s to keep it on the host", hostPort, port)
	}
	if https {
		msg += fmt.Sprintf(". Its certificate comes from the tls policy (in spec.policies, or a PolicyBinding targeting %s); until one is applied, nodes do not serve it", name.Value)
	}
	first.Notes = append(first.Notes, Note{Pos: p.pos(n), Msg: msg})
}

// unspecified reports whether host is the all-interfaces address.
func unspecified(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

// routeList names Routes for a note: "Route a-0 (GET /x)", ….
func routeList(routes []*Document) string {
	var parts []string
	for _, d := range routes {
		r := d.Resource.GetRoute()
		what := r.GetSpec().GetPath()
		if ms := r.GetSpec().GetMethods(); len(ms) > 0 {
			what = strings.Join(ms, ",") + " " + what
		}
		if h := r.GetSpec().GetHost(); h != "" {
			what += " on host " + h
		}
		parts = append(parts, fmt.Sprintf("Route %s (%s)", r.GetMetadata().GetName(), what))
	}
	return strings.Join(parts, ", ")
}

// flexRoutes makes the Routes to service svc: one per rule of each route of
// list (a list of {rules, config}), or with rulesOnly one per rule of list
// (a list of rules, as a route policy has them). named is the
// node the Routes' names point at; prefix names them prefix-0, prefix-1, …
// continuing the count of *all (nil: start at 0).
func (p *parser) flexRoutes(prefix string, named, labels *yaml.Node, svc string, list *yaml.Node, path string, rulesOnly bool, listeners []*yaml.Node, all *[]*Document) []*Document {
	list = deref(list)
	type rule struct {
		node *yaml.Node
		path string
	}
	var rules []rule
	switch {
	case isNull(list):
		rules = append(rules, rule{node: nil, path: path})
	case list.Kind != yaml.SequenceNode:
		p.errorf(list, "%s: want a list, got %s", path, describe(list))
		return nil
	case rulesOnly:
		if len(list.Content) == 0 {
			rules = append(rules, rule{node: nil, path: path})
		}
		for i, r := range list.Content {
			rules = append(rules, rule{node: deref(r), path: path + "[" + strconv.Itoa(i) + "]"})
		}
	default:
		if len(list.Content) == 0 {
			rules = append(rules, rule{node: nil, path: path})
		}
		for i, rt := range list.Content {
			rt = deref(rt)
			rp := path + "[" + strconv.Itoa(i) + "]"
			if rt.Kind != yaml.MappingNode {
				p.errorf(rt, "%s: want {rules, config}, got %s", rp, describe(rt))
				continue
			}
			if !p.onlyKeys(rt, rp, "route", "rules", "config") {
				continue
			}
			if cfg := lookup(rt, "config"); cfg != nil && !isNull(deref(cfg)) {
				cfg = deref(cfg)
				if cfg.Kind != yaml.MappingNode || !p.onlyKeys(cfg, rp+".config", "route config", "destinationPath") {
					if cfg.Kind != yaml.MappingNode {
						p.errorf(cfg, "%s.config: want {destinationPath}, got %s", rp, describe(cfg))
					}
					continue
				}
				if dp := scalar(lookup(cfg, "destinationPath")); dp != nil && dp.Value != "" && dp.Value != "/" {
					p.errorf(dp, "%s.config.destinationPath %q: Flex Gateway prepends it to the path it forwards; Keyway routes forward the request path unchanged and rewrite nothing: remove it, and have clients call the full path (%s/…) or the upstream serve the shorter one", rp, dp.Value, strings.TrimSuffix(dp.Value, "/"))
					continue
				}
			}
			rs := deref(orNull(lookup(rt, "rules")))
			switch {
			case isNull(rs) || rs.Kind == yaml.SequenceNode && len(rs.Content) == 0:
				rules = append(rules, rule{node: nil, path: rp})
			case rs.Kind != yaml.SequenceNode:
				p.errorf(rs, "%s.rules: want a list of {path, methods, host}, got %s", rp, describe(rs))
			default:
				for j, r := range rs.Content {
					rules = append(rules, rule{node: deref(r), path: rp + ".rules[" + strconv.Itoa(j) + "]"})
				}
			}
		}
	}

	var out []*Document
	for _, r := range rules {
		spec, ok := p.flexRule(r.node, r.path, named)
		if !ok {
			continue
		}
		spec.Content = append(spec.Content, str(named, "service"), str(named, svc))
		if len(listeners) > 0 {
			spec.Content = append(spec.Content, str(named, "listeners"), seq(named, listeners...))
		}
		n := 0
		if all != nil {
			n = len(*all)
		}
		rname := prefix + "-" + strconv.Itoa(n+len(out))
		if !p.generatedName(named, rname, "the Route of "+r.path) {
			continue
		}
		at := named
		if r.node != nil {
			at = r.node
		}
		d := p.synth(model.KindRoute, at, str(named, rname), labels, spec)
		if d == nil {
			continue
		}
		out = append(out, d)
	}
	if all != nil {
		*all = append(*all, out...)
	}
	return out
}

// flexRule turns one Flex rule {path, methods, host, headers} (nil: every
// request) into a Route spec without its service.
func (p *parser) flexRule(r *yaml.Node, path string, at *yaml.Node) (*yaml.Node, bool) {
	if r == nil {
		return mapping(at, "path", str(at, "/")), true
	}
	if r.Kind != yaml.MappingNode {
		p.errorf(r, "%s: want {path, methods, host}, got %s", path, describe(r))
		return nil, false
	}
	if !p.onlyKeys(r, path, "rule", "path", "methods", "host", "headers") {
		return nil, false
	}
	if h := lookup(r, "headers"); h != nil && !isNull(deref(h)) {
		p.errorf(h, "%s.headers: Keyway routes match path, method and host, not headers: remove headers (and check the header in the upstream)", path)
		return nil, false
	}
	spec := mapping(r)
	ok := true
	if pn := scalar(lookup(r, "path")); pn != nil {
		tmpl, msg := flexPathTemplate(pn.Value)
		if msg != "" {
			p.errorf(pn, "%s.path %q: %s", path, pn.Value, msg)
			ok = false
		} else {
			spec.Content = append(spec.Content, str(pn, "path"), str(pn, tmpl))
		}
	} else {
		spec.Content = append(spec.Content, str(r, "path"), str(r, "/"))
	}
	if mn := scalar(lookup(r, "methods")); mn != nil {
		methods, msg := flexMethods(mn.Value)
		if msg != "" {
			p.errorf(mn, "%s.methods %q: %s", path, mn.Value, msg)
			ok = false
		} else if len(methods) > 0 {
			items := make([]*yaml.Node, len(methods))
			for i, m := range methods {
				items[i] = str(mn, m)
			}
			spec.Content = append(spec.Content, str(mn, "methods"), seq(mn, items...))
		}
	}
	if hn := scalar(lookup(r, "host")); hn != nil {
		host, msg := flexHost(hn.Value)
		if msg != "" {
			p.errorf(hn, "%s.host %q: %s", path, hn.Value, msg)
			ok = false
		} else if host != "" {
			spec.Content = append(spec.Content, str(hn, "host"), str(hn, host))
		}
	}
	return spec, ok
}

// trimAnchors drops a regular expression's ^ and $: Flex matches rules
// against the whole value.
func trimAnchors(re string) string {
	return strings.TrimSuffix(strings.TrimPrefix(re, "^"), "$")
}

// flexPathTemplate turns a Flex path rule (a regular expression matched
// against the whole path) into a Keyway path template that matches the same
// paths, or says why it cannot:
//
//	.*            → /            (every path)
//	/orders       → /orders      (exactly)
//	/orders/      → /orders/{$}  (exactly)
//	/orders/.*    → /orders/     (the prefix)
//	/orders/[^/]+ → /orders/{p1} (one segment)
//
// Capture groups rewrite the forwarded path in Flex, which Keyway does not.
func flexPathTemplate(re string) (tmpl, problem string) {
	re = trimAnchors(re)
	if re == "" || re == ".*" || re == "/.*" {
		return "/", ""
	}
	if strings.ContainsAny(re, "()") {
		return "", "a capture group makes Flex Gateway forward only what it captures (path rewriting); Keyway forwards the request path unchanged: write the rule without groups (for example /api/users/.* instead of /api(/users/.*)) and have the upstream serve the full path"
	}
	if !strings.HasPrefix(re, "/") {
		return "", "a path rule Keyway can follow starts with /"
	}
	var b strings.Builder
	seg := 0
	for i := 0; i < len(re); i++ {
		c := re[i]
		rest := re[i:]
		switch {
		case rest == ".*" && strings.HasSuffix(b.String(), "/"):
			return b.String(), ""
		case strings.HasPrefix(rest, "[^/]+"):
			seg++
			b.WriteString("{p" + strconv.Itoa(seg) + "}")
			i += len("[^/]+") - 1
		case c == '\\' && i+1 < len(re) && strings.IndexByte(`./-_~`, re[i+1]) >= 0:
			b.WriteByte(re[i+1])
			i++
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("/-_~%", c) >= 0:
			b.WriteByte(c)
		case c == '.' && (i+1 == len(re) || strings.IndexByte("*+?{", re[i+1]) < 0):
			// An unescaped dot matches any character in Flex; here it
			// matches only a dot: narrower, never wider.
			b.WriteByte(c)
		default:
			if rest == ".*" {
				return "", fmt.Sprintf("matches any path that starts with %q, even without a / after it, which a Keyway route cannot say: write %s/.* for the paths under it, or %s for exactly it", b.String(), b.String(), b.String())
			}
			return "", fmt.Sprintf("%q at offset %d is regular-expression syntax a Keyway route cannot express; Keyway takes literal paths, a trailing /.* (a prefix) and [^/]+ (one segment)", string(c), i)
		}
	}
	t := b.String()
	if strings.HasSuffix(t, "/") && t != "/" {
		t += "{$}" // exactly this path; a bare trailing / is a prefix here
	}
	return t, ""
}

// flexMethods reads a methods rule: ".*", "GET" or "GET|POST" (in
// parentheses or not).
func flexMethods(re string) ([]string, string) {
	re = trimAnchors(re)
	if re == "" || re == ".*" {
		return nil, ""
	}
	re = strings.TrimSuffix(strings.TrimPrefix(re, "("), ")")
	var out []string
	for m := range strings.SplitSeq(re, "|") {
		m = strings.TrimSpace(m)
		if m == "" || strings.IndexFunc(m, func(r rune) bool { return (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') }) >= 0 {
			return nil, "Keyway takes methods as a list: write the rule as GET, or GET|POST, or leave it out for every method"
		}
		out = append(out, strings.ToUpper(m))
	}
	return out, ""
}

// flexHost reads a host rule: ".*" (any) or one host name, its dots
// escaped or not.
func flexHost(re string) (string, string) {
	re = trimAnchors(re)
	if re == "" || re == ".*" {
		return "", ""
	}
	h := strings.ToLower(strings.ReplaceAll(re, `\.`, "."))
	if h == "" || strings.Trim(h, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" {
		return "", "Keyway routes match one exact host name: write it (api.example.com), or leave host out for any"
	}
	return h, ""
}

// generatedName checks a name Keyway makes from the user's names: a
// resource name is at most 64 characters.
func (p *parser) generatedName(at *yaml.Node, name, what string) bool {
	if len(name) <= 64 {
		return true
	}
	p.errorf(at, "%s would be named %q, %d characters; Keyway names are at most 64: shorten the names it is made of", what, name, len(name))
	return false
}

// synth decodes a Keyway resource made from Flex nodes: every node of it
// points at what the user wrote, so errors and Locate land there.
func (p *parser) synth(kind string, at, name, extra, spec *yaml.Node) *Document {
	return p.synthAs(resource.APIVersion, kind, at, name, extra, spec)
}

func (p *parser) synthAs(apiVersion, kind string, at, name, extra, spec *yaml.Node) *Document {
	meta := mapping(name, "name", name)
	if extra != nil {
		meta.Content = append(meta.Content, extra.Content...)
	}
	n := mapping(at, "apiVersion", str(at, apiVersion), "kind", str(at, kind), "metadata", meta, "spec", spec)
	k, _ := resource.ByName(kind)
	before := len(p.docs)
	doc := &Document{Pos: p.pos(at), fields: map[string]Position{}}
	p.decode(doc, k, n)
	if len(p.docs) == before {
		return nil
	}
	return doc
}

// synthBinding decodes a PolicyBinding made from Flex nodes. It keeps Flex
// Gateway's apiVersion, which the policy service takes for bindings.
func (p *parser) synthBinding(at, name, extra *yaml.Node, targetKind string, target, policy, config *yaml.Node) *Document {
	spec := mapping(at,
		"targetRef", mapping(target, "kind", str(target, targetKind), "name", target),
		"policyRef", mapping(policy, "name", policy))
	if config != nil {
		spec.Content = append(spec.Content, str(config, "config"), config)
	}
	return p.synthAs(resource.FlexAPIVersion, model.KindPolicyBinding, at, name, extra, spec)
}

// note adds a note to the Flex document being read; flexDoc gives it to the
// first resource made from it.
func (p *parser) note(at *yaml.Node, format string, args ...any) {
	p.pending = append(p.pending, Note{Pos: p.pos(at), Msg: fmt.Sprintf(format, args...)})
}

// onlyKeys reports the keys of the mapping n that are not known; what names
// n in messages ("ApiInstance spec"). It reports whether there were none.
func (p *parser) onlyKeys(n *yaml.Node, path, what string, known ...string) bool {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s: want a mapping, got %s", pathOr(path, what), describe(n))
		return false
	}
	ok := true
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := deref(n.Content[i])
		if seen[key.Value] {
			p.errorf(key, "%s: duplicate key", join(path, key.Value))
			ok = false
			continue
		}
		seen[key.Value] = true
		found := false
		for _, k := range known {
			found = found || k == key.Value
		}
		if found {
			continue
		}
		hint := ""
		if s := model.DidYouMean(key.Value, known); s != "" {
			hint = fmt.Sprintf("; did you mean %q?", s)
		}
		p.errorf(key, "%s: unknown field%s (Flex %s has %s); Keyway refuses what it would not do", join(path, key.Value), hint, what, strings.Join(known, ", "))
		ok = false
	}
	return ok
}

// scalar is n followed through aliases when it is a scalar, else nil.
func scalar(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	n = deref(n)
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return nil
	}
	return n
}

// orNull is n, or a null node when n is nil.
func orNull(n *yaml.Node) *yaml.Node {
	if n == nil {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	return n
}

// str is a string scalar placed where at was written.
func str(at *yaml.Node, v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Line: at.Line, Column: at.Column}
}

// mapping is a mapping placed where at was written, of key, value pairs
// (string, *yaml.Node).
func mapping(at *yaml.Node, kv ...any) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: at.Line, Column: at.Column}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Content = append(m.Content, str(at, kv[i].(string)), kv[i+1].(*yaml.Node))
	}
	return m
}

// seq is a sequence placed where at was written.
func seq(at *yaml.Node, items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: at.Line, Column: at.Column, Content: items}
}

// lookupPath follows keys through nested mappings; nil when one is missing.
func lookupPath(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		if n = lookup(n, k); n == nil {
			return nil
		}
	}
	return n
}

// linkFlex checks what spans documents once every file is read: a tls
// binding's ApiInstance must be https, a route binding's must be in the same
// apply (its scheme decides the Routes' Listener), and a tls-outbound binding
// naming the key of an inline service is told the name Keyway gave it.
func linkFlex(m Manifest) []error {
	instances := map[string]*flexInstance{}
	inline := map[string][]string{} // service key → names made from it
	services := map[string]bool{}
	var errs []error
	for _, d := range m {
		if in := d.instance; in != nil {
			if prev, dup := instances[in.name]; dup {
				errs = append(errs, &Error{Pos: in.at, Msg: fmt.Sprintf("ApiInstance %s is also at %s; Keyway names are global (no namespaces): rename one", in.name, prev.at)})
				continue
			}
			instances[in.name] = in
			for k, name := range in.services {
				inline[k] = append(inline[k], name)
			}
		}
		if s := d.Resource.GetService(); s != nil {
			services[s.GetMetadata().GetName()] = true
		}
	}
	for _, d := range m {
		if t := d.flex; t != nil {
			in, ok := instances[t.instance]
			switch {
			case t.policy == model.FlexPolicyTLS && ok && !in.https:
				errs = append(errs, &Error{Pos: Position{File: d.Pos.File, Line: t.at.Line, Column: t.at.Column},
					Msg: fmt.Sprintf("spec.targetRef.name: ApiInstance %s (%s) is http://, and the tls policy serves HTTPS: make its spec.address https://", t.instance, in.at)})
			case t.policy == flexPolicyRoute && !ok:
				errs = append(errs, &Error{Pos: Position{File: d.Pos.File, Line: t.at.Line, Column: t.at.Column},
					Msg: fmt.Sprintf("spec.targetRef.name: ApiInstance %s is not in this apply; its address decides where the routes are served: apply both together (keywayctl apply -f with both files, or -f their directory)", t.instance)})
			case t.policy == flexPolicyRoute && in.https:
				for _, r := range t.routes {
					spec := r.Resource.GetRoute().GetSpec()
					spec.Listeners = append(spec.Listeners, t.instance)
				}
			}
		}
		b := d.Resource.GetPolicyBinding()
		if b == nil || b.GetSpec().GetPolicyRef().GetName() != model.PolicyTLSOutbound {
			continue
		}
		// A note, not an error: a stored Service may have that name.
		target := b.GetSpec().GetTargetRef().GetName()
		if names := inline[target]; !services[target] && len(names) > 0 {
			d.Notes = append(d.Notes, Note{Pos: d.Locate("spec.targetRef.name"), Msg: fmt.Sprintf("spec.targetRef.name: no Service %q in this apply; the service %q of an ApiInstance's spec.services is named %s, as Flex Gateway names it: if you meant it, target that", target, target, strings.Join(names, " or "))})
		}
	}
	return errs
}
