// Package identity is request-time client identity: a [Rule] names one
// property of a verified client certificate (a DNS name, URI, SPIFFE ID,
// subject CN or OU, or public key digest), and [Rule.Matches] tells whether
// a certificate has it. Routes (allow) and the access policy (subjects)
// write the same rules; [Parse] is the one place their syntax is checked.
package identity

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/url"
	"strings"
)

// Field names of a rule, as the API spells them.
const (
	fieldDNSName    = "dnsName"
	fieldURI        = "uri"
	fieldSPIFFEID   = "spiffeID"
	fieldCN         = "cn"
	fieldOU         = "ou"
	fieldSPKISHA256 = "spkiSHA256"
)

// Fields are the field names of a rule, as the API spells them: spiffeID,
// uri, dnsName, cn, ou and spkiSHA256.
func Fields() []string {
	return []string{fieldSPIFFEID, fieldURI, fieldDNSName, fieldCN, fieldOU, fieldSPKISHA256}
}

// Rule matches a client certificate by one property; exactly one field is
// set. See [Rule.Matches]; [Parse] builds one from its API form.
type Rule struct {
	DNSName string
	URI     string
	// SPIFFEID is exact, or "spiffe://trust-domain/*" for a trust domain.
	SPIFFEID   string
	CN         string
	OU         string
	SPKISHA256 []byte
}

// Matches reports whether cert carries the property the rule names. Exactly
// one field of a rule is set; a rule with none or several set (Parse never
// builds one) matches nothing, and so does a nil cert. Per field:
//
//   - DNSName: one of cert.DNSNames equals it, ignoring case. A wildcard rule
//     "*.example.com" matches a SAN with exactly one more label
//     ("a.example.com", not "example.com" nor "a.b.example.com") and the SAN
//     "*.example.com" itself. An exact rule does not match a wildcard SAN, and
//     the subject's CN is never consulted.
//   - URI: the String() of one of cert.URIs equals it exactly (Parse stores
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
func (r Rule) Matches(cert *x509.Certificate) bool {
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

// String is the rule as it is written, e.g. "cn=keyway-operator" or
// "spiffeID=spiffe://example.org/ops"; a spkiSHA256 digest is in hex. Two
// parsed rules are the same rule when their strings are equal.
func (r Rule) String() string {
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

// fieldCount is how many fields of the rule are set.
func (r Rule) fieldCount() int {
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
