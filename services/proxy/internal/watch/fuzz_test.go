package watch

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/fuzzseed"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// FuzzDecodeStoredValue feeds the node's decoding of a stored value (the
// key, the keyway.config.v1.Record, then model.Decode: decodeValue, the
// path every KV entry takes) arbitrary bytes under any key, starting from
// the encoded resources of the documentation and ones with real
// certificates. decodeValue is called directly, not through the Watcher's
// recover, so that a panic is the fuzzer's finding. Properties: bounded
// time; no error line quotes more than a prefix of a value; an accepted
// value holds the resource its key names, and encoding it again and
// decoding gives the same resource.
func FuzzDecodeStoredValue(f *testing.F) {
	ca := testca.New(f, "fuzz CA")
	kp := ca.Client("gateway")
	cfg, err := structpb.NewStruct(map[string]any{
		"trustedCA":   string(ca.CertPEM()),
		"certificate": map[string]any{"crt": string(kp.CertPEM), "key": string(kp.KeyPEM)},
		"sni":         "orders.internal", "minversion": "1.2", "alpn": []any{"h2"},
	})
	if err != nil {
		f.Fatal(err)
	}
	seeds := fuzzseed.Resources(f, fuzzseed.Blocks(f, "yaml", "apiVersion:", "docs/**/*.md", "README.md")...)
	seeds = append(seeds,
		&policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
			ApiVersion: model.APIVersion, Kind: model.KindService, Metadata: &policyv1.ObjectMeta{Name: "orders"},
			Spec: &policyv1.ServiceSpec{Endpoints: []string{"127.0.0.1:1"}, Protocol: "http1"},
		}}},
		&policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
			ApiVersion: model.APIVersion, Kind: model.KindPolicyBinding, Metadata: &policyv1.ObjectMeta{Name: "orders"},
			Spec: &policyv1.PolicyBindingSpec{
				TargetRef: &policyv1.TargetRef{Kind: model.KindService, Name: "orders"},
				PolicyRef: &policyv1.PolicyRef{Name: model.PolicyTLSOutbound},
				Config:    cfg,
			},
		}}},
		&policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
			ApiVersion: model.APIVersion, Kind: model.KindListener, Metadata: &policyv1.ObjectMeta{Name: "edge"},
			Spec: &policyv1.ListenerSpec{Address: "127.0.0.1:9443", Hosts: []*policyv1.ListenerHost{{
				Hostnames: []string{"a.test"}, Default: true,
				Certificate: &policyv1.KeyPair{Crt: string(ca.Server("a.test").CertPEM), Key: string(ca.Server("a.test").KeyPEM)},
			}}},
		}}},
	)
	for _, r := range seeds {
		b, err := configkv.Encode(r, time.Unix(0, 0))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(configkv.Key(configkv.RefOf(r)), b)
	}
	f.Add("service.x", []byte{})
	f.Add("service."+fuzzseed.Long(4096), []byte{})
	f.Add(fuzzseed.Long(4096)+".x", []byte{})

	// As the Watcher decodes by default.
	decode := func(res *policyv1.Resource) (model.Object, error) { return model.Decode(res) }
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		var (
			obj model.Object
			msg string
			err error
		)
		fuzzseed.Within(t, func() { obj, msg, err = decodeValue(key, value, 7, decode) })
		fuzzseed.CheckError(t, err)
		if err != nil {
			if msg == "" {
				t.Fatalf("a refusal without the message saying what the node does: %v", err)
			}
			return
		}
		ref, perr := configkv.ParseKey(key)
		if perr != nil || obj.Ref() != ref {
			t.Fatalf("key %.100q accepted holding %s (%v)", key, obj.Ref(), perr)
		}
		res, derr := configkv.Decode(value, 7)
		if derr != nil {
			t.Fatalf("an accepted value does not decode: %v", derr)
		}
		again, eerr := configkv.Encode(res, time.Unix(0, 0))
		if eerr != nil {
			t.Fatalf("an accepted resource does not encode: %v", eerr)
		}
		back, berr := configkv.Decode(again, 7)
		if berr != nil || !configkv.SameContent(res, back) {
			t.Fatalf("an accepted resource changed when encoded again: %v", berr)
		}
		if obj2, _, err := decodeValue(key, again, 7, decode); err != nil || obj2.Ref() != obj.Ref() {
			t.Fatalf("the re-encoded value is refused: %v", err)
		}
	})
}
