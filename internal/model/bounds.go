package model

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/limits"
)

// fieldBytes is the maximum length of each string field of a resource, by
// its JSON name, in the resource's members and in a binding's config alike
// (docs/reference/limits.md). A field not listed has [limits.ConfigStringBytes].
var fieldBytes = map[string]int{
	"name":             limits.NameBytes,
	"service":          limits.NameBytes,
	"listeners":        limits.NameBytes,
	"keystore":         limits.SecretNameBytes,
	"alias":            limits.SecretNameBytes,
	"truststore":       limits.SecretNameBytes,
	"clientTruststore": limits.SecretNameBytes,

	"apiVersion":        limits.TokenBytes,
	"kind":              limits.TokenBytes,
	"protocol":          limits.TokenBytes,
	"clientCertificate": limits.TokenBytes,
	"clientAuth":        limits.TokenBytes,
	"minversion":        limits.TokenBytes,
	"maxversion":        limits.TokenBytes,
	"ciphers":           limits.TokenBytes,
	"methods":           limits.TokenBytes,
	"cn":                limits.TokenBytes,
	"ou":                limits.TokenBytes,
	"spkiSHA256":        limits.TokenBytes,
	"alpn":              limits.ALPNBytes,

	"address":         limits.AddressBytes,
	"endpoints":       limits.AddressBytes,
	"host":            limits.HostBytes,
	"hostnames":       limits.HostBytes,
	"dnsName":         limits.HostBytes,
	"sni":             limits.HostBytes,
	"subjectAltNames": limits.URIBytes,
	"path":            limits.PathBytes,
	"uri":             limits.URIBytes,
	"spiffeID":        limits.URIBytes,

	"crt":       limits.CertificatePEMBytes,
	"key":       limits.KeyPEMBytes,
	"clientCAs": limits.BundlePEMBytes,
	"trustedCA": limits.BundlePEMBytes,
}

// bounds checks the size of everything in one resource member (a Service,
// Route, PolicyBinding or Listener) before any other rule looks at it:
// every string against its maximum, every list's length, the labels as
// Kubernetes checks them, a binding config's depth and width, and fields
// this version does not know. It reports whether all is within bounds;
// when not, the resource is not validated further, so that no other check
// quotes, parses or stores an oversized value.
func (c *checker) bounds(at fieldPath, m protoreflect.Message) bool {
	n := c.errorCount()
	c.boundMessage(at, m)
	return c.errorCount() == n
}

func (c *checker) boundMessage(at fieldPath, m protoreflect.Message) {
	if u := m.GetUnknown(); len(u) > 0 {
		c.errorf(at, "%s holds a field this service does not know (%s of protobuf data); remove it, or check the client's and the service's versions", m.Descriptor().Name(), limits.Size(len(u)))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := fd.JSONName()
		switch {
		case fd.IsMap():
			c.boundMap(at.Child(name), fd, v.Map())
		case fd.IsList():
			l := v.List()
			if l.Len() > limits.ListItems {
				c.errorf(at.Child(name), "%d items; the maximum is %d", l.Len(), limits.ListItems)
				return true
			}
			for i := range l.Len() {
				c.boundValue(lazyPath{parent: at, name: name, index: i}, name, fd, l.Get(i))
			}
		default:
			c.boundValue(lazyPath{parent: at, name: name, index: -1}, name, fd, v)
		}
		return true
	})
}

// lazyPath is the path of a field, made only when a message quotes it:
// bounds look at every field of every stored value a node reads, and
// building each one's path took more of that than the checks.
type lazyPath struct {
	parent fieldPath
	name   string // "": the parent's own path
	index  int    // -1: not a list element
}

// pathAt is the lazyPath of at itself.
func pathAt(at fieldPath) lazyPath { return lazyPath{parent: at, index: -1} }

func (p lazyPath) path() fieldPath {
	at := p.parent
	if p.name != "" {
		at = at.Child(p.name)
	}
	if p.index >= 0 {
		at = at.Index(p.index)
	}
	return at
}

// element is the path of item i of the list at p.
func (p lazyPath) element(i int) lazyPath {
	if p.index >= 0 {
		return lazyPath{parent: p.path(), index: i}
	}
	return lazyPath{parent: p.parent, name: p.name, index: i}
}

func (c *checker) boundValue(at lazyPath, name string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		c.boundString(at, name, v.String())
	case protoreflect.BytesKind:
		if n := len(v.Bytes()); n > limits.ConfigStringBytes {
			c.errorf(at.path(), "%s", limits.TooLong(name, n, limits.ConfigStringBytes))
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if fd.Message().FullName() == "google.protobuf.Struct" {
			if s, ok := v.Message().Interface().(*structpb.Struct); ok {
				c.boundStruct(at.path(), s, 1)
				return
			}
		}
		c.boundMessage(at.path(), v.Message())
	}
}

func (c *checker) boundString(at lazyPath, name, s string) {
	limit, ok := fieldBytes[name]
	if !ok {
		limit = limits.ConfigStringBytes
	}
	if len(s) > limit {
		c.errorf(at.path(), "%s; shorten it", limits.TooLong(name, len(s), limit))
	}
}

// boundMap checks labels as Kubernetes does, and any other map's size.
func (c *checker) boundMap(at fieldPath, fd protoreflect.FieldDescriptor, m protoreflect.Map) {
	if m.Len() > limits.Labels {
		c.errorf(at, "%d entries; the maximum is %d", m.Len(), limits.Labels)
		return
	}
	type kv struct{ k, v string }
	var entries []kv
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		entries = append(entries, kv{k.String(), v.String()})
		return true
	})
	sort.Slice(entries, func(i, j int) bool { return entries[i].k < entries[j].k })
	for _, e := range entries {
		if fd.JSONName() == "labels" {
			// Labels were not checked before they were bounded, and nodes
			// do not use them: a stored resource is not refused for them.
			if c.decode {
				continue
			}
			if p := limits.LabelProblem(e.k, e.v); p != "" {
				c.errorf(at, "%s", p)
			}
			continue
		}
		c.boundString(pathAt(at), "key", e.k)
		c.boundString(pathAt(at), "value", e.v)
	}
}

// boundStruct checks a binding's config: depth, members per object, list
// lengths, and each string against the maximum of the member it is under.
func (c *checker) boundStruct(at fieldPath, s *structpb.Struct, depth int) {
	if depth > limits.ConfigDepth {
		c.errorf(at, "nested %d levels deep; a config is at most %d levels deep", depth, limits.ConfigDepth)
		return
	}
	if n := len(s.GetFields()); n > limits.ConfigKeys {
		c.errorf(at, "%d members; the maximum is %d", n, limits.ConfigKeys)
		return
	}
	keys := make([]string, 0, len(s.GetFields()))
	for k := range s.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if len(k) > limits.TokenBytes {
			c.errorf(at, "a member name is %d characters long (%s); the maximum is %d", len(k), limits.Quote(k), limits.TokenBytes)
			continue
		}
		c.boundStructValue(lazyPath{parent: at, name: k, index: -1}, k, s.GetFields()[k], depth)
	}
}

func (c *checker) boundStructValue(at lazyPath, name string, v *structpb.Value, depth int) {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		c.boundString(at, name, x.StringValue)
	case *structpb.Value_StructValue:
		c.boundStruct(at.path(), x.StructValue, depth+1)
	case *structpb.Value_ListValue:
		vs := x.ListValue.GetValues()
		if len(vs) > limits.ListItems {
			c.errorf(at.path(), "%d items; the maximum is %d", len(vs), limits.ListItems)
			return
		}
		if depth+1 > limits.ConfigDepth {
			c.errorf(at.path(), "nested %d levels deep; a config is at most %d levels deep", depth+1, limits.ConfigDepth)
			return
		}
		for i, e := range vs {
			c.boundStructValue(at.element(i), name, e, depth+1)
		}
	}
}

// NameProblem says what is wrong with a resource name given to Get or
// Delete, or "" when it is valid. Length is checked first, and the message
// quotes at most a prefix of the name: it runs before the name becomes a
// KV key.
func NameProblem(name string) string {
	if name == "" {
		return "name is empty; give the resource's metadata.name"
	}
	problems := nameProblems(name)
	if len(problems) == 0 {
		return ""
	}
	return fmt.Sprintf("name %s %s; %s", limits.Quote(name), strings.Join(problems, " and "), nameRule)
}

// Bounds checks only what [ValidateContext] checks first: the size of every
// string, list, label and config of the resources, and that a resource
// holds exactly one kind. A server runs it before it looks anything up by
// a name of the request; violations name fields as ValidateContext does.
func Bounds(resources []*policyv1.Resource) []Violation {
	c := &checker{}
	for i, res := range resources {
		at := fieldPath(fmt.Sprintf("resources[%d]", i))
		if u := res.ProtoReflect().GetUnknown(); len(u) > 0 {
			c.errorf(at, "the resource holds a field this service does not know (%s of protobuf data); set exactly one of service, route, policyBinding or listener", limits.Size(len(u)))
			continue
		}
		var m protoreflect.Message
		switch k := res.GetKind().(type) {
		case *policyv1.Resource_Service:
			at, m = at.Child("service"), k.Service.ProtoReflect()
		case *policyv1.Resource_Route:
			at, m = at.Child("route"), k.Route.ProtoReflect()
		case *policyv1.Resource_PolicyBinding:
			at, m = at.Child("policyBinding"), k.PolicyBinding.ProtoReflect()
		case *policyv1.Resource_Listener:
			at, m = at.Child("listener"), k.Listener.ProtoReflect()
		default:
			c.errorf(at, "the resource is empty; set exactly one of service, route, policyBinding or listener")
			continue
		}
		c.bounds(at, m)
	}
	return c.report.Errors
}
