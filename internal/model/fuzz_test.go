package model_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/fuzzseed"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// anyCatalog says every referenced resource exists, so that validation
// judges the resource itself.
type anyCatalog struct{ *fakeCatalog }

func (anyCatalog) Exists(model.Ref) bool { return true }

// FuzzDecode feeds a resource in the API's JSON (the policy service's
// input; a proxy node decodes the same resources from NATS) to Decode and
// to Validate: the binding config readers (tls-outbound, tls-inbound) and
// the Listener reader see every shape. Seeds are the documentation's
// manifests and resources with real certificates. Properties: bounded time;
// every error line and violation quotes at most a prefix of a value; a
// decoded object names the resource it came from; decoding is
// deterministic; what Validate accepts (references taken as existing), Decode
// accepts too, since Decode only relaxes rules.
func FuzzDecode(f *testing.F) {
	ca := testca.New(f, "fuzz CA")
	seeds := fuzzseed.Resources(f, fuzzseed.Blocks(f, "yaml", "apiVersion:", "docs/**/*.md", "README.md")...)
	seeds = append(seeds, withService(f, verified(ca))...)
	seeds = append(seeds, withService(f, with(verified(ca), "certificate", clientCert(ca.Client("gateway")), "ciphers", list("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"), "minversion", "1.2"))...)
	seeds = append(seeds,
		listener("edge", "127.0.0.1:9443", host(ca.Server("a.test"), names("a.test", "*.wild.test"), asDefault, verifying("require", ca.CertPEM()))),
		route("orders", "/orders/{id}", "orders", "GET", "POST"),
	)
	for _, r := range seeds {
		b, err := protojson.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	long := fuzzseed.Long(4096)
	f.Add([]byte(`{"policyBinding": {"metadata": {"name": "b"}, "spec": {"targetRef": {"kind": "Service", "name": "orders"}, "policyRef": {"name": "tls-outbound"}, "config": {"` + long + `": 1, "sni": "` + long + `", "ciphers": ["` + long + `"]}}}}`))
	f.Add([]byte(`{"listener": {"metadata": {"name": "` + long + `"}, "spec": {"address": "` + long + `"}}}`))
	f.Add([]byte(`{"route": {"apiVersion": "` + long + `", "kind": "` + long + `", "metadata": {"name": "r"}, "spec": {"path": "/` + long + `", "methods": ["` + long + `"]}}}`))

	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		var res policyv1.Resource
		if err := protojson.Unmarshal(data, &res); err != nil {
			return
		}
		var (
			obj      model.Object
			err      error
			report   model.Report
			again    error
			original = proto.Clone(&res)
		)
		fuzzseed.Within(t, func() {
			obj, err = model.Decode(&res)
			_, again = model.Decode(proto.Clone(original).(*policyv1.Resource))
			_, report = model.Validate([]*policyv1.Resource{proto.Clone(original).(*policyv1.Resource)}, anyCatalog{&fakeCatalog{}}, now)
		})
		fuzzseed.CheckError(t, err)
		for _, v := range append(report.Errors, report.Warnings...) {
			if len(v.Field)+len(v.Message) > fuzzseed.MaxErrorLine || strings.Contains(v.Message, "\n") {
				t.Fatalf("violation at %.200s is %d bytes or spans lines: %.400s", v.Field, len(v.Field)+len(v.Message), v.Message)
			}
		}
		if (err == nil) != (again == nil) {
			t.Fatalf("decoding the same resource twice: %v, then %v", err, again)
		}
		if !proto.Equal(&res, original) {
			t.Fatalf("Decode changed its input")
		}
		if report.OK() && err != nil {
			t.Fatalf("Validate accepts the resource but Decode refuses it: %v", err)
		}
		if err != nil {
			return
		}
		ref := obj.Ref()
		var name string
		switch {
		case res.GetService() != nil:
			name = res.GetService().GetMetadata().GetName()
		case res.GetRoute() != nil:
			name = res.GetRoute().GetMetadata().GetName()
		case res.GetPolicyBinding() != nil:
			name = res.GetPolicyBinding().GetMetadata().GetName()
		case res.GetListener() != nil:
			name = res.GetListener().GetMetadata().GetName()
		}
		if ref.Name != name || ref.Name == "" {
			t.Fatalf("decoded %s from a resource named %q", ref, name)
		}
	})
}
