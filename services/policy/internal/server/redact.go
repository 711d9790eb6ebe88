package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
)

// Responses never carry private keys. Get and List answer with each key
// replaced by a marker naming its digest; an apply that sends the marker back
// unchanged (`keywayctl get … -o yaml | keywayctl apply -f -`) keeps the
// stored key.
const redactedPrefix = "redacted:sha256:"

// keySlot is one private key in a resource: its value, and how to set it.
type keySlot struct {
	field string // path below resources[i], e.g. "listener.spec.hosts[0].certificate.key"
	value string
	set   func(string)
}

// keysOf lists the private keys a resource carries: a tls-outbound
// binding's certificate.key, and each Listener host's certificate.key.
func keysOf(r *policyv1.Resource) []keySlot {
	var out []keySlot
	if cert := r.GetPolicyBinding().GetSpec().GetConfig().GetFields()["certificate"].GetStructValue(); cert != nil {
		if key, ok := cert.GetFields()["key"].GetKind().(*structpb.Value_StringValue); ok && key.StringValue != "" {
			out = append(out, keySlot{"policyBinding.spec.config.certificate.key", key.StringValue,
				func(v string) { cert.Fields["key"] = structpb.NewStringValue(v) }})
		}
	}
	for j, h := range r.GetListener().GetSpec().GetHosts() {
		if kp := h.GetCertificate(); kp.GetKey() != "" {
			out = append(out, keySlot{fmt.Sprintf("listener.spec.hosts[%d].certificate.key", j), kp.GetKey(),
				func(v string) { kp.Key = v }})
		}
	}
	return out
}

func redactedMarker(key string) string {
	sum := sha256.Sum256([]byte(key))
	return redactedPrefix + hex.EncodeToString(sum[:])
}

// redact returns r, or a copy of it with every private key replaced by its
// marker.
func redact(r *policyv1.Resource) *policyv1.Resource {
	if len(keysOf(r)) == 0 {
		return r
	}
	r = proto.CloneOf(r)
	for _, k := range keysOf(r) {
		if !strings.HasPrefix(k.value, redactedPrefix) {
			k.set(redactedMarker(k.value))
		}
	}
	return r
}

// restoreKeys replaces each redacted marker in resources by the stored key
// it names (the same resource's key at the same place). A marker that names
// no stored key is a violation.
func (s *Server) restoreKeys(ctx context.Context, resources []*policyv1.Resource) []model.Violation {
	var vs []model.Violation
	for i, r := range resources {
		var stored map[string]string // field → stored key, loaded on first marker
		for _, k := range keysOf(r) {
			if !strings.HasPrefix(k.value, redactedPrefix) {
				continue
			}
			ref := configkv.RefOf(r)
			if stored == nil {
				stored = map[string]string{}
				if res, err := s.store.Get(ctx, ref); err == nil {
					for _, sk := range keysOf(res) {
						stored[sk.field] = sk.value
					}
				}
			}
			if key, ok := stored[k.field]; ok && redactedMarker(key) == k.value {
				k.set(key)
				continue
			}
			vs = append(vs, model.Violation{
				Field: fmt.Sprintf("resources[%d].%s", i, k.field),
				Message: fmt.Sprintf("%q is the redacted form of a key, as get returns it, but the stored %s holds no key with that digest there; give the private key in PEM",
					short(k.value), ref),
			})
		}
	}
	return vs
}

func short(marker string) string {
	if n := len(redactedPrefix) + 12; len(marker) > n {
		return marker[:n] + "…"
	}
	return marker
}
