// Package limits holds the documented maxima of Keyway's APIs
// (docs/reference/limits.md) and the helpers that keep client values short
// wherever they are echoed: in errors, in logs, in responses.
//
// Every value a client sends is checked against these maxima before
// anything else is done with it: before a name becomes a NATS subject or a
// KV key, before it is logged, before it is quoted in an error.
package limits

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Request bodies, per API. A request larger than its API's limit is refused
// with ResourceExhausted (HTTP 413 for plain HTTP) before it is read.
const (
	// PolicyRequestBytes bounds one request to the policy API: an Apply of
	// many resources with certificates fits; a larger one is split.
	PolicyRequestBytes = 8 << 20
	// SecretsRequestBytes bounds one request to the secrets API: the
	// largest valid request is a truststore of TruststorePEMBytes.
	SecretsRequestBytes = 1 << 20
)

// Resources (keyway.policy.v1).
const (
	// NameBytes is the longest resource name (metadata.name, and the name in
	// Get, Delete and references): names become NATS KV keys and DNS labels.
	NameBytes = 64
	// Labels is the most labels one resource may carry.
	Labels = 64
	// LabelPrefixBytes, LabelNameBytes and LabelValueBytes are Kubernetes'
	// label limits: an optional DNS subdomain prefix, a name and a value.
	LabelPrefixBytes = 253
	LabelNameBytes   = 63
	LabelValueBytes  = 63
	// HostBytes bounds host names (DNS names, SNI, hostnames, identity
	// dnsName): a DNS name is at most 253 characters.
	HostBytes = 253
	// AddressBytes bounds "host:port" strings (addresses, endpoints).
	AddressBytes = 261
	// PathBytes bounds a route's path pattern.
	PathBytes = 1024
	// URIBytes bounds URIs and SPIFFE IDs in identity rules (SPIFFE IDs
	// are at most 2048 bytes).
	URIBytes = 2048
	// TokenBytes bounds short words: apiVersion, kind, protocol, modes,
	// TLS versions, cipher suite names, policy names, subject CN/OU, the
	// SPKI digest.
	TokenBytes = 128
	// ALPNBytes bounds one ALPN protocol ID (RFC 7301: 255 bytes).
	ALPNBytes = 255
	// ListItems bounds every list of a resource (endpoints, methods, allow
	// rules, listeners, hosts, hostnames, ciphers, ALPN).
	ListItems = 256
	// ConfigDepth bounds the nesting of a binding's config; ConfigKeys the
	// members of one of its objects; ConfigStringBytes one of its strings
	// other than PEM (which has CertificatePEMBytes / BundlePEMBytes).
	ConfigDepth       = 8
	ConfigKeys        = 64
	ConfigStringBytes = 4096
)

// PEM fields, in resources and in the secrets API.
const (
	// CertificatePEMBytes bounds a certificate chain (leaf and
	// intermediates): a binding's or Listener's crt, PutAlias's
	// certificate_pem.
	CertificatePEMBytes = 64 << 10
	// BundlePEMBytes bounds a CA bundle: trustedCA, clientCAs,
	// PutTruststore's certificates_pem (the Mozilla root store is about
	// 220 KiB).
	BundlePEMBytes = 512 << 10
	// KeyPEMBytes bounds a private key (an RSA 8192 key is about 6.5 KiB).
	KeyPEMBytes = 16 << 10
)

// Secrets API (keyway.secrets.v1).
const (
	// SecretNameBytes bounds keystore, alias and truststore names (the
	// rule of secretref.CheckName).
	SecretNameBytes = 64
	// PKIRoleBytes bounds a PKI role name; PKIAltNames the alt names of a
	// PKI-issued alias, each at most HostBytes.
	PKIRoleBytes = 128
	PKIAltNames  = 100
)

// QuoteBytes is how much of a bad value an error or log line quotes.
const QuoteBytes = 64

// Quote is s quoted (as %q does), cut to its first [QuoteBytes] bytes (at a
// rune boundary) with "…(N bytes)" appended when longer: what an error or a
// log line may carry of a client's value.
func Quote(s string) string {
	if len(s) <= QuoteBytes {
		return strconv.Quote(s)
	}
	return strconv.Quote(Prefix(s)) + fmt.Sprintf("…(%d bytes)", len(s))
}

// Prefix is s cut to at most [QuoteBytes] bytes at a rune boundary.
func Prefix(s string) string {
	if len(s) <= QuoteBytes {
		return s
	}
	cut := QuoteBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// Value is s when it is at most [QuoteBytes] bytes, else its prefix with
// "…(N bytes)": a log attribute's value.
func Value(s string) string {
	if len(s) <= QuoteBytes {
		return s
	}
	return Prefix(s) + fmt.Sprintf("…(%d bytes)", len(s))
}

// TooLong is the message for a value over its maximum: what it is, how long,
// and the limit.
func TooLong(what string, got, limit int) string {
	if limit < 1<<10 {
		return fmt.Sprintf("%s is %d characters long; the maximum is %d", what, got, limit)
	}
	return fmt.Sprintf("%s is %s long; the maximum is %s", what, Size(got), Size(limit))
}

// Size prints a byte count as people read it: "64 bytes", "16 KiB",
// "30.0 MiB".
func Size(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// LabelProblem says what is wrong with a label (Kubernetes' rules), or ""
// when key and value are valid. The message quotes at most a prefix of
// either.
func LabelProblem(key, value string) string {
	prefix, name, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		name, prefix = key, ""
	}
	switch {
	case key == "":
		return "label key is empty; give a name of letters, digits, '-', '_' and '.', optionally prefixed by a DNS subdomain and '/'"
	case hasPrefix && prefix == "":
		return fmt.Sprintf("label key %s has an empty prefix; drop the '/' or put a DNS subdomain before it", Quote(key))
	case hasPrefix && len(prefix) > LabelPrefixBytes:
		return fmt.Sprintf("label key prefix %s is %d characters long; a prefix is a DNS subdomain of at most %d", Quote(prefix), len(prefix), LabelPrefixBytes)
	case hasPrefix && !isSubdomain(prefix):
		return fmt.Sprintf("label key prefix %s is not a DNS subdomain (lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit)", Quote(prefix))
	case len(name) > LabelNameBytes:
		return fmt.Sprintf("label key %s: its name is %d characters long; the maximum is %d", Quote(key), len(name), LabelNameBytes)
	case !isLabelWord(name) || name == "":
		return fmt.Sprintf("label key %s: the name must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit", Quote(key))
	case len(value) > LabelValueBytes:
		return fmt.Sprintf("label %s: the value is %d characters long; the maximum is %d", Quote(key), len(value), LabelValueBytes)
	case value != "" && !isLabelWord(value):
		return fmt.Sprintf("label %s: the value %s must be empty or letters, digits, '-', '_' and '.', starting and ending with a letter or digit", Quote(key), Quote(value))
	}
	return ""
}

// isLabelWord: [A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?
func isLabelWord(s string) bool {
	if s == "" || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; !alnum(b) && b != '-' && b != '_' && b != '.' {
			return false
		}
	}
	return true
}

// isSubdomain is a DNS-1123 subdomain: lowercase labels of [a-z0-9-],
// starting and ending alphanumeric, joined by dots.
func isSubdomain(s string) bool {
	for part := range strings.SplitSeq(s, ".") {
		if part == "" || len(part) > 63 || !lowerAlnum(part[0]) || !lowerAlnum(part[len(part)-1]) {
			return false
		}
		for i := 0; i < len(part); i++ {
			if b := part[i]; !lowerAlnum(b) && b != '-' {
				return false
			}
		}
	}
	return true
}

func alnum(b byte) bool      { return lowerAlnum(b) || b >= 'A' && b <= 'Z' }
func lowerAlnum(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }

// QuoteArgs returns args with every string given to a %q verb of format cut
// to [QuoteBytes] bytes and marked with "…(N bytes)", so that an error built
// with fmt quotes at most a prefix of a client's value. Other verbs and
// arguments are left alone (a %s argument is usually a composed message).
func QuoteArgs(format string, args []any) []any {
	var out []any
	n := 0
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		i++
		// Flags, width, precision.
		for i < len(format) && strings.IndexByte("+-# 0123456789.", format[i]) >= 0 {
			i++
		}
		if i >= len(format) {
			break
		}
		if format[i] == '%' {
			continue
		}
		if format[i] == 'q' && n < len(args) {
			if s, ok := args[n].(string); ok && len(s) > QuoteBytes {
				if out == nil {
					out = append([]any(nil), args...)
				}
				out[n] = Value(s)
			}
		}
		n++
	}
	if out == nil {
		return args
	}
	return out
}
