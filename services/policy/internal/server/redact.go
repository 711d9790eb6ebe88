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

	"keyway.dev/common/model"
)

// Responses never carry private keys. Get and List answer with the key
// replaced by a marker naming its digest; an apply that sends the marker back
// unchanged (`keywayctl get … -o yaml | keywayctl apply -f -`) keeps the
// stored key.
const redactedPrefix = "redacted:sha256:"

// keyOf returns the certificate.key value of a tls-outbound binding's config,
// and the struct holding it, if there is one.
func keyOf(r *policyv1.Resource) (string, *structpb.Struct) {
	cert := r.GetPolicyBinding().GetSpec().GetConfig().GetFields()["certificate"].GetStructValue()
	key, ok := cert.GetFields()["key"].GetKind().(*structpb.Value_StringValue)
	if !ok {
		return "", nil
	}
	return key.StringValue, cert
}

func redactedMarker(key string) string {
	sum := sha256.Sum256([]byte(key))
	return redactedPrefix + hex.EncodeToString(sum[:])
}

// redact returns r, or a copy of it with its private key replaced by the
// marker.
func redact(r *policyv1.Resource) *policyv1.Resource {
	if key, _ := keyOf(r); key == "" || strings.HasPrefix(key, redactedPrefix) {
		return r
	}
	r = proto.CloneOf(r)
	key, cert := keyOf(r)
	cert.Fields["key"] = structpb.NewStringValue(redactedMarker(key))
	return r
}

// restoreKeys replaces each redacted marker in resources by the stored key
// it names. A marker that names no stored key is a violation.
func (s *Server) restoreKeys(ctx context.Context, resources []*policyv1.Resource) []model.Violation {
	var vs []model.Violation
	for i, r := range resources {
		marker, cert := keyOf(r)
		if !strings.HasPrefix(marker, redactedPrefix) {
			continue
		}
		name := r.GetPolicyBinding().GetMetadata().GetName()
		stored, err := s.store.Get(ctx, model.Ref{Kind: model.KindPolicyBinding, Name: name})
		if storedKey, _ := keyOf(stored); err == nil && redactedMarker(storedKey) == marker {
			cert.Fields["key"] = structpb.NewStringValue(storedKey)
			continue
		}
		vs = append(vs, model.Violation{
			Field: fmt.Sprintf("resources[%d].policyBinding.spec.config.certificate.key", i),
			Message: fmt.Sprintf("%q is the redacted form of a key, as get returns it, but the stored PolicyBinding %q holds no key with that digest; give the private key in PEM",
				short(marker), name),
		})
	}
	return vs
}

func short(marker string) string {
	if n := len(redactedPrefix) + 12; len(marker) > n {
		return marker[:n] + "…"
	}
	return marker
}
