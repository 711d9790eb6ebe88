package model

import (
	"crypto/tls"
	"testing"
)

// The hand-kept tables must agree with crypto/tls: a name Go implements is
// never called unsupported, and every OpenSSL alias points at a real suite.
func TestCipherTablesAgreeWithCryptoTLS(t *testing.T) {
	t.Parallel()
	for name := range ianaUnsupported {
		if _, ok := goSuites[name]; ok {
			t.Errorf("%s is listed as unsupported but crypto/tls implements it", name)
		}
		if isPSKSuite(name) {
			t.Errorf("%s: PSK suites are recognised by prefix, not listed", name)
		}
	}
	for alias, iana := range opensslNames {
		if _, ok := goSuites[iana]; !ok && !ianaUnsupported[iana] {
			t.Errorf("OpenSSL name %s maps to %s, which is in neither table", alias, iana)
		}
	}
	for _, s := range tls.CipherSuites() {
		if weakness(s) != "" && !isCBC(s.Name) {
			t.Errorf("%s is reported weak but is neither CBC nor insecure", s.Name)
		}
	}
}

func isCBC(name string) bool {
	for i := 0; i+5 <= len(name); i++ {
		if name[i:i+5] == "_CBC_" {
			return true
		}
	}
	return false
}

func TestSuggestName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Orders_API":      "orders-api",
		"orders.v2":       "orders-v2",
		"2fa-service":     "fa-service",
		"orders--":        "orders",
		"__":              "",
		"Payments  Queue": "payments-queue",
	} {
		if got := suggestName(in); got != want {
			t.Errorf("suggestName(%q) = %q, want %q", in, got, want)
		}
		if got := suggestName(in); got != "" && len(nameProblems(got)) > 0 {
			t.Errorf("suggestName(%q) = %q, which is itself invalid", in, got)
		}
	}
}

func TestDidYouMean(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"minVersion":      fieldMinVersion,
		"min_version":     fieldMinVersion,
		"trustedCa":       fieldTrustedCA,
		"skip_validation": fieldSkipValidation,
		"cipher":          fieldCiphers,
		"subjectAltName":  fieldSubjectAltNames,
		"colour":          "",
		"sn":              "",
	} {
		if got := DidYouMean(in, outboundFields); got != want {
			t.Errorf("DidYouMean(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsDNSName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"orders.internal": true,
		"localhost":       true,
		"a-b.example.com": true,
		"10.0.0.1":        false,
		"-orders":         false,
		"orders_api":      false,
		"orders..x":       false,
		"1.2.3.4.5":       false,
		"":                false,
	} {
		if got := isDNSName(in); got != want {
			t.Errorf("isDNSName(%q) = %v, want %v", in, got, want)
		}
	}
}
