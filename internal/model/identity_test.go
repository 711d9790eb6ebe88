package model_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/identity"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// Path of the route spec in identityRequest.
const routeAt = "resources[1].route.spec"

// identityRequest is a Service and a Route to it with the given client
// certificate mode and rules: the route is resources[1].
func identityRequest(mode string, rules ...*policyv1.IdentityRule) []*policyv1.Resource {
	return []*policyv1.Resource{
		service("admin", "admin.internal:8443"),
		routeSpec("admin", &policyv1.RouteSpec{Path: "/admin/", Service: "admin", ClientCertificate: mode, Allow: rules}),
	}
}

func TestValidateRouteIdentity(t *testing.T) {
	t.Parallel()
	digest := sha256.Sum256([]byte("a public key"))
	b64, hexDigest := base64.StdEncoding.EncodeToString(digest[:]), hex.EncodeToString(digest[:])

	tests := []struct {
		name     string
		mode     string
		rules    []*policyv1.IdentityRule
		errors   []want
		warnings []want
		// wantCert and wantAllow are checked when there are no errors.
		wantCert  bool
		wantAllow []identity.Rule
	}{
		{name: "no client certificate settings"},
		{name: "optional", mode: "optional"},
		{name: "required without rules", mode: "required", wantCert: true},
		{
			name:   "misspelled mode",
			mode:   "require",
			errors: []want{{routeAt + ".clientCertificate", `clientCertificate "require" is not supported; use "optional" (the default: the route serves clients with or without a certificate) or "required" (requests without a verified client certificate get 401): did you mean "required"?`}},
		},
		{
			name:   "unknown mode",
			mode:   "true",
			errors: []want{{routeAt + ".clientCertificate", `clientCertificate "true" is not supported; use "optional"`}},
		},
		{
			name: "one rule of each kind, normalized",
			rules: []*policyv1.IdentityRule{
				{DnsName: "Admin.Example.com"},
				{DnsName: "*.ops.example.com"},
				{Uri: "HTTPS://clients.example.com/billing"},
				{SpiffeId: "spiffe://example.org/ns/ops/sa/admin"},
				{SpiffeId: "spiffe://example.org/*"},
				{Cn: "admin"},
				{Ou: "ops"},
				{SpkiSha256: b64},
				{SpkiSha256: hexDigest[:62] + "00"},
			},
			wantCert: true,
			wantAllow: []identity.Rule{
				{DNSName: "admin.example.com"},
				{DNSName: "*.ops.example.com"},
				{URI: "https://clients.example.com/billing"},
				{SPIFFEID: "spiffe://example.org/ns/ops/sa/admin"},
				{SPIFFEID: "spiffe://example.org/*"},
				{CN: "admin"},
				{OU: "ops"},
				{SPKISHA256: digest[:]},
				{SPKISHA256: append(slices.Clone(digest[:31]), 0)},
			},
		},
		{
			name:  "empty rule",
			rules: []*policyv1.IdentityRule{{}},
			errors: []want{{routeAt + ".allow[0]",
				"the rule is empty; set exactly one of dnsName, uri, spiffeID, cn, ou, spkiSHA256"}},
		},
		{
			name:  "two fields in one rule",
			rules: []*policyv1.IdentityRule{{Cn: "admin"}, {Cn: "admin", Ou: "ops", SpiffeId: "spiffe://example.org/admin"}},
			errors: []want{{routeAt + ".allow[1]",
				"the rule sets spiffeID, cn and ou; a rule matches one property of the certificate: keep one field, or split it into one rule per field"}},
		},
		{
			name: "bad dnsName",
			rules: []*policyv1.IdentityRule{
				{DnsName: "admin.example.com:443"},
				{DnsName: "a.*.example.com"},
				{DnsName: "10.0.0.1"},
				{DnsName: "admin.example.com."},
			},
			errors: []want{
				{routeAt + ".allow[0].dnsName", `dnsName "admin.example.com:443" is not a DNS name (letters, digits, hyphens and dots, without port, scheme or trailing dot)`},
				{routeAt + ".allow[1].dnsName", "a wildcard is allowed only as the whole first label"},
				{routeAt + ".allow[2].dnsName", `dnsName "10.0.0.1" is an IP address`},
				{routeAt + ".allow[3].dnsName", "is not a DNS name"},
			},
		},
		{
			name:  "bad uri",
			rules: []*policyv1.IdentityRule{{Uri: "/clients/billing"}, {Uri: "https://exa mple.com/"}},
			errors: []want{
				{routeAt + ".allow[0].uri", `uri "/clients/billing" is not an absolute URI (it has no scheme); give the SAN URI exactly as the client certificate carries it`},
				{routeAt + ".allow[1].uri", `uri "https://exa mple.com/" is not a URI: invalid character " " in host name`},
			},
		},
		{
			name: "bad spiffeID",
			rules: []*policyv1.IdentityRule{
				{SpiffeId: "https://example.org/admin"},
				{SpiffeId: "spiffe://example.org:8443/admin"},
				{SpiffeId: "spiffe://ops@example.org/admin"},
				{SpiffeId: "spiffe://example.org/admin?x=1"},
				{SpiffeId: "spiffe://Example.org/admin"},
				{SpiffeId: "spiffe://example.org"},
				{SpiffeId: "spiffe://example.org/ns/*"},
				{SpiffeId: "spiffe://example.org/ns//admin"},
				{SpiffeId: "spiffe://example.org/ns/%61dmin"},
				{SpiffeId: "SPIFFE://example.org/admin"},
			},
			errors: []want{
				{routeAt + ".allow[0].spiffeID", `spiffeID "https://example.org/admin" does not start with "spiffe://"; write spiffe://<trust-domain>/<path>`},
				{routeAt + ".allow[1].spiffeID", "has a port"},
				{routeAt + ".allow[2].spiffeID", "has userinfo"},
				{routeAt + ".allow[3].spiffeID", "has a query or fragment"},
				{routeAt + ".allow[4].spiffeID", `has uppercase letters in its trust domain; write "spiffe://example.org/admin"`},
				{routeAt + ".allow[5].spiffeID", `has no path; give the workload's path, or write "spiffe://example.org/*" for any ID of the trust domain`},
				{routeAt + ".allow[6].spiffeID", "a wildcard is allowed only as the whole path"},
				{routeAt + ".allow[7].spiffeID", "has an empty path segment"},
				{routeAt + ".allow[8].spiffeID", `has "%" in its path`},
				{routeAt + ".allow[9].spiffeID", `has an uppercase scheme`},
			},
		},
		{
			name: "bad cn and ou",
			rules: []*policyv1.IdentityRule{
				{Cn: "  "},
				{Cn: " admin"},
				{Cn: "CN=admin, OU=ops"},
				{Ou: "ou=ops"},
			},
			errors: []want{
				{routeAt + ".allow[0].cn", "cn is blank; give the subject's CN exactly"},
				{routeAt + ".allow[1].cn", `cn " admin" has leading or trailing spaces, and matching is exact; write "admin"`},
				{routeAt + ".allow[2].cn", `cn "CN=admin, OU=ops" is written as part of a distinguished name; cn takes the CN value alone: write "admin"`},
				{routeAt + ".allow[3].ou", `write "ops"`},
			},
		},
		{
			name: "bad spkiSHA256",
			rules: []*policyv1.IdentityRule{
				{SpkiSha256: base64.StdEncoding.EncodeToString(digest[:20])},
				{SpkiSha256: base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32))},
				{SpkiSha256: base64.RawStdEncoding.EncodeToString(digest[:])},
				{SpkiSha256: "not a digest"},
				{SpkiSha256: hexDigest[:60]},
			},
			errors: []want{
				{routeAt + ".allow[0].spkiSHA256", "decodes to 20 bytes, not the 32 of a SHA-256"},
				{routeAt + ".allow[1].spkiSHA256", "is in the URL-safe base64 alphabet"},
				{routeAt + ".allow[2].spkiSHA256", "lacks base64 padding; write \"" + b64 + "\""},
				{routeAt + ".allow[3].spkiSHA256", "is neither base64 nor 64 hex digits; give the SHA-256 of the client certificate's SubjectPublicKeyInfo as base64 (standard alphabet with padding: 44 characters ending in \"=\") or as 64 hex digits"},
				{routeAt + ".allow[4].spkiSHA256", "decodes to 45 bytes"},
			},
		},
		{
			name:      "duplicate rules are a warning",
			rules:     []*policyv1.IdentityRule{{DnsName: "admin.example.com"}, {Cn: "admin"}, {DnsName: "ADMIN.example.com"}, {SpkiSha256: b64}, {SpkiSha256: hexDigest}},
			warnings:  []want{{routeAt + ".allow[2]", "the rule is the same as allow[0]; remove one"}, {routeAt + ".allow[4]", "the same as allow[3]"}},
			wantCert:  true,
			wantAllow: []identity.Rule{{DNSName: "admin.example.com"}, {CN: "admin"}, {SPKISHA256: digest[:]}},
		},
		{
			name:      "optional with rules is a warning",
			mode:      "optional",
			rules:     []*policyv1.IdentityRule{{Cn: "admin"}},
			warnings:  []want{{routeAt + ".clientCertificate", "clientCertificate: optional has no effect on a route with allow rules"}},
			wantCert:  true,
			wantAllow: []identity.Rule{{CN: "admin"}},
		},
		{
			name:  "all problems at once",
			mode:  "mandatory",
			rules: []*policyv1.IdentityRule{{Cn: "admin"}, {}, {DnsName: "-bad-.example.com"}, {SpkiSha256: "x"}},
			errors: []want{
				{routeAt + ".clientCertificate", `clientCertificate "mandatory" is not supported`},
				{routeAt + ".allow[1]", "the rule is empty"},
				{routeAt + ".allow[2].dnsName", "is not a DNS name"},
				{routeAt + ".allow[3].spkiSHA256", "is neither base64 nor 64 hex digits"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			objs, rep := model.Validate(identityRequest(tt.mode, tt.rules...), nil, time.Now())
			checkViolations(t, rep, tt.errors, tt.warnings)
			if len(tt.errors) > 0 {
				return
			}
			r := objs[1].Route
			if r.ClientCertificate != tt.wantCert {
				t.Errorf("ClientCertificate = %v, want %v", r.ClientCertificate, tt.wantCert)
			}
			if !equalRules(r.Allow, tt.wantAllow) {
				t.Errorf("Allow = %+v, want %+v", r.Allow, tt.wantAllow)
			}
		})
	}
}

// Identity rule errors are reported with path problems, and do not hide a
// conflict between routes.
func TestValidateRouteIdentityKeepsConflictCheck(t *testing.T) {
	t.Parallel()
	res := identityRequest("required", &policyv1.IdentityRule{})
	res = append(res, route("admin-copy", "/admin/", "admin"))
	_, rep := model.Validate(res, nil, time.Now())
	checkViolations(t, rep, []want{
		{routeAt + ".allow[0]", "the rule is empty"},
		{"resources[2].route.spec.path", `pattern "/admin/" is the same as route "admin"`},
	}, nil)
}

func equalRules(a, b []identity.Rule) bool {
	return slices.EqualFunc(a, b, func(x, y identity.Rule) bool {
		return x.DNSName == y.DNSName && x.URI == y.URI && x.SPIFFEID == y.SPIFFEID &&
			x.CN == y.CN && x.OU == y.OU && bytes.Equal(x.SPKISHA256, y.SPKISHA256)
	})
}

func TestRouteAdmits(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	admin, guest := ca.Client("admin.example.com").Cert, ca.Client("guest.example.com").Cert

	open := &model.Route{}
	if !open.Admits(admin) || !open.Admits(nil) {
		t.Error("a route without rules should admit any client, and no client")
	}
	ruled := &model.Route{Allow: []identity.Rule{{CN: "root"}, {DNSName: "admin.example.com"}}}
	if !ruled.Admits(admin) {
		t.Error("the second rule should admit admin")
	}
	if ruled.Admits(guest) || ruled.Admits(nil) {
		t.Error("a route with rules should refuse a client matching none, and no client")
	}
}

func TestDecodeRouteIdentity(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	kp := ca.Client("admin.example.com")
	spki := sha256.Sum256(kp.Cert.RawSubjectPublicKeyInfo)

	res := identityRequest("", &policyv1.IdentityRule{SpiffeId: "spiffe://example.org/*"}, &policyv1.IdentityRule{SpkiSha256: base64.StdEncoding.EncodeToString(spki[:])})[1]
	obj, err := model.Decode(res)
	if err != nil {
		t.Fatal(err)
	}
	r := obj.Route
	want := []identity.Rule{{SPIFFEID: "spiffe://example.org/*"}, {SPKISHA256: spki[:]}}
	if !r.ClientCertificate || !equalRules(r.Allow, want) {
		t.Fatalf("route = %+v, want ClientCertificate and Allow %+v", r, want)
	}
	if !r.Admits(kp.Cert) {
		t.Error("the decoded route should admit the certificate whose SPKI it names")
	}

	obj, err = model.Decode(identityRequest("required")[1])
	if err != nil || !obj.Route.ClientCertificate || obj.Route.Allow != nil {
		t.Fatalf("Decode(required) = %+v, %v; want ClientCertificate without rules", obj.Route, err)
	}

	if _, err := model.Decode(identityRequest("", &policyv1.IdentityRule{Cn: "a", Ou: "b"})[1]); err == nil {
		t.Fatal("Decode accepted a rule with two fields")
	}
}
