package model_test

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

func TestDecodeIsLenientAboutTimeAndReferences(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	oldCA := ca.Issue(testca.Options{CommonName: "old-ca", IsCA: true})
	expired := ca.Expired("client")
	notYet := ca.NotYetValid("client")

	for name, res := range map[string]*policyv1.Resource{
		"expired client certificate":     binding(t, "b", "not-applied-yet", with(verified(ca), "certificate", clientCert(expired))),
		"not yet valid client cert":      binding(t, "b", "not-applied-yet", with(verified(ca), "certificate", clientCert(notYet))),
		"route to a service not seen":    route("r", "/orders/", "not-applied-yet"),
		"trusted CA next to another one": binding(t, "b", "x", map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()) + string(oldCA.CertPEM)}),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			obj, err := model.Decode(res)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if obj.Ref().Name == "" {
				t.Fatalf("Decode returned an empty object")
			}
		})
	}

	obj, err := model.Decode(binding(t, "b", "orders", with(verified(ca), "certificate", clientCert(expired))))
	if err != nil {
		t.Fatal(err)
	}
	if c := obj.Binding.Outbound.Certificate; c == nil || !c.Leaf.Equal(expired.Cert) {
		t.Fatalf("certificate = %+v, want the expired leaf, so that the upstream handshake reports it", c)
	}
}

func TestDecodeDefaults(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	kp := ca.Client("gateway")

	obj, err := model.Decode(binding(t, "orders-mtls", "orders", with(verified(ca), "certificate", clientCert(kp))))
	if err != nil {
		t.Fatal(err)
	}
	b := obj.Binding
	if b.Name != "orders-mtls" || b.Target != (model.Ref{Kind: model.KindService, Name: "orders"}) || b.Policy != model.PolicyTLSOutbound {
		t.Errorf("binding = %+v", b)
	}
	o := b.Outbound
	if o.ALPN != nil {
		t.Errorf("ALPN = %v, want nil (none given)", o.ALPN)
	}
	for protocol, want := range map[string][]string{
		model.ProtocolHTTP1: {"http/1.1"}, model.ProtocolH2: {"h2", "http/1.1"}, model.ProtocolGRPC: {"h2", "http/1.1"},
	} {
		if got := o.OfferedALPN(protocol); !slices.Equal(got, want) {
			t.Errorf("OfferedALPN(%q) = %v, want %v", protocol, got, want)
		}
	}
	if o.MinVersion != tls.VersionTLS12 || o.MaxVersion != tls.VersionTLS13 {
		t.Errorf("versions = %x..%x, want TLS 1.2..1.3", o.MinVersion, o.MaxVersion)
	}
	if o.CipherSuites != nil || o.SNI != "" || o.SubjectAltNames != nil || o.SkipValidation {
		t.Errorf("outbound = %+v, want Go's suites, no SNI, no SANs, validation on", o)
	}
	if len(o.TrustedCAs) != 1 || !o.TrustedCAs[0].Equal(ca.Cert) {
		t.Errorf("trusted CAs = %v, want the test CA", o.TrustedCAs)
	}
	c := o.Certificate
	if c == nil || len(c.Certificate) != 1 || !c.Leaf.Equal(kp.Cert) {
		t.Fatalf("certificate = %+v, want the client leaf", c)
	}
	if k, ok := c.PrivateKey.(*ecdsa.PrivateKey); !ok || !k.Equal(kp.Key) {
		t.Errorf("private key = %T, want the client's ECDSA key", c.PrivateKey)
	}
	if len(o.Fingerprint) != 64 {
		t.Errorf("fingerprint = %q, want hex SHA-256", o.Fingerprint)
	}

	obj, err = model.Decode(service("orders", "orders.internal:8443"))
	if err != nil {
		t.Fatal(err)
	}
	if s := obj.Service; s.Protocol != model.ProtocolHTTP1 || !slices.Equal(s.Endpoints, []string{"orders.internal:8443"}) {
		t.Errorf("service = %+v", s)
	}

	obj, err = model.Decode(route("orders", "/orders/{id}", "orders", "get"))
	if err != nil {
		t.Fatal(err)
	}
	if r := obj.Route; !slices.Equal(r.Methods, []string{"GET"}) || r.Path != "/orders/{id}" || r.Service != "orders" {
		t.Errorf("route = %+v", r)
	}
}

func TestDecodeRejectsWhatCannotBeBuilt(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	for name, tc := range map[string]struct {
		res  *policyv1.Resource
		want string
	}{
		"unknown cipher": {
			res:  binding(t, "b", "orders", with(verified(ca), "ciphers", list("TLS_FOO"))),
			want: `policyBinding.spec.config.ciphers[0]: "TLS_FOO" is not an IANA cipher suite`,
		},
		"key of another certificate": {
			res:  binding(t, "b", "orders", with(verified(ca), "certificate", map[string]any{"key": string(ca.Client("a").KeyPEM), "crt": string(ca.Client("b").CertPEM)})),
			want: "policyBinding.spec.config.certificate.key: certificate.key does not match",
		},
		"bad address": {
			res:  service("orders", "orders.internal"),
			want: "service.spec.address: endpoint \"orders.internal\" has no port",
		},
		"empty resource": {
			res:  &policyv1.Resource{},
			want: "the resource is empty",
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := model.Decode(tc.res)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode error = %v, want one containing %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "model: decoding ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	kp := ca.Client("gateway")
	base := with(verified(ca), "certificate", clientCert(kp))

	fp := func(t *testing.T, cfg map[string]any) string {
		t.Helper()
		obj, err := model.Decode(binding(t, "orders-mtls", "orders", cfg))
		if err != nil {
			t.Fatal(err)
		}
		return obj.Binding.Outbound.Fingerprint
	}
	want := fp(t, base)
	if again := fp(t, base); again != want {
		t.Fatalf("fingerprint changed between two decodes: %s, %s", want, again)
	}

	// The same key in another encoding (SEC 1 instead of PKCS#8) is the same
	// context: only the public key enters the fingerprint.
	sec1, err := x509.MarshalECPrivateKey(kp.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1PEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	if got := fp(t, with(base, "certificate", map[string]any{"key": string(sec1PEM), "crt": string(kp.CertPEM)})); got != want {
		t.Errorf("re-encoding the key changed the fingerprint")
	}
	// Numeric and string spellings of the default version are the same context.
	if got := fp(t, with(base, "minversion", 1.2)); got != want {
		t.Errorf("spelling out the default version changed the fingerprint")
	}

	other := ca.Client("gateway")
	for name, cfg := range map[string]map[string]any{
		"alpn order": with(base, "alpn", list("http/1.1", "h2")),
		// Given, [h2, http/1.1] offers h2 to HTTP/1.1 Services too.
		"alpn given":       with(base, "alpn", list("h2", "http/1.1")),
		"sni":              with(base, "sni", "orders.internal"),
		"san":              with(base, "subjectAltNames", list("orders.internal")),
		"min version":      with(base, "minversion", "1.3"),
		"max version":      with(base, "maxversion", "1.2"),
		"ciphers":          with(base, "ciphers", list("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")),
		"client cert":      with(base, "certificate", clientCert(other)),
		"no client cert":   verified(ca),
		"skip validation":  map[string]any{"skipValidation": true, "certificate": clientCert(kp)},
		"another trust CA": with(base, "trustedCA", string(testca.New(t, "ca2").CertPEM())),
	} {
		if got := fp(t, cfg); got == want {
			t.Errorf("changing %s did not change the fingerprint", name)
		}
	}
}

// Port 0 in a Listener address is refused unless the test asks for it; a
// Service endpoint's port 0 is refused either way.
func TestDecodeAllowPortZero(t *testing.T) {
	t.Parallel()
	listener := &policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
		ApiVersion: model.APIVersion, Kind: model.KindListener, Metadata: &policyv1.ObjectMeta{Name: "edge"},
		Spec: &policyv1.ListenerSpec{Address: "127.0.0.1:0"},
	}}}
	if _, err := model.Decode(listener); err == nil || !strings.Contains(err.Error(), `port "0" is not a number from 1 to 65535`) {
		t.Errorf("Decode of a Listener on port 0: %v, want the port refused", err)
	}
	obj, err := model.Decode(listener, model.AllowPortZero())
	if err != nil || obj.Listener == nil || obj.Listener.Address != "127.0.0.1:0" {
		t.Errorf("Decode with AllowPortZero: %+v, %v; want Listener edge on 127.0.0.1:0", obj, err)
	}
	if _, err := model.Decode(service("orders", "orders.internal:0"), model.AllowPortZero()); err == nil {
		t.Error("AllowPortZero let a Service endpoint have port 0")
	}
}
