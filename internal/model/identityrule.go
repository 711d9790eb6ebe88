package model

import (
	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// IdentityRuleFields are the field names of an identity rule, as the API
// spells them: spiffeID, uri, dnsName, cn, ou and spkiSHA256.
func IdentityRuleFields() []string {
	return []string{fieldSPIFFEID, fieldURI, fieldDNSName, fieldCN, fieldOU, fieldSPKISHA256}
}

// CheckIdentityRule validates one identity rule outside a resource (the
// access policy's subjects use the same rules as a Route's allow list).
// at is the rule's field path, e.g. "spec.bindings[0].subjects[1]"; the
// violations name fields under it. The rule is usable only when there are
// no violations.
func CheckIdentityRule(at string, pr *policyv1.IdentityRule) (IdentityRule, []Violation) {
	c := &checker{}
	rule, _ := c.identityRule(fieldPath(at), pr)
	return rule, c.report.Errors
}

// String is the rule as it is written, e.g. "cn=keyway-operator" or
// "spiffeID=spiffe://example.org/ops"; a spkiSHA256 digest is in hex.
func (r IdentityRule) String() string { return r.key() }
