package model

import (
	"crypto/x509"
	"fmt"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/identity"
)

// Values of RouteSpec.client_certificate; "" is optional.
const (
	ClientCertificateOptional = "optional"
	ClientCertificateRequired = "required"
)

// Admits reports whether the route lets a request with the (verified) client
// certificate cert through its identity rules: always when Allow is empty,
// else when any rule [identity.Rule.Matches] cert. A nil cert is admitted only
// by a route without rules; whether a certificate is required at all is
// [Route.ClientCertificate], checked separately so that its absence gets 401
// and a mismatch 403.
func (r *Route) Admits(cert *x509.Certificate) bool {
	if len(r.Allow) == 0 {
		return true
	}
	for _, rule := range r.Allow {
		if rule.Matches(cert) {
			return true
		}
	}
	return false
}

// clientIdentity reads clientCertificate and allow into r. at is the path of
// the route's spec.
func (c *checker) clientIdentity(at fieldPath, r *Route, spec *policyv1.RouteSpec) {
	mode := spec.GetClientCertificate()
	modes := []string{ClientCertificateOptional, ClientCertificateRequired}
	switch mode {
	case "", ClientCertificateOptional:
	case ClientCertificateRequired:
		r.ClientCertificate = true
	default:
		msg := fmt.Sprintf("clientCertificate %q is not supported; use %q (the default: the route serves clients with or without a certificate) or %q (requests without a verified client certificate get 401)", mode, ClientCertificateOptional, ClientCertificateRequired)
		if s := DidYouMean(mode, modes); s != "" {
			msg += fmt.Sprintf(": did you mean %q?", s)
		}
		c.errorf(at.Child("clientCertificate"), "%s", msg)
	}

	seen := make(map[string]int)
	for j, pr := range spec.GetAllow() {
		p := at.Child("allow").Index(j)
		rule, ok := c.identityRule(p, pr)
		if !ok {
			continue
		}
		key := rule.String()
		if k, dup := seen[key]; dup {
			c.warnf(p, "the rule is the same as allow[%d]; remove one", k)
			continue
		}
		seen[key] = j
		r.Allow = append(r.Allow, rule)
	}
	if len(spec.GetAllow()) > 0 {
		if mode == ClientCertificateOptional {
			c.warnf(at.Child("clientCertificate"), "clientCertificate: optional has no effect on a route with allow rules, which require a verified client certificate that matches one of them; write clientCertificate: required or leave it out")
		}
		r.ClientCertificate = true
	}
}

// identityRule checks one allow rule with [identity.Parse], reporting its
// problems under at, and returns it when it has none.
func (c *checker) identityRule(at fieldPath, pr *policyv1.IdentityRule) (identity.Rule, bool) {
	rule, problems := identity.Parse(pr)
	for _, p := range problems {
		path := at
		if p.Field != "" {
			path = at.Child(p.Field)
		}
		c.errorf(path, "%s", p.Message)
	}
	return rule, len(problems) == 0
}
