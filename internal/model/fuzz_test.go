package model_test

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
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

// FuzzParsePEM feeds the PEM readers of certificate and key fields
// arbitrary text. Properties: bounded time; errors quote no more than a
// prefix of the text (a block type is the input's too); what parses
// survives re-encoding: the certificates' DER, and the key's public half.
func FuzzParsePEM(f *testing.F) {
	ca := testca.New(f, "fuzz CA")
	kp := ca.Client("gateway")
	f.Add(string(ca.CertPEM()))
	f.Add(string(kp.CertPEM) + string(ca.CertPEM()))
	f.Add(string(kp.KeyPEM))
	f.Add("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" + string(kp.KeyPEM))
	f.Add("subject=CN=x\n" + string(kp.CertPEM) + "trailing text")
	f.Add("-----BEGIN CERTIFICATE-----\nMIIB\n")
	long := fuzzseed.Long(4096)
	f.Add("-----BEGIN " + long + "-----\nAAAA\n-----END " + long + "-----\n")
	f.Add("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")

	f.Fuzz(func(t *testing.T, data string) {
		var (
			certs    []*x509.Certificate
			certErr  error
			key      any
			keyErr   error
			keyBlock []byte
		)
		fuzzseed.Within(t, func() {
			certs, certErr = model.ParseCertificatesPEM(data)
			signer, err := model.ParsePrivateKeyPEM(data)
			keyErr = err
			if err == nil {
				key = signer.Public()
				der, merr := x509.MarshalPKCS8PrivateKey(signer)
				if merr != nil {
					t.Fatalf("an accepted key does not marshal as PKCS#8: %v", merr)
				}
				keyBlock = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			}
		})
		fuzzseed.CheckError(t, certErr)
		fuzzseed.CheckError(t, keyErr)
		if certErr == nil {
			if len(certs) == 0 {
				t.Fatal("no error and no certificate")
			}
			var again strings.Builder
			for _, c := range certs {
				again.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
			}
			back, err := model.ParseCertificatesPEM(again.String())
			if err != nil || len(back) != len(certs) {
				t.Fatalf("re-encoded certificates do not parse back: %v", err)
			}
			for i := range back {
				if !back[i].Equal(certs[i]) {
					t.Fatalf("certificate %d changed when re-encoded", i+1)
				}
			}
		}
		if keyErr == nil {
			back, err := model.ParsePrivateKeyPEM(string(keyBlock))
			if err != nil {
				t.Fatalf("the key, re-encoded as PKCS#8, does not parse back: %v", err)
			}
			if eq, ok := back.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(key) {
				t.Fatal("the key's public half changed when re-encoded")
			}
		}
	})
}
