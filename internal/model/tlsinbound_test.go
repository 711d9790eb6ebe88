package model_test

import (
	"crypto/tls"
	"slices"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// inboundBinding is a tls-inbound (policyRef name policy) binding of
// Listener target with cfg.
func inboundBinding(t testing.TB, name, policy, target string, cfg map[string]any) *policyv1.Resource {
	res := binding(t, name, target, cfg)
	spec := res.GetPolicyBinding().GetSpec()
	spec.TargetRef.Kind, spec.PolicyRef.Name = model.KindListener, policy
	return res
}

// Paths into the binding at resources[1] (resources[0] is its Listener).
const (
	inAt  = "resources[1].policyBinding.spec"
	inCfg = inAt + ".config"
)

func TestValidateTLSInbound(t *testing.T) {
	t.Parallel()
	server := testca.New(t, "server-ca")
	clients := testca.New(t, "client-ca")
	testCom := server.Server("test.com", "www.test.com")
	other := server.Server("other.org")
	bare := func() *policyv1.Resource { return listener("public", "127.0.0.1:9443") }
	withHost := func() *policyv1.Resource {
		return listener("public", "127.0.0.1:9443", host(other, names("other.org"), asDefault))
	}

	tests := []struct {
		name     string
		build    func(t *testing.T) []*policyv1.Resource
		stored   model.Catalog
		errors   []want
		warnings []want
		check    func(t *testing.T, objs []model.Object)
	}{
		{
			name: "flex tls policy as flex writes it: port-level context with mTLS",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{bare(), inboundBinding(t, "public-tls", model.FlexPolicyTLS, "public", map[string]any{
					"requireClientCertificate": true,
					"trustedCA":                string(clients.CertPEM()),
					"certificate":              clientCert(testCom),
					"alpn":                     list("h2", "http/1.1"),
					"minversion":               "1.2",
					"maxversion":               "1.3",
				})}
			},
			check: func(t *testing.T, objs []model.Object) {
				b := objs[1].Binding
				if b.Policy != model.PolicyTLSInbound || b.Target != (model.Ref{Kind: model.KindListener, Name: "public"}) || b.Inbound == nil {
					t.Fatalf("binding = %+v", b)
				}
				h := b.Inbound.Host
				if !b.Inbound.Default || len(h.Hostnames) != 0 {
					t.Errorf("default %v, hostnames %v; want the port-level default", b.Inbound.Default, h.Hostnames)
				}
				if h.ClientAuth != tls.RequireAndVerifyClientCert || len(h.ClientCAs) != 1 || h.Certificate == nil || h.Fingerprint == "" {
					t.Errorf("host = auth %v, %d CAs, cert %v, fingerprint %q", h.ClientAuth, len(h.ClientCAs), h.Certificate != nil, h.Fingerprint)
				}
				served, errs := objs[0].Listener.WithInbound([]*model.Binding{b})
				if errs != nil || len(served.Hosts) != 1 || served.Default != 0 {
					t.Errorf("served = %+v, errs %v", served, errs)
				}
			},
		},
		{
			name: "trustedCA alone verifies certificates clients give",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{withHost(), inboundBinding(t, "test-com", model.PolicyTLSInbound, "public", map[string]any{
					"hostnames":   list("test.com", "www.test.com"),
					"trustedCA":   string(clients.CertPEM()),
					"certificate": clientCert(testCom),
					"verifyDepth": 2,
				})}
			},
			check: func(t *testing.T, objs []model.Object) {
				h := objs[1].Binding.Inbound.Host
				if h.ClientAuth != tls.VerifyClientCertIfGiven || h.VerifyDepth != 2 || objs[1].Binding.Inbound.Default {
					t.Errorf("host = auth %v depth %d default %v", h.ClientAuth, h.VerifyDepth, objs[1].Binding.Inbound.Default)
				}
				served, errs := objs[0].Listener.WithInbound([]*model.Binding{objs[1].Binding})
				if errs != nil || len(served.Hosts) != 2 || served.Default != 0 || !slices.Equal(served.Hosts[1].Hostnames, []string{"test.com", "www.test.com"}) {
					t.Errorf("served = %+v, errs %v", served, errs)
				}
			},
		},
		{
			name: "certificate, trustedCA and mode problems named by field",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{bare(), inboundBinding(t, "public-tls", model.PolicyTLSInbound, "public", map[string]any{
					"hostnames":                list("api.test.com"),
					"requireClientCertificate": true,
					"clientAuth":               "require-and-verfy",
					"certificate":              map[string]any{"crt": string(testCom.CertPEM)},
					"skipValidation":           false,
				})}
			},
			errors: []want{
				{inCfg + ".skipValidation", `unknown field "skipValidation" in tls-inbound config`},
				{inCfg + ".requireClientCertificate", "give either requireClientCertificate (Flex's switch) or clientAuth"},
				{inCfg + ".clientAuth", `did you mean "require-and-verify"?`},
				{inCfg + ".certificate.key", "certificate.key is missing"},
			},
		},
		{
			name: "require without trustedCA; trustedCA with a mode that does not verify",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{withHost(),
					inboundBinding(t, "a", model.PolicyTLSInbound, "public", map[string]any{
						"hostnames": list("test.com"), "requireClientCertificate": true, "certificate": clientCert(testCom),
					}),
					inboundBinding(t, "b", model.PolicyTLSInbound, "public", map[string]any{
						"hostnames": list("www.test.com"), "clientAuth": "request", "trustedCA": string(clients.CertPEM()), "certificate": clientCert(testCom),
					}),
				}
			},
			errors: []want{
				{inCfg + ".trustedCA", "trustedCA is required to verify client certificates (clientAuth: require-and-verify)"},
				{"resources[2].policyBinding.spec.config.trustedCA", "trustedCA would be ignored with clientAuth: request"},
			},
		},
		{
			name: "hostname not covered by the certificate",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{withHost(), inboundBinding(t, "x", model.PolicyTLSInbound, "public", map[string]any{
					"hostnames": list("api.example.net"), "certificate": clientCert(testCom),
				})}
			},
			errors: []want{{inCfg + ".hostnames[0]", `hostname "api.example.net" is not covered by the server certificate`}},
		},
		{
			name: "hostname already served by the Listener, and a second default",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{withHost(),
					inboundBinding(t, "a", model.PolicyTLSInbound, "public", map[string]any{
						"hostnames": list("other.org"), "certificate": clientCert(other),
					}),
					inboundBinding(t, "b", model.PolicyTLSInbound, "public", map[string]any{"certificate": clientCert(testCom)}),
				}
			},
			errors: []want{
				{inCfg, `hostname "other.org" is already served by the Listener's own hosts on Listener "public"`},
				{"resources[2].policyBinding.spec.config", `Listener "public" already has a default host (the Listener's own default host)`},
			},
		},
		{
			name: "a stored binding's hostname taken by the Listener's new hosts",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{listener("public", "127.0.0.1:9443", host(testCom, names("test.com"), asDefault))}
			},
			stored: &fakeCatalog{
				refs: []model.Ref{{Kind: model.KindListener, Name: "public"}},
				bindings: []model.Binding{{Name: "stored-tls", Policy: model.PolicyTLSInbound, Target: model.Ref{Kind: model.KindListener, Name: "public"},
					Inbound: &model.InboundTLS{Host: model.ListenerHost{Hostnames: []string{"test.com"}}}}},
			},
			errors: []want{{"resources[0].listener.spec.hosts", `hostname "test.com" is already served by the Listener's own hosts on Listener "public"; each hostname is served by one host: remove it from one of them (stored tls-inbound binding "stored-tls")`}},
		},
		{
			name: "target must be an existing Listener",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("orders", "orders:443"), func() *policyv1.Resource {
					r := inboundBinding(t, "x", model.PolicyTLSInbound, "nowhere", map[string]any{"certificate": clientCert(testCom)})
					r.GetPolicyBinding().Spec.TargetRef.Kind = model.KindService
					return r
				}()}
			},
			errors: []want{
				{inAt + ".targetRef.kind", `targetRef.kind "Service" does not take tls-inbound bindings; tls-inbound attaches to a Listener`},
				{inAt + ".targetRef.name", `Listener "nowhere" does not exist`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stored := tt.stored
			if stored == nil {
				stored = &fakeCatalog{}
			}
			objs, rep := model.Validate(tt.build(t), stored, time.Now())
			checkViolations(t, rep, tt.errors, tt.warnings)
			if tt.check != nil && rep.OK() {
				tt.check(t, objs)
			}
		})
	}
}

func TestValidateRouteListeners(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	lis := listener("public", "127.0.0.1:9443", host(ca.Server("test.com"), names("test.com"), asDefault))
	r := routeSpec("admin", &policyv1.RouteSpec{Path: "/admin/", Service: "orders", Listeners: []string{"public", "Bad_Name", "public", "private"}})
	_, rep := model.Validate([]*policyv1.Resource{lis, service("orders", "orders:443"), r}, &fakeCatalog{}, time.Now())
	checkViolations(t, rep, []want{
		{"resources[2].route.spec.listeners[1]", `"Bad_Name" is not a Listener name`},
		{"resources[2].route.spec.listeners[2]", `Listener "public" is listed twice`},
		{"resources[2].route.spec.listeners", `Listener "private" does not exist`},
	}, nil)

	r = routeSpec("admin", &policyv1.RouteSpec{Path: "/admin/", Service: "orders", Listeners: []string{"public"}})
	objs, rep := model.Validate([]*policyv1.Resource{lis, service("orders", "orders:443"), r}, &fakeCatalog{}, time.Now())
	checkViolations(t, rep, nil, nil)
	if got := objs[2].Route.Listeners; !slices.Equal(got, []string{"public"}) {
		t.Errorf("route listeners = %v, want [public]", got)
	}
}
