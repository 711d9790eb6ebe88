package model_test

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testca"
)

// fakeSecrets is a fake of the secrets service's SecretsService as
// validation sees it (secretref.Secrets): keystores of aliases and truststores
// made of test certificates. The policy service's client of the real
// service implements the same interface.
type fakeSecrets struct {
	aliases     map[secretref.Ref][]*x509.Certificate
	truststores map[string][]*x509.Certificate
	// err, when set, is every answer: the service is unreachable.
	err error
	// calls counts the questions asked, to check each is asked once;
	// parallel tests share a fake.
	calls atomic.Int64
	// rejected holds the secrets service's rejection of the newest
	// version, by "keystore/alias" or truststore name.
	rejected map[string]string
}

func (f *fakeSecrets) Alias(_ context.Context, keystore, alias string) (secretref.AliasInfo, error) {
	f.calls.Add(1)
	if f.err != nil {
		return secretref.AliasInfo{}, f.err
	}
	var keystores, aliases []string
	for r := range f.aliases {
		if !slices.Contains(keystores, r.Keystore) {
			keystores = append(keystores, r.Keystore)
		}
		if r.Keystore == keystore {
			aliases = append(aliases, r.Alias)
		}
	}
	if !slices.Contains(keystores, keystore) {
		return secretref.AliasInfo{}, &secretref.NotFoundError{Kind: "keystore", Name: keystore, Known: keystores}
	}
	chain, ok := f.aliases[secretref.Ref{Keystore: keystore, Alias: alias}]
	if !ok {
		return secretref.AliasInfo{}, &secretref.NotFoundError{Kind: "alias", Name: alias, Known: aliases}
	}
	info := secretref.AliasInfo{Version: "3", Rejected: f.rejected[keystore+"/"+alias]}
	for _, c := range chain {
		info.Chain = append(info.Chain, certs.Summarize(c))
	}
	return info, nil
}

func (f *fakeSecrets) Truststore(_ context.Context, name string) (secretref.TruststoreInfo, error) {
	f.calls.Add(1)
	if f.err != nil {
		return secretref.TruststoreInfo{}, f.err
	}
	cas, ok := f.truststores[name]
	if !ok {
		var known []string
		for n := range f.truststores {
			known = append(known, n)
		}
		return secretref.TruststoreInfo{}, &secretref.NotFoundError{Kind: "truststore", Name: name, Known: known}
	}
	info := secretref.TruststoreInfo{Version: "1", Rejected: f.rejected[name]}
	for _, c := range cas {
		info.Certificates = append(info.Certificates, certs.Summarize(c))
	}
	return info, nil
}

func ref(keystore, alias string) map[string]any {
	return map[string]any{"keystore": keystore, "alias": alias}
}

func truststore(name string) map[string]any { return map[string]any{"truststore": name} }

// refHost is a Listener host whose certificate is an alias of the secrets
// service.
func refHost(keystore, alias string, hostnames []string, options ...func(*policyv1.ListenerHost)) *policyv1.ListenerHost {
	h := &policyv1.ListenerHost{Hostnames: hostnames, Certificate: &policyv1.KeyPair{Keystore: keystore, Alias: alias}}
	for _, o := range options {
		o(h)
	}
	return h
}

func clientTruststore(mode, name string) func(*policyv1.ListenerHost) {
	return func(h *policyv1.ListenerHost) { h.ClientAuth, h.ClientTruststore = mode, name }
}

func TestValidateReferences(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "Refs CA")
	oldCA := ca.Issue(testca.Options{CommonName: "Old CA", IsCA: true, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	secrets := &fakeSecrets{
		aliases: map[secretref.Ref][]*x509.Certificate{
			{Keystore: "edge", Alias: "gw"}:          {ca.Client("gateway").Cert},
			{Keystore: "edge", Alias: "expired"}:     {ca.Expired("old-gateway").Cert},
			{Keystore: "edge", Alias: "future"}:      {ca.NotYetValid("new-gateway").Cert},
			{Keystore: "edge", Alias: "weak"}:        {ca.RSA("weak-gateway", 1024).Cert},
			{Keystore: "edge", Alias: "api"}:         {ca.Server("api.example.com", "*.api.example.com").Cert},
			{Keystore: "edge", Alias: "cn-only"}:     {ca.CNOnly("api.example.com").Cert},
			{Keystore: "internal", Alias: "service"}: {ca.Client("service").Cert},
		},
		truststores: map[string][]*x509.Certificate{
			"upstream-cas": {ca.Cert},
			"clients":      {ca.Cert},
			"retired":      {oldCA.Cert},
		},
	}
	const (
		config   = "resources[1].policyBinding.spec.config"
		hostPath = "resources[0].listener.spec.hosts[0]"
	)
	cases := []struct {
		name      string
		resources []*policyv1.Resource
		secrets   secretref.Secrets
		errors    []want
		warnings  []want
	}{
		{
			name: "alias and truststore",
			resources: withService(t, map[string]any{
				"skipValidation": false, "trustedCA": truststore("upstream-cas"), "certificate": ref("edge", "gw"),
			}),
		},
		{
			name:      "missing keystore, with a suggestion",
			resources: withService(t, with(verified(ca), "certificate", ref("edgee", "gw"))),
			errors: []want{{config + ".certificate.keystore", `keystore "edgee" does not exist in the secrets service (did you mean "edge"? keystores: "edge", "internal"); ` +
				"create it by storing the key pair in it (`keywayctl secrets put --keystore edgee --alias gw --cert CERT.pem --key KEY.pem`), or fix the name"}},
		},
		{
			name:      "missing alias",
			resources: withService(t, with(verified(ca), "certificate", ref("internal", "gw"))),
			errors: []want{{config + ".certificate.alias", `alias "gw" does not exist in keystore "internal" (aliases there: "service"); ` +
				"store the key pair under that alias (`keywayctl secrets put --keystore internal --alias gw --cert CERT.pem --key KEY.pem`), or fix the name"}},
		},
		{
			name:      "missing truststore",
			resources: withService(t, map[string]any{"skipValidation": false, "trustedCA": truststore("upstream-ca")}),
			errors: []want{
				{config + ".trustedCA.truststore", `truststore "upstream-ca" does not exist in the secrets service (did you mean "upstream-cas"?`},
			},
		},
		{
			// The fix names the command that stores it, never the RPC.
			name:      "missing truststore: the fix",
			resources: withService(t, map[string]any{"skipValidation": false, "trustedCA": truststore("upstream-ca")}),
			errors: []want{
				{config + ".trustedCA.truststore", "; store the CA bundle under that name (`keywayctl secrets put --truststore upstream-ca --cert CA.pem`), or fix the name"},
			},
		},
		{
			name:      "expired certificate behind an alias",
			resources: withService(t, with(verified(ca), "certificate", ref("edge", "expired"))),
			errors:    []want{{config + ".certificate.alias", `keystore "edge" alias "expired": the client certificate ("CN=old-gateway") expired at`}},
		},
		{
			name:      "certificate not valid yet",
			resources: withService(t, with(verified(ca), "certificate", ref("edge", "future"))),
			errors:    []want{{config + ".certificate.alias", `keystore "edge" alias "future": the client certificate ("CN=new-gateway") is not valid until`}},
		},
		{
			name:      "RSA key under 2048 bits",
			resources: withService(t, with(verified(ca), "certificate", ref("edge", "weak"))),
			errors:    []want{{config + ".certificate.alias", `keystore "edge" alias "weak": the RSA key is 1024 bits; keys must be at least 2048 bits`}},
		},
		{
			name:      "truststore with no CA valid now",
			resources: withService(t, map[string]any{"skipValidation": false, "trustedCA": truststore("retired")}),
			errors:    []want{{config + ".trustedCA.truststore", `truststore "retired" certificate 1 ("CN=Old CA") expired at`}},
		},
		{
			name:      "secrets service unreachable",
			resources: withService(t, with(verified(ca), "certificate", ref("edge", "gw"))),
			secrets:   &fakeSecrets{err: errors.New("dial tcp 127.0.0.1:8082: connection refused")},
			errors:    []want{{config + ".certificate", `keystore "edge" alias "gw" cannot be checked: the secrets service did not answer (dial tcp 127.0.0.1:8082: connection refused)`}},
		},
		{
			name:      "no secrets service configured",
			resources: withService(t, with(verified(ca), "certificate", ref("edge", "gw"))),
			secrets:   secretref.Secrets(nil),
			errors:    []want{{config + ".certificate", "this policy service has no secrets service configured; start keyway-policy with --secrets-server"}},
		},
		{
			name: "both forms of certificate",
			resources: withService(t, with(verified(ca), "certificate", map[string]any{
				"keystore": "edge", "alias": "gw", "crt": string(ca.Client("x").CertPEM), "key": string(ca.Client("x").KeyPEM),
			})),
			errors: []want{{config + ".certificate", "certificate has both an inline key pair (key, crt) and a reference (keystore, alias); give one form"}},
		},
		{
			name:      "keystore without alias",
			resources: withService(t, with(verified(ca), "certificate", map[string]any{"keystore": "edge"})),
			errors:    []want{{config + ".certificate.alias", `certificate.alias is missing: keystore and alias come together; name the alias in keystore "edge"`}},
		},
		{
			name:      "trustedCA object without truststore",
			resources: withService(t, map[string]any{"skipValidation": false, "trustedCA": map[string]any{"name": "upstream-cas"}}),
			errors: []want{
				{config + ".trustedCA.name", `unknown field "name"`},
				{config + ".trustedCA.truststore", "trustedCA as an object needs truststore"},
			},
		},
		{
			name:      "keystore name with a dot",
			resources: withService(t, with(verified(ca), "certificate", ref("edge.prod", "gw"))),
			errors:    []want{{config + ".certificate.keystore", `keystore "edge.prod" has the character '.'`}},
		},
		{
			name:      "truststore ignored with skipValidation",
			resources: withService(t, map[string]any{"skipValidation": true, "trustedCA": truststore("nowhere")}),
			warnings:  []want{{config + ".trustedCA", "trustedCA is ignored because skipValidation is true"}},
		},
		{
			name: "listener host with alias and client truststore",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:8443",
				refHost("edge", "api", names("api.example.com", "v1.api.example.com"), asDefault, clientTruststore("require-and-verify", "clients")))},
		},
		{
			name:      "listener alias without SAN whose CN is the hostname warns",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:8443", refHost("edge", "cn-only", names("api.example.com"), asDefault))},
			warnings:  []want{{hostPath + ".certificate.alias", `keystore "edge" alias "cn-only": the server certificate ("CN=api.example.com") has no subjectAltName, only a Common Name: curl and other OpenSSL-based clients accept it, but browsers and Go clients refuse it`}},
		},
		{
			name:      "listener alias without SAN for another hostname",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:8443", refHost("edge", "cn-only", names("www.example.com"), asDefault))},
			errors:    []want{{hostPath + ".certificate.alias", `keystore "edge" alias "cn-only": the server certificate ("CN=api.example.com") has no subject alternative name and its Common Name does not cover the hostnames`}},
		},
		{
			name:      "listener hostname not covered by the alias",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:8443", refHost("edge", "api", names("api.example.com", "www.example.com"), asDefault))},
			errors:    []want{{hostPath + ".hostnames[1]", `hostname "www.example.com" is not covered by the server certificate of keystore "edge" alias "api"`}},
		},
		{
			name: "listener with clientCAs and clientTruststore",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:8443", refHost("edge", "api", names("api.example.com"), asDefault,
				verifying("require-and-verify", ca.CertPEM()), func(h *policyv1.ListenerHost) { h.ClientTruststore = "clients" }))},
			errors: []want{{hostPath + ".clientTruststore", "clientCAs and clientTruststore are both given; give one"}},
		},
		{
			name:      "listener alias missing: the fix stores a server certificate",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:8443", refHost("edge", "www", names("api.example.com"), asDefault))},
			errors: []want{{hostPath + ".certificate.alias",
				"store the key pair under that alias (`keywayctl secrets put --keystore edge --alias www --cert CERT.pem --key KEY.pem --usage server`), or fix the name"}},
		},
		{
			name:      "listener clientTruststore without verification",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:8443", refHost("edge", "api", names("api.example.com"), asDefault, clientTruststore("request", "clients")))},
			errors:    []want{{hostPath + ".clientTruststore", "clientTruststore would be ignored with clientAuth: request"}},
		},
		{
			name:      "listener missing client truststore",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:8443", refHost("edge", "api", names("api.example.com"), asDefault, clientTruststore("require-and-verify", "client")))},
			errors:    []want{{hostPath + ".clientTruststore", `truststore "client" does not exist in the secrets service (did you mean "clients"?`}},
		},
		{
			name: "tls-inbound binding with alias and truststore",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:9443"), inboundBinding(t, "public-tls", model.PolicyTLSInbound, "public", map[string]any{
				"hostnames": list("api.example.com"), "requireClientCertificate": true,
				"certificate": ref("edge", "api"), "trustedCA": truststore("clients"),
			})},
		},
		{
			name: "tls-inbound binding with a missing alias and a hostname the alias does not cover",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:9443"), inboundBinding(t, "public-tls", model.PolicyTLSInbound, "public", map[string]any{
				"hostnames": list("www.example.com"), "certificate": ref("edge", "api"), "trustedCA": truststore("clientz"),
			})},
			errors: []want{
				{inCfg + ".hostnames[0]", `hostname "www.example.com" is not covered by the server certificate of keystore "edge" alias "api"`},
				{inCfg + ".trustedCA.truststore", `truststore "clientz" does not exist in the secrets service (did you mean "clients"?`},
			},
		},
		{
			name: "listener host with both certificate forms",
			resources: []*policyv1.Resource{listener("public", "127.0.0.1:8443", &policyv1.ListenerHost{
				Hostnames: names("api.example.com"), Default: true,
				Certificate: &policyv1.KeyPair{Keystore: "edge", Alias: "api", Crt: string(ca.Server("api.example.com").CertPEM)},
			})},
			errors: []want{{hostPath + ".certificate", "certificate has both an inline key pair (crt, key) and a reference (keystore, alias)"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := secretref.Secrets(secrets)
			if tc.secrets != nil || tc.name == "no secrets service configured" {
				s = tc.secrets
			}
			_, rep := model.ValidateContext(context.Background(), tc.resources, model.Env{Secrets: s, Now: time.Now()})
			checkViolations(t, rep, tc.errors, tc.warnings)
		})
	}
}

// A valid reference keeps the names in the model, reports the certificates
// behind it with the reference and version, and asks the secrets service
// once per alias however often it is named.
func TestReferencesInModel(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "Refs CA")
	gw := ca.Client("gateway")
	secrets := &fakeSecrets{
		aliases:     map[secretref.Ref][]*x509.Certificate{{Keystore: "edge", Alias: "gw"}: {gw.Cert}, {Keystore: "edge", Alias: "gw2"}: {gw.Cert}},
		truststores: map[string][]*x509.Certificate{"upstream-cas": {ca.Cert}},
	}
	cfg := func(alias string) map[string]any {
		return map[string]any{"skipValidation": false, "trustedCA": truststore("upstream-cas"), "certificate": ref("edge", alias)}
	}
	resources := []*policyv1.Resource{
		service("orders", "orders.internal:8443"), service("billing", "billing.internal:8443"), service("audit", "audit.internal:8443"),
		binding(t, "orders-mtls", "orders", cfg("gw")), binding(t, "billing-mtls", "billing", cfg("gw")), binding(t, "audit-mtls", "audit", cfg("gw2")),
	}
	objs, rep := model.ValidateContext(context.Background(), resources, model.Env{Secrets: secrets, Now: time.Now()})
	checkViolations(t, rep, nil, nil)
	if n := secrets.calls.Load(); n != 3 {
		t.Errorf("the secrets service was asked %d times, want 3 (edge/gw, edge/gw2, upstream-cas once each)", n)
	}
	orders, billing, audit := objs[3].Binding.Outbound, objs[4].Binding.Outbound, objs[5].Binding.Outbound
	if orders.CertificateRef == nil || *orders.CertificateRef != (secretref.Ref{Keystore: "edge", Alias: "gw"}) || orders.Truststore != "upstream-cas" {
		t.Fatalf("orders keeps %+v / %q, want edge/gw and upstream-cas", orders.CertificateRef, orders.Truststore)
	}
	if orders.Certificate != nil || orders.TrustedCAs != nil {
		t.Error("the model holds material for a reference; it must hold only the names")
	}
	if orders.Fingerprint != billing.Fingerprint {
		t.Error("two contexts naming the same alias and truststore have different fingerprints")
	}
	if orders.Fingerprint == audit.Fingerprint {
		t.Error("contexts naming different aliases share a fingerprint: their pools would mix")
	}
	var found bool
	for _, c := range rep.Certificates {
		if c.Field == "resources[3].policyBinding.spec.config.certificate.alias" {
			found = true
			if c.Reference != "alias/edge/gw" || c.Version != "3" || c.Fingerprint != gw.Fingerprint() || !c.NotAfter.Equal(gw.Cert.NotAfter) || c.Summary == nil {
				t.Errorf("certificate info %+v, want alias/edge/gw version 3 with the leaf's fingerprint and expiry", c)
			}
		}
	}
	if !found {
		t.Errorf("no certificate info for the referenced alias; got %+v", rep.Certificates)
	}

	// Resolving fills the material and changes the fingerprint with it.
	resolved := orders.Resolve(&gw.TLS, []*x509.Certificate{ca.Cert})
	if resolved.Certificate != &gw.TLS || len(resolved.TrustedCAs) != 1 || resolved.Fingerprint == orders.Fingerprint {
		t.Errorf("resolved context: certificate %v, %d CAs, fingerprint changed %v", resolved.Certificate != nil, len(resolved.TrustedCAs), resolved.Fingerprint != orders.Fingerprint)
	}
	rotated := ca.Client("gateway")
	if orders.Resolve(&rotated.TLS, []*x509.Certificate{ca.Cert}).Fingerprint == resolved.Fingerprint {
		t.Error("a rotated key pair behind the same alias keeps the fingerprint; the node would keep the old pool")
	}
	if orders.Resolve(&gw.TLS, []*x509.Certificate{ca.Cert}).Fingerprint != resolved.Fingerprint {
		t.Error("resolving with the same material twice gives two fingerprints")
	}
}

// A proxy node decodes references without the secrets service: it
// resolves them itself.
func TestDecodeKeepsReferences(t *testing.T) {
	t.Parallel()
	res := binding(t, "orders-mtls", "orders", map[string]any{"skipValidation": false, "trustedCA": truststore("upstream-cas"), "certificate": ref("edge", "gw")})
	obj, err := model.Decode(res)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if o := obj.Binding.Outbound; o.CertificateRef == nil || o.Truststore != "upstream-cas" || !o.References() {
		t.Errorf("decoded %+v, want the references kept", o)
	}
	l, err := model.Decode(listener("public", "127.0.0.1:8443", refHost("edge", "api", names("api.example.com"), asDefault, clientTruststore("require-and-verify", "clients"))))
	if err != nil {
		t.Fatalf("Decode listener: %v", err)
	}
	if h := l.Listener.Hosts[0]; h.CertificateRef == nil || h.ClientTruststore != "clients" || !h.References() {
		t.Errorf("decoded host %+v, want the references kept", h)
	}
}

// SecretUses finds every reference a stored resource makes to the secrets
// service, with the field that holds it: what the secrets service checks
// before it deletes an alias or a truststore.
func TestSecretUses(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "uses CA")
	outbound := binding(t, "orders-mtls", "orders", map[string]any{
		"skipValidation": false,
		"trustedCA":      map[string]any{"truststore": "upstream-cas"},
		"certificate":    map[string]any{"keystore": "edge", "alias": "gw"},
	})
	inline := binding(t, "inline", "orders", with(verified(ca), "certificate", clientCert(ca.Client("gw"))))
	lst := listener("public", "127.0.0.1:8443",
		&policyv1.ListenerHost{Hostnames: names("a.example.com"), Certificate: &policyv1.KeyPair{Keystore: "edge", Alias: "web"},
			ClientAuth: "require-and-verify", ClientTruststore: "partners"},
		host(ca.Server("b.example.com"), names("b.example.com")))
	alias := func(ks, a string) *secretref.Ref { return &secretref.Ref{Keystore: ks, Alias: a} }
	for _, tc := range []struct {
		name string
		res  *policyv1.Resource
		want []model.SecretUse
	}{
		{"tls-outbound with references", outbound, []model.SecretUse{
			{Field: "policyBinding.spec.config.trustedCA.truststore", Truststore: "upstream-cas"},
			{Field: "policyBinding.spec.config.certificate", Alias: alias("edge", "gw")},
		}},
		{"inline PEM", inline, nil},
		{"listener", lst, []model.SecretUse{
			{Field: "listener.spec.hosts[0].certificate", Alias: alias("edge", "web")},
			{Field: "listener.spec.hosts[0].clientTruststore", Truststore: "partners"},
		}},
		{"service", service("orders", "orders.internal:8443"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := model.SecretUses(tc.res)
			eq := func(a, b model.SecretUse) bool {
				return a.Field == b.Field && a.Truststore == b.Truststore && (a.Alias == nil) == (b.Alias == nil) && (a.Alias == nil || *a.Alias == *b.Alias)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("SecretUses = %+v, want %+v", got, tc.want)
			}
			for _, w := range tc.want {
				if !slices.ContainsFunc(got, func(g model.SecretUse) bool { return eq(g, w) }) {
					t.Errorf("SecretUses = %+v, lacks %+v", got, w)
				}
			}
		})
	}
}

// A reference to a secret whose newest backend version the secrets service
// rejected: applied with a warning while an older version is served,
// refused with the rejection when none is.
func TestValidateReferencesToRejectedSecrets(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "Rejected CA")
	const why = "version 4 in the secrets backend was rejected (key_mismatch): the private_key field does not match the certificate"
	secrets := &fakeSecrets{
		aliases: map[secretref.Ref][]*x509.Certificate{
			{Keystore: "edge", Alias: "gw"}:    {ca.Client("gateway").Cert},
			{Keystore: "edge", Alias: "fresh"}: nil,
		},
		truststores: map[string][]*x509.Certificate{"upstream-cas": {ca.Cert}},
		rejected:    map[string]string{"edge/gw": why, "edge/fresh": why, "upstream-cas": why},
	}
	const config = "resources[1].policyBinding.spec.config"
	_, rep := model.ValidateContext(context.Background(), withService(t, map[string]any{
		"skipValidation": false, "trustedCA": truststore("upstream-cas"), "certificate": ref("edge", "gw"),
	}), model.Env{Secrets: secrets, Now: time.Now()})
	checkViolations(t, rep, nil, []want{
		{config + ".certificate", `keystore "edge" alias "gw": ` + why + "; version 3 is served until a good version is stored"},
		{config + ".trustedCA.truststore", `truststore "upstream-cas": ` + why + "; version 1 is served until a good version is stored"},
	})
	_, rep = model.ValidateContext(context.Background(), withService(t, with(verified(ca), "certificate", ref("edge", "fresh"))),
		model.Env{Secrets: secrets, Now: time.Now()})
	checkViolations(t, rep, []want{
		{config + ".certificate", `keystore "edge" alias "fresh" has no version the secrets service serves: ` + why + "; store a good certificate chain and key under it"},
	}, nil)
}
