package model_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
)

func TestValidateRevocation(t *testing.T) {
	t.Parallel()
	server, clients := testca.New(t, "server-ca"), testca.New(t, "client-ca")
	cert := server.Server("test.com")
	const at = host0 + ".revocation"
	withRevocation := func(r *policyv1.Revocation, clientAuth string) []*policyv1.Resource {
		opts := []func(*policyv1.ListenerHost){asDefault, func(h *policyv1.ListenerHost) { h.Revocation = r }}
		if clientAuth != "" {
			opts = append(opts, verifying(clientAuth, clients.CertPEM()))
		}
		return []*policyv1.Resource{listener("public", "127.0.0.1:8443", host(cert, names("test.com"), opts...))}
	}
	no := false
	tests := []struct {
		name       string
		resources  func(t *testing.T) []*policyv1.Resource
		errors     []want
		warnings   []want
		want       model.Revocation
		checkValue bool
	}{
		{
			name: "hard-fail with a CRL URL, a file and OCSP",
			resources: func(*testing.T) []*policyv1.Resource {
				return withRevocation(&policyv1.Revocation{Mode: "hard-fail", Crl: []string{"https://ca.example.com/ca.crl", "file:///etc/keyway/ca.crl"}, Ocsp: true, OcspResponder: "http://ocsp.example.com"}, "require-and-verify")
			},
			want:       model.Revocation{Mode: revocation.HardFail, CRLs: []string{"https://ca.example.com/ca.crl", "/etc/keyway/ca.crl"}, DistributionPoints: true, OCSP: true, OCSPResponder: "http://ocsp.example.com"},
			checkValue: true,
		},
		{
			name: "soft-fail with distribution points only",
			resources: func(*testing.T) []*policyv1.Resource {
				return withRevocation(&policyv1.Revocation{Mode: "soft-fail"}, "verify-if-given")
			},
			want:       model.Revocation{Mode: revocation.SoftFail, DistributionPoints: true},
			checkValue: true,
		},
		{
			name: "hard-fail with distribution points only warns",
			resources: func(*testing.T) []*policyv1.Resource {
				return withRevocation(&policyv1.Revocation{Mode: "hard-fail"}, "require-and-verify")
			},
			warnings: []want{{at + ".mode", "names no CRL distribution point is refused"}},
		},
		{
			name: "off with settings warns and checks nothing",
			resources: func(*testing.T) []*policyv1.Resource {
				return withRevocation(&policyv1.Revocation{Mode: "off", Crl: []string{"https://ca.example.com/ca.crl"}}, "")
			},
			warnings:   []want{{at, "mode is off"}},
			want:       model.Revocation{Mode: revocation.Off},
			checkValue: true,
		},
		{
			name: "every mistake at its path",
			resources: func(*testing.T) []*policyv1.Resource {
				return withRevocation(&policyv1.Revocation{Mode: "hard-fail", Crl: []string{"ca.crl", "ldap://dir/cn=ca", "https://ca.example.com/ca.crl", "https://ca.example.com/ca.crl"}, OcspResponder: "ftp://ocsp"}, "require-and-verify")
			},
			errors: []want{
				{at + ".crl[0]", "relative path"},
				{at + ".crl[1]", "LDAP is not supported"},
				{at + ".crl[3]", "is also crl[2]"},
				{at + ".ocspResponder", "not an http:// or https:// URL"},
			},
		},
		{
			name: "mode is required and spelled",
			resources: func(*testing.T) []*policyv1.Resource {
				return withRevocation(&policyv1.Revocation{Mode: "hardfail"}, "require-and-verify")
			},
			errors: []want{{at + ".mode", `did you mean "hard-fail"?`}},
		},
		{
			name: "mode missing",
			resources: func(*testing.T) []*policyv1.Resource {
				return withRevocation(&policyv1.Revocation{Crl: []string{"https://ca.example.com/ca.crl"}}, "require-and-verify")
			},
			errors: []want{{at + ".mode", "revocation.mode is required"}},
		},
		{
			name: "needs verified client certificates",
			resources: func(*testing.T) []*policyv1.Resource {
				return withRevocation(&policyv1.Revocation{Mode: "soft-fail"}, "")
			},
			errors: []want{{at + ".mode", "clientAuth: none does not verify them"}},
		},
		{
			name: "nothing to check against",
			resources: func(*testing.T) []*policyv1.Resource {
				return withRevocation(&policyv1.Revocation{Mode: "soft-fail", DistributionPoints: &no}, "require-and-verify")
			},
			errors: []want{{at, "nothing to check against"}},
		},
		{
			name: "responder without ocsp",
			resources: func(*testing.T) []*policyv1.Resource {
				return withRevocation(&policyv1.Revocation{Mode: "soft-fail", OcspResponder: "http://ocsp.example.com"}, "require-and-verify")
			},
			errors: []want{{at + ".ocspResponder", "only with ocsp: true"}},
		},
		{
			name: "too many CRLs",
			resources: func(*testing.T) []*policyv1.Resource {
				var crls []string
				for i := range model.MaxCRLs + 1 {
					crls = append(crls, "https://ca.example.com/"+strings.Repeat("c", i+1)+".crl")
				}
				return withRevocation(&policyv1.Revocation{Mode: "soft-fail", Crl: crls}, "require-and-verify")
			},
			errors: []want{{at + ".crl", "at most 16"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs, rep := model.Validate(tc.resources(t), nil, time.Now())
			checkViolations(t, rep, tc.errors, tc.warnings)
			if !tc.checkValue {
				return
			}
			got := objs[0].Listener.Hosts[0].Revocation
			if got.Mode != tc.want.Mode || !slices.Equal(got.CRLs, tc.want.CRLs) || got.DistributionPoints != tc.want.DistributionPoints || got.OCSP != tc.want.OCSP || got.OCSPResponder != tc.want.OCSPResponder {
				t.Fatalf("revocation = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestValidateTLSInboundRevocation(t *testing.T) {
	t.Parallel()
	server, clients := testca.New(t, "server-ca"), testca.New(t, "client-ca")
	cert := server.Server("test.com")
	bare := listener("public", "127.0.0.1:9443")
	cfg := func(rev any) map[string]any {
		return map[string]any{"requireClientCertificate": true, "trustedCA": string(clients.CertPEM()), "certificate": clientCert(cert), "revocation": rev}
	}
	const at = inCfg + ".revocation"

	objs, rep := model.Validate([]*policyv1.Resource{bare, inboundBinding(t, "tls", model.PolicyTLSInbound, "public", cfg(map[string]any{
		"mode": "hard-fail", "crl": list("https://ca.example.com/ca.crl"), "distributionPoints": false, "ocsp": true,
	}))}, nil, time.Now())
	checkViolations(t, rep, nil, nil)
	got := objs[1].Binding.Inbound.Host.Revocation
	if got.Mode != revocation.HardFail || !slices.Equal(got.CRLs, []string{"https://ca.example.com/ca.crl"}) || got.DistributionPoints || !got.OCSP {
		t.Fatalf("revocation = %+v", got)
	}

	_, rep = model.Validate([]*policyv1.Resource{bare, inboundBinding(t, "tls", model.PolicyTLSInbound, "public", cfg(map[string]any{
		"mode": "hard-fail", "distributionPoint": false, "ocsp": "yes",
	}))}, nil, time.Now())
	checkViolations(t, rep, []want{
		{at + ".distributionPoint", `did you mean "distributionPoints"?`},
		{at + ".ocsp", "must be a boolean"},
	}, nil)

	_, rep = model.Validate([]*policyv1.Resource{bare, inboundBinding(t, "tls", model.PolicyTLSInbound, "public", cfg("hard-fail"))}, nil, time.Now())
	checkViolations(t, rep, []want{{at, "must be an object"}}, nil)
}

func TestRevocationChangesFingerprint(t *testing.T) {
	t.Parallel()
	server, clients := testca.New(t, "server-ca"), testca.New(t, "client-ca")
	cert := server.Server("test.com")
	fp := func(r *policyv1.Revocation) string {
		objs, rep := model.Validate([]*policyv1.Resource{listener("public", "127.0.0.1:8443",
			host(cert, names("test.com"), asDefault, verifying("require-and-verify", clients.CertPEM()), func(h *policyv1.ListenerHost) { h.Revocation = r }))}, nil, time.Now())
		if !rep.OK() {
			t.Fatalf("errors:%s", dump(rep.Errors))
		}
		return objs[0].Listener.Hosts[0].Fingerprint
	}
	none, off := fp(nil), fp(&policyv1.Revocation{Mode: "off"})
	soft, hard := fp(&policyv1.Revocation{Mode: "soft-fail"}), fp(&policyv1.Revocation{Mode: "hard-fail"})
	if none != off {
		t.Error("revocation off changes the fingerprint of a host without revocation")
	}
	if soft == none || hard == soft {
		t.Errorf("fingerprints none %s, soft %s, hard %s: want the mode to count", none, soft, hard)
	}
}

func TestValidateTLSOutboundRevocation(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	const at = cfgAt + ".revocation"
	validate := func(t *testing.T, cfg map[string]any) (*model.OutboundTLS, model.Report) {
		t.Helper()
		objs, rep := model.Validate(withService(t, cfg), nil, time.Now())
		if objs == nil || objs[1].Binding == nil {
			return nil, rep
		}
		return objs[1].Binding.Outbound, rep
	}

	t.Run("parsed", func(t *testing.T) {
		t.Parallel()
		o, rep := validate(t, with(verified(ca), "revocation", map[string]any{
			"mode": "hard-fail", "crl": list("https://ca.example.com/ca.crl"), "distributionPoints": false, "ocsp": true, "ocspResponder": "http://ocsp.example.com",
		}))
		checkViolations(t, rep, nil, nil)
		want := model.Revocation{Mode: revocation.HardFail, CRLs: []string{"https://ca.example.com/ca.crl"}, OCSP: true, OCSPResponder: "http://ocsp.example.com"}
		if !reflect.DeepEqual(o.Revocation, want) {
			t.Fatalf("revocation = %+v, want %+v", o.Revocation, want)
		}
	})
	t.Run("field errors", func(t *testing.T) {
		t.Parallel()
		_, rep := validate(t, with(verified(ca), "revocation", map[string]any{
			"mode": "hard-fial", "crl": list("ftp://ca.example.com/ca.crl"), "distributionPoint": false, "ocsp": "yes",
		}))
		checkViolations(t, rep, []want{
			{at + ".mode", `did you mean "hard-fail"?`},
			{at + ".distributionPoint", `did you mean "distributionPoints"?`},
			{at + ".ocsp", "must be a boolean"},
		}, nil)
		_, rep = validate(t, with(verified(ca), "revocation", map[string]any{
			"mode": "soft-fail", "crl": list("ftp://ca.example.com/ca.crl", "relative.crl"),
		}))
		checkViolations(t, rep, []want{{at + ".crl[0]", "ftp"}, {at + ".crl[1]", "relative.crl"}}, nil)
		_, rep = validate(t, with(verified(ca), "revocation", map[string]any{"crl": list("https://ca.example.com/ca.crl")}))
		checkViolations(t, rep, []want{{at + ".mode", "an upstream certificate whose revocation status is unknown"}}, nil)
		_, rep = validate(t, with(verified(ca), "revocation", "hard-fail"))
		checkViolations(t, rep, []want{{at, "must be an object"}}, nil)
		_, rep = validate(t, with(verified(ca), "revocation", map[string]any{"mode": "hard-fail", "distributionPoints": false}))
		checkViolations(t, rep, []want{{at, "revocation has nothing to check against"}}, nil)
	})
	t.Run("skipValidation", func(t *testing.T) {
		t.Parallel()
		o, rep := validate(t, map[string]any{"skipValidation": true, "revocation": map[string]any{"mode": "hard-fail"}})
		checkViolations(t, rep, nil, []want{{cfgAt + ".skipValidation", "skipValidation is true"}, {at, "revocation is ignored because skipValidation is true"}})
		if o.Revocation.On() {
			t.Fatalf("revocation = %+v with skipValidation, want off", o.Revocation)
		}
	})
	t.Run("fingerprint", func(t *testing.T) {
		t.Parallel()
		fp := func(rev any) string {
			cfg := verified(ca)
			if rev != nil {
				cfg = with(cfg, "revocation", rev)
			}
			o, rep := validate(t, cfg)
			if !rep.OK() {
				t.Fatalf("errors:%s", dump(rep.Errors))
			}
			return o.Fingerprint
		}
		none, off := fp(nil), fp(map[string]any{"mode": "off"})
		soft, hard := fp(map[string]any{"mode": "soft-fail"}), fp(map[string]any{"mode": "hard-fail"})
		crl := fp(map[string]any{"mode": "hard-fail", "crl": list("https://ca.example.com/ca.crl")})
		if none != off {
			t.Error("revocation off changes the fingerprint of a context without revocation")
		}
		if soft == none || hard == soft || crl == hard {
			t.Errorf("fingerprints none %s, soft %s, hard %s, with a crl %s: want the setting to count", none, soft, hard, crl)
		}
	})
}
