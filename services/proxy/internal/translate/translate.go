package translate

import (
	"cmp"
	"slices"

	"keyway.dev/internal/model"
)

// Origin names the stored value something was translated from.
type Origin struct {
	// Key is the bucket key, e.g. "policybinding.orders-mtls"; "" for none.
	Key string
	// Rev is the revision the value was read at.
	Rev uint64
}

// Upstream is what the Upstream of one Service is built from.
type Upstream struct {
	// Service is the stored Service; nil when there is none (the Upstream,
	// if any, goes).
	Service *model.Service
	// ServiceRev is the revision Service was read at.
	ServiceRev uint64
	// TLS is the context of the tls-outbound binding that targets the
	// Service, else the Service's DefaultTLS (an https:// Service verified
	// against the system's roots), else nil (plain HTTP). Its references to
	// the secrets service are not resolved: [OutboundSecretKeys] lists them.
	TLS *model.OutboundTLS
	// Binding is the binding TLS came from; zero when it is not a
	// binding's.
	Binding Origin
	// BindingName is the name of that binding.
	BindingName string
	// Bindings counts the tls-outbound bindings that target the Service.
	// Validation refuses more than one; should several be stored anyway,
	// the first by name is used.
	Bindings int
}

// Upstream translates what the Upstream of Service name is built from.
func (s *Store) Upstream(name string) Upstream {
	o, ok := s.objects[key(model.KindService, name)]
	if !ok || o.Obj.Service == nil {
		return Upstream{}
	}
	in := Upstream{Service: o.Obj.Service, ServiceRev: o.Rev}
	var found []*model.Binding
	for k := range s.byTarget[name] {
		b := s.objects[k].Obj.Binding
		if b != nil && b.Target.Kind == model.KindService && b.Target.Name == name && b.Policy == model.PolicyTLSOutbound && b.Outbound != nil {
			found = append(found, b)
		}
	}
	if len(found) == 0 {
		// An https:// Service that no binding targets: TLS verified
		// against the system's trusted roots.
		in.TLS = o.Obj.Service.DefaultTLS
		return in
	}
	slices.SortFunc(found, func(a, b *model.Binding) int { return cmp.Compare(a.Name, b.Name) })
	bk := key(model.KindPolicyBinding, found[0].Name)
	in.TLS = found[0].Outbound
	in.Binding = Origin{Key: bk, Rev: s.objects[bk].Rev}
	in.BindingName = found[0].Name
	in.Bindings = len(found)
	return in
}

// Routes are the stored routes, by name (the order the routing table is
// built in).
func (s *Store) Routes() []model.Route {
	var routes []model.Route
	for _, o := range s.objects {
		if o.Obj.Route != nil {
			routes = append(routes, *o.Obj.Route)
		}
	}
	slices.SortFunc(routes, func(a, b model.Route) int { return cmp.Compare(a.Name, b.Name) })
	return routes
}

// Route is the stored route name, nil when there is none.
func (s *Store) Route(name string) *model.Route {
	return s.objects[key(model.KindRoute, name)].Obj.Route
}

// Refusal is a stored value left out of what it was to be merged into.
type Refusal struct {
	Origin
	// Listener is the Listener the value was left out of.
	Listener string
	Err      error
}

// Listeners are the stored Listeners as served, by name: each with the
// hosts of the tls-inbound bindings that target it merged in. A binding that
// cannot join its Listener (a hostname or the default already taken) is
// left out and refused, the refusals sorted by key. References to the
// secrets service are not resolved.
func (s *Store) Listeners() ([]*model.Listener, []Refusal) {
	var out []*model.Listener
	var inbound []*model.Binding
	for _, o := range s.objects {
		switch {
		case o.Obj.Listener != nil:
			out = append(out, o.Obj.Listener)
		case o.Obj.Binding != nil && o.Obj.Binding.Inbound != nil:
			inbound = append(inbound, o.Obj.Binding)
		}
	}
	slices.SortFunc(out, func(a, b *model.Listener) int { return cmp.Compare(a.Name, b.Name) })
	var refused []Refusal
	for i, l := range out {
		served, errs := l.WithInbound(inbound)
		out[i] = served
		for name, err := range errs {
			k := key(model.KindPolicyBinding, name)
			refused = append(refused, Refusal{Origin: Origin{Key: k, Rev: s.objects[k].Rev}, Listener: l.Name, Err: err})
		}
	}
	slices.SortFunc(refused, func(a, b Refusal) int { return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Listener, b.Listener)) })
	return out, refused
}
