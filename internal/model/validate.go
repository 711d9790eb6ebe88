package model

import (
	"context"
	"errors"
	"fmt"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/limits"
	"keyway.dev/internal/secretref"
)

// Validate checks the resources of one Apply request together (a binding may
// target a Service in the same request) against the stored configuration, and
// returns the validated objects (same order) and a Report with all problems at
// once. Nothing is partial: callers store nothing unless report.OK(). When the
// report has errors, the objects are a best effort and must not be used.
//
// A nil stored Catalog is an empty configuration (nothing stored yet).
// References to the secrets service are refused: see [ValidateContext].
func Validate(resources []*policyv1.Resource, stored Catalog, now time.Time) ([]Object, Report) {
	return ValidateContext(context.Background(), resources, Env{Catalog: stored, Now: now})
}

// Env is what validation consults beyond the request itself.
type Env struct {
	// Catalog is the stored configuration; nil is an empty one.
	Catalog Catalog
	// Secrets answers for references to keystores, aliases and
	// truststores; with nil, every reference is refused with an error that
	// says no secrets service is configured.
	Secrets secretref.Secrets
	// Now is the time certificates must be valid at.
	Now time.Time
}

// ValidateContext is [Validate] with references to the secrets service
// checked through env.Secrets (each keystore/alias and truststore asked
// once per request); ctx bounds those calls.
func ValidateContext(ctx context.Context, resources []*policyv1.Resource, env Env) ([]Object, Report) {
	stored := env.Catalog
	if stored == nil {
		stored = emptyCatalog{}
	}
	c := &checker{now: env.Now}
	objs := make([]Object, len(resources))
	entries := make([]built, len(resources))
	for i, res := range resources {
		entries[i] = c.resource(fieldPath(fmt.Sprintf("resources[%d]", i)), res)
		objs[i] = entries[i].obj
	}
	c.crossCheck(entries, stored)
	c.checkRefs(ctx, env.Secrets)
	return objs, c.report
}

// DecodeOption changes what [Decode] accepts. Production code passes none.
type DecodeOption func(*checker)

// AllowPortZero lets a Listener address have port 0, which the kernel
// replaces with a free port at bind time. It is for tests of the proxy node
// on a shared machine, where a fixed port may be taken: the policy service
// refuses port 0 (every node of a fleet must bind the same, known port), so
// such a resource is never stored outside a test.
func AllowPortZero() DecodeOption {
	return func(c *checker) { c.portZero = true }
}

// Decode turns one stored resource into its model for a proxy node. Same
// parsing as Validate, but time-dependent rules (expired/not-yet-valid
// certificates) and references to other resources are not errors (time passes
// after apply; a node may see keys in any order). Returns an error only if the
// resource cannot be built at all, that is if it breaks any other rule.
func Decode(res *policyv1.Resource, opts ...DecodeOption) (Object, error) {
	c := &checker{decode: true}
	for _, o := range opts {
		o(c)
	}
	b := c.resource("", res)
	if !c.report.OK() {
		errs := make([]error, len(c.report.Errors))
		for i, v := range c.report.Errors {
			errs[i] = fmt.Errorf("%s: %s", v.Field, v.Message)
		}
		return Object{}, fmt.Errorf("model: decoding %s: %w", b.obj.Ref(), errors.Join(errs...))
	}
	return b.obj, nil
}

// checker collects the violations found while building objects. One checker
// validates one request (or decodes one resource) and is then discarded.
type checker struct {
	now time.Time
	// decode is set for Decode: time-dependent rules and references to other
	// resources are skipped.
	decode bool
	// portZero lets a Listener address have port 0 ([AllowPortZero]).
	portZero bool
	report   Report
	// refs are the references to the secrets service met while building,
	// checked once the request is built.
	refs []refCheck
	// outboundCache, when set ([WithOutboundCache]), shares equal
	// tls-outbound contexts between decodes.
	outboundCache *OutboundCache
}

func (c *checker) errorf(at fieldPath, format string, args ...any) {
	c.report.Errors = append(c.report.Errors, Violation{Field: string(at), Message: fmt.Sprintf(format, limits.QuoteArgs(format, args)...)})
}

func (c *checker) warnf(at fieldPath, format string, args ...any) {
	c.report.Warnings = append(c.report.Warnings, Violation{Field: string(at), Message: fmt.Sprintf(format, limits.QuoteArgs(format, args)...)})
}

// errorCount lets a step tell whether it added errors, to avoid reporting
// consequences of a problem already reported.
func (c *checker) errorCount() int { return len(c.report.Errors) }

// fieldPath is a JSON (camelCase) path into the request, e.g.
// "resources[0].policyBinding.spec.config.ciphers[2]".
type fieldPath string

// Child is the path of a member.
func (p fieldPath) Child(name string) fieldPath {
	if p == "" {
		return fieldPath(name)
	}
	return p + "." + fieldPath(name)
}

// Index is the path of a list element.
func (p fieldPath) Index(i int) fieldPath {
	return fieldPath(fmt.Sprintf("%s[%d]", p, i))
}

// built is one resource as the checker saw it: the object, where it is in the
// request, and what the cross-resource checks need to know.
type built struct {
	obj Object
	at  fieldPath // e.g. "resources[2].route"
	// nameOK is set when metadata.name is valid, so that duplicates and
	// references are checked only on names worth comparing.
	nameOK bool
	// patternsOK is set for routes whose path, methods and host are valid,
	// so that conflicts are looked for only among registrable patterns.
	patternsOK bool
}

// resource builds one resource of any kind.
func (c *checker) resource(at fieldPath, res *policyv1.Resource) built {
	switch k := res.GetKind().(type) {
	case *policyv1.Resource_Service:
		at = at.Child("service")
		r := k.Service
		if !c.bounds(at, r.ProtoReflect()) {
			return built{at: at}
		}
		name, ok := c.header(at, r.GetApiVersion(), r.GetKind(), KindService, "service", r.GetMetadata())
		return built{obj: Object{Service: c.service(at.Child("spec"), name, r.GetSpec())}, at: at, nameOK: ok}
	case *policyv1.Resource_Route:
		at = at.Child("route")
		r := k.Route
		if !c.bounds(at, r.ProtoReflect()) {
			return built{at: at}
		}
		name, ok := c.header(at, r.GetApiVersion(), r.GetKind(), KindRoute, "route", r.GetMetadata())
		route, patternsOK := c.route(at.Child("spec"), name, r.GetSpec())
		return built{obj: Object{Route: route}, at: at, nameOK: ok, patternsOK: patternsOK}
	case *policyv1.Resource_PolicyBinding:
		at = at.Child("policyBinding")
		r := k.PolicyBinding
		if !c.bounds(at, r.ProtoReflect()) {
			return built{at: at}
		}
		name, ok := c.header(at, r.GetApiVersion(), r.GetKind(), KindPolicyBinding, "policyBinding", r.GetMetadata(), FlexAPIVersion)
		return built{obj: Object{Binding: c.binding(at.Child("spec"), name, r.GetSpec())}, at: at, nameOK: ok}
	case *policyv1.Resource_Listener:
		at = at.Child("listener")
		r := k.Listener
		if !c.bounds(at, r.ProtoReflect()) {
			return built{at: at}
		}
		name, ok := c.header(at, r.GetApiVersion(), r.GetKind(), KindListener, "listener", r.GetMetadata())
		return built{obj: Object{Listener: c.listener(at.Child("spec"), name, r.GetSpec())}, at: at, nameOK: ok}
	}
	c.errorf(at, "the resource is empty; set exactly one of service, route, policyBinding or listener")
	return built{at: at}
}

// header checks apiVersion, kind and metadata.name, common to every kind, and
// returns the name and whether it is valid.
func (c *checker) header(at fieldPath, apiVersion, kind, wantKind, member string, meta *policyv1.ObjectMeta, moreVersions ...string) (string, bool) {
	c.apiVersion(at.Child("apiVersion"), apiVersion, moreVersions)
	// An empty kind is filled from the member the resource is under.
	if kind != "" && kind != wantKind {
		c.errorf(at.Child("kind"), "kind %q does not match the resource, which is under %q; set kind: %s or leave it out", kind, member, wantKind)
	}
	name := meta.GetName()
	return name, c.name(at.Child("metadata").Child("name"), wantKind, name)
}

func (c *checker) apiVersion(at fieldPath, got string, more []string) {
	// An empty apiVersion means the current one: buf curl users write JSON
	// by hand and the member name already says the kind.
	if got == "" || got == APIVersion {
		return
	}
	allowed := fmt.Sprintf("%q", APIVersion)
	for _, v := range more {
		if got == v {
			return
		}
		allowed += fmt.Sprintf(" or %q", v)
	}
	c.errorf(at, "apiVersion %q is not supported; set apiVersion: %s", got, allowed)
}

// emptyCatalog is the configuration before anything is stored.
type emptyCatalog struct{}

func (emptyCatalog) Exists(Ref) bool       { return false }
func (emptyCatalog) Routes() []Route       { return nil }
func (emptyCatalog) Bindings() []Binding   { return nil }
func (emptyCatalog) Listeners() []Listener { return nil }

// crossCheck applies the rules that involve more than one resource: names are
// unique per kind in a request, references resolve within the request or the
// stored configuration, routes do not conflict, a Service has at most one
// binding per policy, and an address has at most one Listener; routes that
// need a client certificate are warned about where none is verified.
func (c *checker) crossCheck(entries []built, stored Catalog) {
	inRequest := make(map[Ref]int)
	for i, e := range entries {
		ref := e.obj.Ref()
		if ref.Name == "" {
			continue
		}
		if j, dup := inRequest[ref]; dup {
			c.errorf(e.at.Child("metadata").Child("name"), "%s %q is also at resources[%d]; a request holds each kind and name once: merge the two or rename one", ref.Kind, ref.Name, j)
			continue
		}
		inRequest[ref] = i
	}
	exists := func(ref Ref) bool {
		_, ok := inRequest[ref]
		return ok || stored.Exists(ref)
	}

	for _, e := range entries {
		switch {
		case e.obj.Route != nil:
			if s := e.obj.Route.Service; s != "" && !exists(Ref{KindService, s}) {
				c.errorf(e.at.Child("spec").Child("service"), "Service %q does not exist; apply it first or in the same request", s)
			}
			for _, l := range e.obj.Route.Listeners {
				if !exists(Ref{KindListener, l}) {
					c.errorf(e.at.Child("spec").Child("listeners"), "Listener %q does not exist; apply it first or in the same request, or remove it from listeners", l)
				}
			}
		case e.obj.Binding != nil:
			if t := e.obj.Binding.Target; t.Name != "" && (t.Kind == KindService || t.Kind == KindListener) && !exists(t) {
				c.errorf(e.at.Child("spec").Child("targetRef").Child("name"), "%s %q does not exist; apply it first or in the same request", t.Kind, t.Name)
			}
		}
	}
	c.routeConflicts(entries, stored)
	c.bindingsPerService(entries, stored)
	c.listenerAddresses(entries, stored)
	c.inboundHosts(entries, stored)
	c.identityExposure(entries, stored)
}
