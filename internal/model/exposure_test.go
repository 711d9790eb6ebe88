package model_test

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// A route that needs a verified client certificate and is reachable where
// none is verified (the plain-HTTP port, a Listener host that does not
// verify) is accepted with a warning that names the route, where it is
// reachable and the fix.
func TestIdentityRouteExposureWarnings(t *testing.T) {
	t.Parallel()
	ca, clients := testca.New(t, "ca"), testca.New(t, "clients")
	server := ca.Server("mtls.test", "open.test")
	mtls := func() *policyv1.Resource {
		return listener("mtls", "0.0.0.0:8443", host(server, names("mtls.test"), asDefault, verifying("require-and-verify", clients.CertPEM())))
	}
	open := func() *policyv1.Resource {
		return listener("open", "0.0.0.0:9443", host(server, names("open.test"), asDefault))
	}
	admin := func(mod func(*policyv1.RouteSpec)) *policyv1.Resource {
		spec := &policyv1.RouteSpec{Path: "/admin/", Service: "app", ClientCertificate: "required"}
		if mod != nil {
			mod(spec)
		}
		return routeSpec("admin", spec)
	}
	allowOps := func(s *policyv1.RouteSpec) {
		s.ClientCertificate = ""
		s.Allow = []*policyv1.IdentityRule{{SpiffeId: "spiffe://example.org/ops"}}
	}
	storedAdmin := &fakeCatalog{
		refs:   []model.Ref{{Kind: model.KindService, Name: "app"}},
		routes: []model.Route{{Name: "admin", Path: "/admin/", Service: "app", ClientCertificate: true}, {Name: "public", Path: "/", Service: "app"}},
	}
	routeAt := "resources[1].route.spec"

	tests := []struct {
		name     string
		build    func() []*policyv1.Resource
		stored   model.Catalog
		warnings []want // exactly these
	}{
		{
			name: "required route without listeners",
			build: func() []*policyv1.Resource {
				return []*policyv1.Resource{service("app", "app.internal:443"), admin(nil)}
			},
			warnings: []want{{routeAt, `route "admin" needs a verified client certificate and names no listeners, so it is also served on the proxy nodes' plain-HTTP port (keyway-proxy --listen, 127.0.0.1:8080 by default)`}},
		},
		{
			name: "allow rules without listeners",
			build: func() []*policyv1.Resource {
				return []*policyv1.Resource{service("app", "app.internal:443"), admin(allowOps)}
			},
			warnings: []want{{routeAt, "add listeners: [<listener>]"}},
		},
		{
			name: "without listeners, a verifying Listener to name",
			build: func() []*policyv1.Resource {
				return []*policyv1.Resource{service("app", "app.internal:443"), admin(nil), mtls()}
			},
			warnings: []want{{routeAt, "add listeners: [mtls]"}},
		},
		{
			name: "without listeners, and a Listener that does not verify",
			build: func() []*policyv1.Resource {
				return []*policyv1.Resource{service("app", "app.internal:443"), admin(nil), mtls(), open()}
			},
			warnings: []want{
				{routeAt, "plain-HTTP port"},
				{routeAt, `is served on Listener "open" at 0.0.0.0:9443, whose host open.test (clientAuth: none) does not verify client certificates`},
			},
		},
		{
			name: "listeners naming one that does not verify",
			build: func() []*policyv1.Resource {
				return []*policyv1.Resource{service("app", "app.internal:443"), admin(func(s *policyv1.RouteSpec) {
					allowOps(s)
					s.Listeners = []string{"mtls", "open"}
				}), mtls(), open()}
			},
			warnings: []want{{routeAt + ".listeners[1]", `route "admin" needs a verified client certificate and is served on Listener "open" at 0.0.0.0:9443`}},
		},
		{
			name: "listeners that verify",
			build: func() []*policyv1.Resource {
				return []*policyv1.Resource{service("app", "app.internal:443"), admin(func(s *policyv1.RouteSpec) { s.Listeners = []string{"mtls"} }), mtls(), open()}
			},
		},
		{
			name: "route without client-certificate rules",
			build: func() []*policyv1.Resource {
				return []*policyv1.Resource{service("app", "app.internal:443"), route("public", "/", "app"), open()}
			},
		},
		{
			name:     "a Listener that does not verify, with a stored route that needs a certificate",
			build:    func() []*policyv1.Resource { return []*policyv1.Resource{open()} },
			stored:   storedAdmin,
			warnings: []want{{"resources[0].listener.spec.hosts", `Listener "open" at 0.0.0.0:9443 serves routes that need a verified client certificate ("admin"), and its host open.test does not verify client certificates (clientAuth: none)`}},
		},
		{
			name:   "a verifying Listener, with a stored route that needs a certificate",
			build:  func() []*policyv1.Resource { return []*policyv1.Resource{mtls()} },
			stored: storedAdmin,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, rep := model.Validate(tt.build(), tt.stored, time.Now())
			checkViolations(t, rep, nil, tt.warnings)
			if len(rep.Warnings) != len(tt.warnings) {
				t.Errorf("got %d warnings, want %d:%s", len(rep.Warnings), len(tt.warnings), dump(rep.Warnings))
			}
			for _, w := range rep.Warnings {
				if strings.Contains(w.Message, "needs a verified client certificate") && !strings.Contains(w.Message, "401") {
					t.Errorf("%s: %q does not say what such requests get", w.Field, w.Message)
				}
			}
		})
	}
}

// The proxy's refusal and validation's warning agree on which hosts verify.
func TestListenerHostVerifiesClients(t *testing.T) {
	t.Parallel()
	clients := testca.New(t, "clients")
	for _, tt := range []struct {
		host model.ListenerHost
		want bool
	}{
		{model.ListenerHost{ClientAuth: tls.NoClientCert}, false},
		{model.ListenerHost{ClientAuth: tls.RequestClientCert}, false},
		{model.ListenerHost{ClientAuth: tls.RequireAnyClientCert}, false},
		{model.ListenerHost{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: []*x509.Certificate{clients.Cert}}, true},
		{model.ListenerHost{ClientAuth: tls.RequireAndVerifyClientCert, ClientTruststore: "clients"}, true},
	} {
		if got := tt.host.VerifiesClients(); got != tt.want {
			t.Errorf("clientAuth %v with %d CAs, truststore %q: VerifiesClients() = %v, want %v", tt.host.ClientAuth, len(tt.host.ClientCAs), tt.host.ClientTruststore, got, tt.want)
		}
	}
}
