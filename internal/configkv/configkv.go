// Package configkv is the layout of the configuration bucket in NATS
// JetStream KV, the store of record: one key per resource, whose value is a
// keyway.config.v1.Record. The policy service writes it; proxy nodes watch it.
package configkv

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	configv1 "keyway.dev/gen/keyway/config/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/limits"
	"keyway.dev/internal/model"
)

// Bucket is the default name of the configuration bucket.
const Bucket = "keyway-config"

// Key is the bucket key of a resource: "<kind in lowercase>.<name>", e.g.
// "policybinding.orders-mtls". Names are validated to lowercase letters,
// digits and hyphens, which are all valid in KV keys.
func Key(ref model.Ref) string {
	return strings.ToLower(ref.Kind) + "." + ref.Name
}

// KindPrefix is the key prefix of every resource of a kind, for filtered
// watches and listings ("service.").
func KindPrefix(kind string) string {
	return strings.ToLower(kind) + "."
}

// ParseKey is the inverse of [Key].
func ParseKey(key string) (model.Ref, error) {
	kind, name, ok := strings.Cut(key, ".")
	if !ok || name == "" {
		return model.Ref{}, fmt.Errorf("configkv: key %s is not <kind>.<name>", limits.Quote(key))
	}
	for _, k := range []string{model.KindService, model.KindRoute, model.KindPolicyBinding, model.KindListener} {
		if strings.ToLower(k) == kind {
			return model.Ref{Kind: k, Name: name}, nil
		}
	}
	return model.Ref{}, fmt.Errorf("configkv: key %s has unknown kind %s", limits.Quote(key), limits.Quote(kind))
}

// RefOf names the resource held in r.
func RefOf(r *policyv1.Resource) model.Ref {
	switch k := r.GetKind().(type) {
	case *policyv1.Resource_Service:
		return model.Ref{Kind: model.KindService, Name: k.Service.GetMetadata().GetName()}
	case *policyv1.Resource_Route:
		return model.Ref{Kind: model.KindRoute, Name: k.Route.GetMetadata().GetName()}
	case *policyv1.Resource_PolicyBinding:
		return model.Ref{Kind: model.KindPolicyBinding, Name: k.PolicyBinding.GetMetadata().GetName()}
	case *policyv1.Resource_Listener:
		return model.Ref{Kind: model.KindListener, Name: k.Listener.GetMetadata().GetName()}
	}
	return model.Ref{}
}

// Metadata returns the resource's metadata message, creating it if absent,
// so that callers can set store-owned fields.
func Metadata(r *policyv1.Resource) *policyv1.ObjectMeta {
	var slot **policyv1.ObjectMeta
	switch k := r.GetKind().(type) {
	case *policyv1.Resource_Service:
		slot = &k.Service.Metadata
	case *policyv1.Resource_Route:
		slot = &k.Route.Metadata
	case *policyv1.Resource_PolicyBinding:
		slot = &k.PolicyBinding.Metadata
	case *policyv1.Resource_Listener:
		slot = &k.Listener.Metadata
	default:
		return &policyv1.ObjectMeta{}
	}
	if *slot == nil {
		*slot = &policyv1.ObjectMeta{}
	}
	return *slot
}

// Encode makes the stored value of a resource. Store-owned metadata
// (revision, update time) is not stored inside the resource: the KV entry
// holds it.
func Encode(r *policyv1.Resource, at time.Time) ([]byte, error) {
	r = proto.CloneOf(r)
	md := Metadata(r)
	md.Revision, md.UpdateTime = 0, nil
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&configv1.Record{Resource: r, UpdateTime: timestamppb.New(at)})
	if err != nil {
		return nil, fmt.Errorf("configkv: encoding %s: %w", RefOf(r), err)
	}
	return b, nil
}

// Decode reads a stored value and sets the resource's store-owned metadata
// from the KV entry's revision.
func Decode(value []byte, revision uint64) (*policyv1.Resource, error) {
	var rec configv1.Record
	if err := proto.Unmarshal(value, &rec); err != nil {
		return nil, fmt.Errorf("configkv: decoding record at revision %d: %w", revision, err)
	}
	if rec.GetResource().GetKind() == nil {
		return nil, fmt.Errorf("configkv: record at revision %d holds no resource", revision)
	}
	md := Metadata(rec.Resource)
	md.Revision, md.UpdateTime = revision, rec.UpdateTime
	return rec.Resource, nil
}

// SameContent reports whether two resources say the same thing, ignoring
// store-owned metadata.
func SameContent(a, b *policyv1.Resource) bool {
	a, b = proto.CloneOf(a), proto.CloneOf(b)
	for _, r := range []*policyv1.Resource{a, b} {
		md := Metadata(r)
		md.Revision, md.UpdateTime = 0, nil
	}
	return proto.Equal(a, b)
}
