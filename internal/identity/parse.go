package identity

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/limits"
)

// identityFields is the order in which an empty rule's message lists the
// fields.
var identityFields = []string{fieldDNSName, fieldURI, fieldSPIFFEID, fieldCN, fieldOU, fieldSPKISHA256}

// spkiHint is how to compute a spkiSHA256 value.
const spkiHint = "give the SHA-256 of the client certificate's SubjectPublicKeyInfo as base64 (standard alphabet with padding: 44 characters ending in \"=\") or as 64 hex digits, e.g. `openssl x509 -in client.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`"

// Problem is what is wrong with a rule as written.
type Problem struct {
	// Field is the rule's field at fault, as the API spells it (e.g.
	// "dnsName"), or "" when the problem is the rule as a whole.
	Field string
	// Message says what is wrong and how to fix it; a client's value is
	// quoted at most up to [limits.QuoteBytes].
	Message string
}

// Parse checks a rule as the API writes it (a Route's allow entry or an
// access policy's subject) and returns it normalized: a dnsName in
// lowercase, a uri in the form [url.URL.String] gives, a spkiSHA256
// decoded. The rule is usable only when there are no problems; each
// problem names the field to change and how.
func Parse(pr *policyv1.IdentityRule) (Rule, []Problem) {
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
		return Rule{}, problem("", "the rule is empty; set exactly one of %s", strings.Join(identityFields, ", "))
	case 1:
	default:
		return Rule{}, problem("", "the rule sets %s; a rule matches one property of the certificate: keep one field, or split it into one rule per field (rules are alternatives, so a client matching any one of them is admitted)", joinAnd(set))
	}

	at := set[0]
	switch at {
	case fieldDNSName:
		v := pr.GetDnsName()
		if msg := dnsNameRuleProblem(v); msg != "" {
			return Rule{}, problem(at, "%s", msg)
		}
		return Rule{DNSName: strings.ToLower(v)}, nil
	case fieldURI:
		v := pr.GetUri()
		u, err := url.Parse(v)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return Rule{}, problem(at, "uri %q is not a URI: %s; give the SAN URI exactly as the client certificate carries it, e.g. \"https://clients.example.com/billing\"", v, err)
		}
		if !u.IsAbs() {
			return Rule{}, problem(at, "uri %q is not an absolute URI (it has no scheme); give the SAN URI exactly as the client certificate carries it, e.g. \"https://clients.example.com/billing\"", v)
		}
		return Rule{URI: u.String()}, nil
	case fieldSPIFFEID:
		v := pr.GetSpiffeId()
		if _, _, msg := splitSPIFFEID(v); msg != "" {
			return Rule{}, problem(at, "spiffeID %q %s", v, msg)
		}
		return Rule{SPIFFEID: v}, nil
	case fieldCN:
		v := pr.GetCn()
		if msg := subjectProblem("cn", "CN", v); msg != "" {
			return Rule{}, problem(at, "%s", msg)
		}
		return Rule{CN: v}, nil
	case fieldOU:
		v := pr.GetOu()
		if msg := subjectProblem("ou", "OU", v); msg != "" {
			return Rule{}, problem(at, "%s", msg)
		}
		return Rule{OU: v}, nil
	default: // fieldSPKISHA256
		v := pr.GetSpkiSha256()
		sum, msg := parseSPKISHA256(v)
		if msg != "" {
			return Rule{}, problem(at, "spkiSHA256 %q %s; %s", v, msg, spkiHint)
		}
		return Rule{SPKISHA256: sum}, nil
	}
}

// problem is a one-problem result of Parse, quoting at most a prefix of the
// client's values.
func problem(field, format string, args ...any) []Problem {
	return []Problem{{Field: field, Message: fmt.Sprintf(format, limits.QuoteArgs(format, args)...)}}
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
	case !IsDNSName(base):
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

// IsDNSName reports whether s is a host name as a certificate's DNS SAN or
// a TLS server name carries it: dot-separated labels of letters, digits and
// hyphens, 1 to 63 characters each, not starting or ending with a hyphen,
// 253 characters in all. A trailing dot is not allowed, and neither is an
// all-numeric name (a mistyped IP address).
func IsDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-') {
				return false
			}
		}
	}
	if isIP(s) {
		return false
	}
	last := s[strings.LastIndexByte(s, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

// isIP reports whether s is an IPv4 or IPv6 address (without brackets).
func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
