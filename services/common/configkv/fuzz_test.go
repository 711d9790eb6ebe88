package configkv_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/common/configkv"
	"keyway.dev/common/model"
)

// FuzzDecodeStoredValue feeds the decoding a proxy node does of a stored
// value (the key, the record, then the resource's validation, as
// keyway.dev/proxy/internal/config does) arbitrary bytes under any key: it
// returns a model or an error, and never panics.
func FuzzDecodeStoredValue(f *testing.F) {
	cfg, err := structpb.NewStruct(map[string]any{"skipValidation": true, "sni": "orders.internal"})
	if err != nil {
		f.Fatal(err)
	}
	seeds := []*policyv1.Resource{
		{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
			ApiVersion: model.APIVersion, Kind: model.KindService, Metadata: &policyv1.ObjectMeta{Name: "orders"},
			Spec: &policyv1.ServiceSpec{Endpoints: []string{"127.0.0.1:1"}, Protocol: "http1"},
		}}},
		{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{
			ApiVersion: model.APIVersion, Kind: model.KindRoute, Metadata: &policyv1.ObjectMeta{Name: "orders"},
			Spec: &policyv1.RouteSpec{Path: "/orders/", Service: "orders"},
		}}},
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
		ref, err := configkv.ParseKey(key)
		if err != nil {
			return
		}
		res, err := configkv.Decode(value, 1)
		if err != nil {
			return
		}
		obj, err := model.Decode(res)
		if err != nil {
			return
		}
		_ = obj.Ref() == ref
		_ = configkv.RefOf(res)
	})
}
