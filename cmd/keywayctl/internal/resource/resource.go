// Package resource knows the three kinds of keyway.policy.v1.Resource: their
// names as users type them, and how to reach the oneof member of a Resource
// without a type switch at every call site.
package resource

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// API versions a manifest may declare. The policy service accepts Flex
// Gateway's for PolicyBinding, as written.
const (
	APIVersion     = "keyway.dev/v1alpha1"
	FlexAPIVersion = "gateway.mulesoft.com/v1alpha1"
)

// Kind is one kind of resource.
type Kind struct {
	// Name is the kind as written in manifests and sent in requests:
	// "Service", "Route" or "PolicyBinding".
	Name string
	// Member is the JSON name of the kind's member of the Resource oneof:
	// "service", "route" or "policyBinding".
	Member string
	// protoMember is the member's proto name: "policy_binding".
	protoMember string
	// Aliases are what a user may type on the command line, lowercase; the
	// first is the canonical one, used in "kind/name" output.
	Aliases []string
	// new returns an empty member message.
	new func() proto.Message
	// wrap puts a member message into a Resource.
	wrap func(proto.Message) *policyv1.Resource
}

// Kinds are all kinds, in the order output lists them.
var Kinds = []Kind{
	{
		Name: "Service", Member: "service", protoMember: "service",
		Aliases: []string{"service", "services", "svc"},
		new:     func() proto.Message { return new(policyv1.Service) },
		wrap: func(m proto.Message) *policyv1.Resource {
			return &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: m.(*policyv1.Service)}}
		},
	},
	{
		Name: "Route", Member: "route", protoMember: "route",
		Aliases: []string{"route", "routes", "rt"},
		new:     func() proto.Message { return new(policyv1.Route) },
		wrap: func(m proto.Message) *policyv1.Resource {
			return &policyv1.Resource{Kind: &policyv1.Resource_Route{Route: m.(*policyv1.Route)}}
		},
	},
	{
		Name: "PolicyBinding", Member: "policyBinding", protoMember: "policy_binding",
		Aliases: []string{"policybinding", "policybindings", "binding", "bindings", "pb"},
		new:     func() proto.Message { return new(policyv1.PolicyBinding) },
		wrap: func(m proto.Message) *policyv1.Resource {
			return &policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: m.(*policyv1.PolicyBinding)}}
		},
	},
	{
		Name: "Listener", Member: "listener", protoMember: "listener",
		Aliases: []string{"listener", "listeners", "lis"},
		new:     func() proto.Message { return new(policyv1.Listener) },
		wrap: func(m proto.Message) *policyv1.Resource {
			return &policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: m.(*policyv1.Listener)}}
		},
	},
}

// Short is the canonical lowercase name, as in "policybinding/orders-mtls".
func (k Kind) Short() string { return k.Aliases[0] }

// New returns an empty member message of this kind.
func (k Kind) New() proto.Message { return k.new() }

// Descriptor describes the member message of this kind.
func (k Kind) Descriptor() protoreflect.MessageDescriptor { return k.new().ProtoReflect().Descriptor() }

// Wrap puts a member message of this kind into a Resource. It panics when m
// is of another kind.
func (k Kind) Wrap(m proto.Message) *policyv1.Resource { return k.wrap(m) }

// ByName returns the kind named exactly name ("Service"), as in a manifest.
func ByName(name string) (Kind, bool) {
	for _, k := range Kinds {
		if k.Name == name {
			return k, true
		}
	}
	return Kind{}, false
}

// ByMember returns the kind whose Resource member has this JSON or proto
// name ("policyBinding" or "policy_binding").
func ByMember(member string) (Kind, bool) {
	for _, k := range Kinds {
		if k.Member == member || k.protoMember == member {
			return k, true
		}
	}
	return Kind{}, false
}

// Parse returns the kind a user typed on the command line: any alias or the
// kind's name, case-insensitive.
func Parse(s string) (Kind, error) {
	l := strings.ToLower(s)
	for _, k := range Kinds {
		if slices.Contains(k.Aliases, l) {
			return k, nil
		}
	}
	return Kind{}, fmt.Errorf("unknown kind %q; want service (svc), route (rt), policybinding (binding, pb), listener (lis) or all", s)
}

// Of returns the kind of a resource; ok is false when no member is set.
func Of(r *policyv1.Resource) (k Kind, ok bool) {
	switch r.GetKind().(type) {
	case *policyv1.Resource_Service:
		return Kinds[0], true
	case *policyv1.Resource_Route:
		return Kinds[1], true
	case *policyv1.Resource_PolicyBinding:
		return Kinds[2], true
	case *policyv1.Resource_Listener:
		return Kinds[3], true
	}
	return Kind{}, false
}

// Member returns the set member of a resource, or nil.
func Member(r *policyv1.Resource) proto.Message {
	switch m := r.GetKind().(type) {
	case *policyv1.Resource_Service:
		return m.Service
	case *policyv1.Resource_Route:
		return m.Route
	case *policyv1.Resource_PolicyBinding:
		return m.PolicyBinding
	case *policyv1.Resource_Listener:
		return m.Listener
	}
	return nil
}

// Metadata returns the metadata of a resource, or nil.
func Metadata(r *policyv1.Resource) *policyv1.ObjectMeta {
	switch m := r.GetKind().(type) {
	case *policyv1.Resource_Service:
		return m.Service.GetMetadata()
	case *policyv1.Resource_Route:
		return m.Route.GetMetadata()
	case *policyv1.Resource_PolicyBinding:
		return m.PolicyBinding.GetMetadata()
	case *policyv1.Resource_Listener:
		return m.Listener.GetMetadata()
	}
	return nil
}

// Ref is "kind/name" as output prints it, e.g. "policybinding/orders-mtls".
func Ref(r *policyv1.Resource) string {
	k, ok := Of(r)
	if !ok {
		return "unknown/" + Metadata(r).GetName()
	}
	return k.Short() + "/" + Metadata(r).GetName()
}
