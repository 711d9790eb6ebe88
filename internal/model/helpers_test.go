package model_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// Resource builders: valid by default, so that each case changes one thing.

func service(name, address string) *policyv1.Resource {
	return serviceSpec(name, &policyv1.ServiceSpec{Address: address})
}

func serviceSpec(name string, spec *policyv1.ServiceSpec) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
		ApiVersion: model.APIVersion,
		Kind:       model.KindService,
		Metadata:   &policyv1.ObjectMeta{Name: name},
		Spec:       spec,
	}}}
}

func route(name, path, svc string, methods ...string) *policyv1.Resource {
	return routeSpec(name, &policyv1.RouteSpec{Path: path, Service: svc, Methods: methods})
}

func routeSpec(name string, spec *policyv1.RouteSpec) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{
		ApiVersion: model.APIVersion,
		Metadata:   &policyv1.ObjectMeta{Name: name},
		Spec:       spec,
	}}}
}

func binding(t testing.TB, name, target string, cfg map[string]any) *policyv1.Resource {
	t.Helper()
	var config *structpb.Struct
	if cfg != nil {
		var err error
		config, err = structpb.NewStruct(cfg)
		if err != nil {
			t.Fatalf("building config: %v", err)
		}
	}
	return &policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
		ApiVersion: model.APIVersion,
		Kind:       model.KindPolicyBinding,
		Metadata:   &policyv1.ObjectMeta{Name: name},
		Spec: &policyv1.PolicyBindingSpec{
			TargetRef: &policyv1.TargetRef{Kind: model.KindService, Name: target},
			PolicyRef: &policyv1.PolicyRef{Name: model.PolicyTLSOutbound},
			Config:    config,
		},
	}}}
}

// withService is a request of the Service "orders" and a tls-outbound binding
// to it with cfg: the binding is resources[1].
func withService(t testing.TB, cfg map[string]any) []*policyv1.Resource {
	return []*policyv1.Resource{service("orders", "orders.internal:8443"), binding(t, "orders-mtls", "orders", cfg)}
}

// verified is the smallest valid config that verifies the upstream.
func verified(ca *testca.CA) map[string]any {
	return map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM())}
}

// with copies cfg and sets key/value pairs on the copy.
func with(cfg map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(cfg)+len(kv)/2)
	for k, v := range cfg {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// clientCert is the certificate {key, crt} object of a key pair.
func clientCert(kp *testca.KeyPair) map[string]any {
	return map[string]any{"key": string(kp.KeyPEM), "crt": string(kp.CertPEM)}
}

func list(s ...string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// serverOnly mints a certificate whose extended key usage is serverAuth only,
// a shape testca has no call for; it is signed by the test CA all the same.
func serverOnly(t testing.TB, ca *testca.CA) *testca.KeyPair {
	t.Helper()
	return oneUsage(t, ca, "server-only", x509.ExtKeyUsageServerAuth)
}

// clientOnly mints a certificate for name whose extended key usage is
// clientAuth only.
func clientOnly(t testing.TB, ca *testca.CA, name string) *testca.KeyPair {
	t.Helper()
	return oneUsage(t, ca, name, x509.ExtKeyUsageClientAuth)
}

// oneUsage mints a certificate for name (CN and DNS SAN) with a single
// extended key usage.
func oneUsage(t testing.TB, ca *testca.CA, name string, usage x509.ExtKeyUsage) *testca.KeyPair {
	t.Helper()
	kp := ca.Client(name) // for its key
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, kp.Key.Public(), ca.Key)
	if err != nil {
		t.Fatalf("signing %s certificate: %v", name, err)
	}
	kp.CertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return kp
}

func listener(name, address string, hosts ...*policyv1.ListenerHost) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
		ApiVersion: model.APIVersion,
		Kind:       model.KindListener,
		Metadata:   &policyv1.ObjectMeta{Name: name},
		Spec:       &policyv1.ListenerSpec{Address: address, Hosts: hosts},
	}}}
}

// host is a valid host serving hostnames with kp, without client
// authentication; options change one thing each.
func host(kp *testca.KeyPair, hostnames []string, options ...func(*policyv1.ListenerHost)) *policyv1.ListenerHost {
	h := &policyv1.ListenerHost{Hostnames: hostnames, Certificate: keyPair(kp)}
	for _, o := range options {
		o(h)
	}
	return h
}

func keyPair(kp *testca.KeyPair) *policyv1.KeyPair {
	return &policyv1.KeyPair{Crt: string(kp.CertPEM), Key: string(kp.KeyPEM)}
}

func names(s ...string) []string { return s }

// verifying has the host require and verify client certificates from the
// CAs given as PEM.
func verifying(mode string, caPEM ...[]byte) func(*policyv1.ListenerHost) {
	return func(h *policyv1.ListenerHost) {
		h.ClientAuth = mode
		var b strings.Builder
		for _, p := range caPEM {
			b.Write(p)
		}
		h.ClientCas = b.String()
	}
}

func asDefault(h *policyv1.ListenerHost) { h.Default = true }

// checkViolations compares a report with the errors expected (exactly) and
// warnings expected (among those reported), and checks every message's case.
func checkViolations(t *testing.T, rep model.Report, errors, warnings []want) {
	t.Helper()
	for _, w := range errors {
		if findViolation(rep.Errors, w) < 0 {
			t.Errorf("missing error %s: %q; errors:%s", w.field, w.phrase, dump(rep.Errors))
		}
	}
	if len(rep.Errors) != len(errors) {
		t.Errorf("got %d errors, want %d:%s", len(rep.Errors), len(errors), dump(rep.Errors))
	}
	if rep.OK() != (len(errors) == 0) {
		t.Errorf("OK() = %v with %d errors", rep.OK(), len(rep.Errors))
	}
	for _, w := range warnings {
		if findViolation(rep.Warnings, w) < 0 {
			t.Errorf("missing warning %s: %q; warnings:%s", w.field, w.phrase, dump(rep.Warnings))
		}
		if findViolation(rep.Errors, w) >= 0 {
			t.Errorf("%s: %q is an error, want a warning", w.field, w.phrase)
		}
	}
	for _, v := range append(rep.Errors, rep.Warnings...) {
		if v.Message == "" || strings.ToLower(v.Message[:1]) != v.Message[:1] && !startsWithName(v.Message) {
			t.Errorf("%s: message %q should start in lower case", v.Field, v.Message)
		}
	}
}

// startsWithName allows messages that start with a proper name (a kind, "TLS
// 1.1"): error strings are otherwise lower case.
func startsWithName(msg string) bool {
	for _, p := range []string{"Service ", "Listener ", "TLS ", "RSA "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// fakeCatalog is a fake of the stored configuration: the real one is the
// policy service's view of the KV bucket.
type fakeCatalog struct {
	refs      []model.Ref
	routes    []model.Route
	bindings  []model.Binding
	listeners []model.Listener
}

func (f *fakeCatalog) Exists(ref model.Ref) bool {
	for _, r := range f.refs {
		if r == ref {
			return true
		}
	}
	return false
}

func (f *fakeCatalog) Routes() []model.Route       { return f.routes }
func (f *fakeCatalog) Bindings() []model.Binding   { return f.bindings }
func (f *fakeCatalog) Listeners() []model.Listener { return f.listeners }

// want is one expected violation: its exact field path and a phrase of its
// message.
type want struct {
	field  string
	phrase string
}

// findViolation returns the index of the violation matching w, or -1.
func findViolation(vs []model.Violation, w want) int {
	for i, v := range vs {
		if v.Field == w.field && strings.Contains(v.Message, w.phrase) {
			return i
		}
	}
	return -1
}

func dump(vs []model.Violation) string {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString("\n\t" + v.Field + ": " + v.Message)
	}
	if b.Len() == 0 {
		return " (none)"
	}
	return b.String()
}
