package model

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// Values of RouteSpec.client_certificate; "" is optional.
const (
	ClientCertificateOptional = "optional"
	ClientCertificateRequired = "required"
)

// Field names of an identity rule, as the API spells them.
const (
	fieldDNSName    = "dnsName"
	fieldURI        = "uri"
	fieldSPIFFEID   = "spiffeID"
	fieldCN         = "cn"
	fieldOU         = "ou"
	fieldSPKISHA256 = "spkiSHA256"
)

var identityFields = []string{fieldDNSName, fieldURI, fieldSPIFFEID, fieldCN, fieldOU, fieldSPKISHA256}

// spkiHint is how to compute a spkiSHA256 value.
const spkiHint = "give the SHA-256 of the client certificate's SubjectPublicKeyInfo as base64 (standard alphabet with padding: 44 characters ending in \"=\") or as 64 hex digits, e.g. `openssl x509 -in client.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`"

// Matches reports whether cert carries the property the rule names. Exactly
// one field of a rule is set; a rule with none or several set (Validate never
// builds one) matches nothing, and so does a nil cert. Per field:
//
//   - DNSName: one of cert.DNSNames equals it, ignoring case. A wildcard rule
//     "*.example.com" matches a SAN with exactly one more label
//     ("a.example.com", not "example.com" nor "a.b.example.com") and the SAN
//     "*.example.com" itself. An exact rule does not match a wildcard SAN, and
//     the subject's CN is never consulted.
//   - URI: the String() of one of cert.URIs equals it exactly (Validate stores
//     the rule in that form).
//   - SPIFFEID: one of cert.URIs is a valid SPIFFE ID (scheme spiffe, no
//     userinfo, port, query or fragment) that equals it exactly; a rule
//     "spiffe://td/*" matches any such ID of trust domain td with a non-empty
//     path.
//   - CN: cert.Subject.CommonName equals it exactly (case-sensitive).
//   - OU: one of cert.Subject.OrganizationalUnit equals it exactly.
//   - SPKISHA256: it equals the SHA-256 of cert.RawSubjectPublicKeyInfo.
//
// Matches checks only the certificate's content: chain verification and
// validity are the Listener's, and are done before any rule is consulted.
// It is safe for concurrent use.
func (r IdentityRule) Matches(cert *x509.Certificate) bool {
	if cert == nil || r.fieldCount() != 1 {
		return false
	}
	switch {
	case r.DNSName != "":
		return matchDNSName(r.DNSName, cert.DNSNames)
	case r.URI != "":
		for _, u := range cert.URIs {
			if u.String() == r.URI {
				return true
			}
		}
	case r.SPIFFEID != "":
		return matchSPIFFEID(r.SPIFFEID, cert.URIs)
	case r.CN != "":
		return cert.Subject.CommonName == r.CN
	case r.OU != "":
		for _, ou := range cert.Subject.OrganizationalUnit {
			if ou == r.OU {
				return true
			}
		}
	case len(r.SPKISHA256) > 0:
		sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
		return bytes.Equal(sum[:], r.SPKISHA256)
	}
	return false
}

// Admits reports whether the route lets a request with the (verified) client
// certificate cert through its identity rules: always when Allow is empty,
// else when any rule [IdentityRule.Matches] cert. A nil cert is admitted only
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

// fieldCount is how many fields of the rule are set.
func (r IdentityRule) fieldCount() int {
	n := 0
	for _, set := range []bool{r.DNSName != "", r.URI != "", r.SPIFFEID != "", r.CN != "", r.OU != "", len(r.SPKISHA256) > 0} {
		if set {
			n++
		}
	}
	return n
}

func matchDNSName(rule string, sans []string) bool {
	suffix, wildcard := strings.CutPrefix(rule, "*.")
	for _, san := range sans {
		if strings.EqualFold(san, rule) {
			return true
		}
		if !wildcard {
			continue
		}
		first, rest, ok := strings.Cut(san, ".")
		if ok && first != "" && !strings.Contains(first, "*") && strings.EqualFold(rest, suffix) {
			return true
		}
	}
	return false
}

func matchSPIFFEID(rule string, uris []*url.URL) bool {
	ruleTD, rulePath, problem := splitSPIFFEID(rule)
	if problem != "" {
		return false
	}
	for _, u := range uris {
		if u.Scheme != "spiffe" {
			continue
		}
		id := u.String()
		td, path, problem := splitSPIFFEID(id)
		if problem != "" || path == "/*" {
			// "spiffe://td/*" is a rule's wildcard, not anyone's ID.
			continue
		}
		if rulePath == "/*" && td == ruleTD || id == rule {
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
		key := rule.key()
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

// identityRule checks one allow rule and returns it in model form.
func (c *checker) identityRule(at fieldPath, pr *policyv1.IdentityRule) (IdentityRule, bool) {
	var set []string
	for _, f := range []struct {
		name string
		on   bool
	}{
		{fieldDNSName, pr.GetDnsName() != ""},
		{fieldURI, pr.GetUri() != ""},
		{fieldSPIFFEID, pr.GetSpiffeId() != ""},
		{fieldCN, pr.GetCn() != ""},
		{fieldOU, pr.GetOu() != ""},
		{fieldSPKISHA256, pr.GetSpkiSha256() != ""},
	} {
		if f.on {
			set = append(set, f.name)
		}
	}
	switch len(set) {
	case 0:
		c.errorf(at, "the rule is empty; set exactly one of %s", strings.Join(identityFields, ", "))
		return IdentityRule{}, false
	case 1:
	default:
		c.errorf(at, "the rule sets %s; a rule matches one property of the certificate: keep one field, or split it into one rule per field (rules are alternatives, so a client matching any one of them is admitted)", joinAnd(set))
		return IdentityRule{}, false
	}

	at = at.Child(set[0])
	switch set[0] {
	case fieldDNSName:
		v := pr.GetDnsName()
		if msg := dnsNameRuleProblem(v); msg != "" {
			c.errorf(at, "%s", msg)
			return IdentityRule{}, false
		}
		return IdentityRule{DNSName: strings.ToLower(v)}, true
	case fieldURI:
		v := pr.GetUri()
		u, err := url.Parse(v)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			c.errorf(at, "uri %q is not a URI: %s; give the SAN URI exactly as the client certificate carries it, e.g. \"https://clients.example.com/billing\"", v, err)
			return IdentityRule{}, false
		}
		if !u.IsAbs() {
			c.errorf(at, "uri %q is not an absolute URI (it has no scheme); give the SAN URI exactly as the client certificate carries it, e.g. \"https://clients.example.com/billing\"", v)
			return IdentityRule{}, false
		}
		return IdentityRule{URI: u.String()}, true
	case fieldSPIFFEID:
		v := pr.GetSpiffeId()
		if _, _, problem := splitSPIFFEID(v); problem != "" {
			c.errorf(at, "spiffeID %q %s", v, problem)
			return IdentityRule{}, false
		}
		return IdentityRule{SPIFFEID: v}, true
	case fieldCN:
		v := pr.GetCn()
		if msg := subjectProblem("cn", "CN", v); msg != "" {
			c.errorf(at, "%s", msg)
			return IdentityRule{}, false
		}
		return IdentityRule{CN: v}, true
	case fieldOU:
		v := pr.GetOu()
		if msg := subjectProblem("ou", "OU", v); msg != "" {
			c.errorf(at, "%s", msg)
			return IdentityRule{}, false
		}
		return IdentityRule{OU: v}, true
	default: // fieldSPKISHA256
		v := pr.GetSpkiSha256()
		sum, problem := parseSPKISHA256(v)
		if problem != "" {
			c.errorf(at, "spkiSHA256 %q %s; %s", v, problem, spkiHint)
			return IdentityRule{}, false
		}
		return IdentityRule{SPKISHA256: sum}, true
	}
}

// key identifies a validated rule, for duplicates.
func (r IdentityRule) key() string {
	switch {
	case r.DNSName != "":
		return fieldDNSName + "=" + r.DNSName
	case r.URI != "":
		return fieldURI + "=" + r.URI
	case r.SPIFFEID != "":
		return fieldSPIFFEID + "=" + r.SPIFFEID
	case r.CN != "":
		return fieldCN + "=" + r.CN
	case r.OU != "":
		return fieldOU + "=" + r.OU
	}
	return fieldSPKISHA256 + "=" + hex.EncodeToString(r.SPKISHA256)
}

// dnsNameRuleProblem says what is wrong with a dnsName rule, or "" when it
// is a DNS name, possibly with one leading wildcard label. Case does not
// matter: matching ignores it.
func dnsNameRuleProblem(name string) string {
	base, _ := strings.CutPrefix(name, "*.")
	switch {
	case isIP(name):
		return fmt.Sprintf("dnsName %q is an IP address; dnsName matches the certificate's DNS SANs, and no rule matches IP SANs: identify the client by a DNS name, uri, spiffeID, cn, ou or spkiSHA256", name)
	case strings.Contains(base, "*"):
		return fmt.Sprintf("dnsName %q: a wildcard is allowed only as the whole first label, as in \"*.example.com\" (which matches one label); list such names one by one, or use one leading \"*.\"", name)
	case !isDNSName(base):
		return fmt.Sprintf("dnsName %q is not a DNS name (letters, digits, hyphens and dots, without port, scheme or trailing dot); give a name such as \"client.example.com\", or \"*.example.com\" for any name one label under example.com", name)
	}
	return ""
}

// subjectProblem says what is wrong with a cn or ou value, or "": matching
// is exact, so a value that no real subject has would silently admit no one.
func subjectProblem(field, attr, v string) string {
	trimmed := strings.TrimSpace(v)
	switch {
	case trimmed == "":
		return fmt.Sprintf("%s is blank; give the subject's %s exactly, e.g. %s: admin", field, attr, field)
	case trimmed != v:
		return fmt.Sprintf("%s %q has leading or trailing spaces, and matching is exact; write %q", field, v, trimmed)
	case len(v) > len(attr) && strings.EqualFold(v[:len(attr)+1], attr+"="):
		value, _, _ := strings.Cut(v[len(attr)+1:], ",")
		return fmt.Sprintf("%s %q is written as part of a distinguished name; %s takes the %s value alone: write %q", field, v, field, attr, strings.TrimSpace(value))
	}
	return ""
}

// parseSPKISHA256 decodes a SHA-256 given as standard padded base64 or as 64
// hex digits, or says what is wrong with it.
func parseSPKISHA256(v string) ([]byte, string) {
	if len(v) == 2*sha256.Size {
		if b, err := hex.DecodeString(v); err == nil {
			return b, ""
		}
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		switch {
		case strings.ContainsAny(v, "-_"):
			return nil, "is in the URL-safe base64 alphabet (\"-\", \"_\"); use the standard alphabet (\"+\", \"/\")"
		case strings.ContainsAny(v, ":"):
			return nil, "has colons; write the digest without separators"
		case len(v)%4 != 0 && !strings.HasSuffix(v, "="):
			if b, rawErr := base64.RawStdEncoding.DecodeString(v); rawErr == nil && len(b) == sha256.Size {
				return nil, fmt.Sprintf("lacks base64 padding; write %q", base64.StdEncoding.EncodeToString(b))
			}
		}
		return nil, "is neither base64 nor 64 hex digits"
	}
	if len(b) != sha256.Size {
		return nil, fmt.Sprintf("decodes to %d bytes, not the 32 of a SHA-256 (a public key or certificate itself is longer: hash it)", len(b))
	}
	return b, ""
}

// spiffeForm is the generic fix for a spiffeID.
const spiffeForm = "write spiffe://<trust-domain>/<path>, e.g. \"spiffe://example.org/ns/ops/sa/admin\", or spiffe://<trust-domain>/* for any ID of the trust domain"

// splitSPIFFEID checks that id is a SPIFFE ID with a path, or the trust
// domain wildcard "spiffe://td/*", and returns its trust domain and path
// ("/*" for the wildcard). When it is not, problem completes "spiffeID %q …"
// and, where one can be told, ends with the fix. The rules are the SPIFFE ID
// specification's, with a path required.
func splitSPIFFEID(id string) (td, path, problem string) {
	const scheme = "spiffe://"
	rest, ok := strings.CutPrefix(id, scheme)
	if !ok {
		if len(id) >= len(scheme) && strings.EqualFold(id[:len(scheme)], scheme) {
			return "", "", "has an uppercase scheme; write \"spiffe://\" in lowercase"
		}
		return "", "", "does not start with \"spiffe://\"; " + spiffeForm
	}
	if len(id) > 2048 {
		return "", "", "is longer than 2048 bytes; " + spiffeForm
	}
	if strings.ContainsAny(rest, "?#") {
		return "", "", "has a query or fragment, which a SPIFFE ID cannot have; " + spiffeForm
	}
	td, path, _ = strings.Cut(rest, "/")
	if strings.Contains(rest, "/") {
		path = "/" + path
	}
	switch {
	case td == "":
		return "", "", "has no trust domain; " + spiffeForm
	case strings.Contains(td, "@"):
		return "", "", "has userinfo (\"…@\"), which a SPIFFE ID cannot have; " + spiffeForm
	case strings.Contains(td, ":"):
		return "", "", "has a port, which a SPIFFE trust domain cannot have; " + spiffeForm
	case len(td) > 255:
		return "", "", "has a trust domain longer than 255 characters; " + spiffeForm
	}
	for i := 0; i < len(td); i++ {
		b := td[i]
		switch {
		case b >= 'a' && b <= 'z', b >= '0' && b <= '9', b == '.', b == '-', b == '_':
		case b >= 'A' && b <= 'Z':
			return "", "", fmt.Sprintf("has uppercase letters in its trust domain; write %q", scheme+strings.ToLower(td)+path)
		default:
			return "", "", fmt.Sprintf("has a trust domain %q with characters other than lowercase letters, digits, dots, hyphens and underscores", td) + "; " + spiffeForm
		}
	}
	if path == "" || path == "/" {
		return "", "", fmt.Sprintf("has no path; give the workload's path, or write %q for any ID of the trust domain", scheme+td+"/*")
	}
	if path == "/*" {
		return td, path, ""
	}
	for seg := range strings.SplitSeq(path[1:], "/") {
		switch {
		case seg == "":
			return "", "", "has an empty path segment (\"//\" or a trailing \"/\"); " + spiffeForm
		case seg == "." || seg == "..":
			return "", "", "has a \".\" or \"..\" path segment; " + spiffeForm
		case strings.Contains(seg, "*"):
			return "", "", fmt.Sprintf("has a wildcard inside its path; a wildcard is allowed only as the whole path: write %q for any ID of the trust domain, or one rule per exact ID", scheme+td+"/*")
		}
		for i := 0; i < len(seg); i++ {
			b := seg[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '-' || b == '_') {
				return "", "", fmt.Sprintf("has %q in its path; path segments hold letters, digits, dots, hyphens and underscores only", string(b)) + "; " + spiffeForm
			}
		}
	}
	return td, path, ""
}

// joinAnd joins names as "a and b" or "a, b and c".
func joinAnd(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
