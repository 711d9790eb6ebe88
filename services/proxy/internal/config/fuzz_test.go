package config

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/common/configkv"
	"keyway.dev/common/model"
)

// FuzzDecodeStoredValue feeds the node's decoding of a stored value (the
// record, then the resource's validation) arbitrary bytes under each kind's
// key: it returns a model or an error, and never panics.
func FuzzDecodeStoredValue(f *testing.F) {
	cfg, err := structpb.NewStruct(map[string]any{"skipValidation": true, "sni": "orders.internal"})
	if err != nil {
		f.Fatal(err)
	}
	seeds := []*policyv1.Resource{
		service("orders"), route("orders", "orders"),
		{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
			ApiVersion: model.APIVersion, Kind: model.KindPolicyBinding, Metadata: &policyv1.ObjectMeta{Name: "orders"},
			Spec: &policyv1.PolicyBindingSpec{
				TargetRef: &policyv1.TargetRef{Kind: model.KindService, Name: "orders"},
				PolicyRef: &policyv1.PolicyRef{Name: model.PolicyTLSOutbound},
				Config:    cfg,
			},
		}}},
		{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
			ApiVersion: model.APIVersion, Kind: model.KindListener, Metadata: &policyv1.ObjectMeta{Name: "edge"},
		}}},
	}
	for _, r := range seeds {
		b, err := configkv.Encode(r, time.Unix(0, 0))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(configkv.Key(configkv.RefOf(r)), b)
	}
	f.Add("service.x", []byte{})
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		_, _, _ = decodeValue(key, value, 1, model.Decode)
	})
}
