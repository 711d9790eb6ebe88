package model

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
)

// The suite tables come from crypto/tls itself (tls.CipherSuites and
// tls.InsecureCipherSuites), so what validation accepts is exactly what the
// proxy's TLS stack can negotiate. They are computed once and never written.
var (
	// goSuites indexes every suite crypto/tls implements by IANA name.
	goSuites = func() map[string]*tls.CipherSuite {
		m := make(map[string]*tls.CipherSuite)
		for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
			m[s.Name] = s
		}
		return m
	}()

	// recommendedSuites are the secure suites that can be configured (TLS 1.2
	// and below), listed in messages.
	recommendedSuites = func() string {
		var names []string
		for _, s := range tls.CipherSuites() {
			if !is13Suite(s) {
				names = append(names, s.Name)
			}
		}
		return strings.Join(names, ", ")
	}()
)

// IntermediateCipherSuites are the TLS 1.2 suites a Listener host offers
// when it lists none: Mozilla's "intermediate" server profile as far as
// crypto/tls implements it, that is ECDHE key exchange with AES-GCM or
// ChaCha20-Poly1305 only (no CBC mode, no SHA-1 MAC, no RSA key exchange).
// TLS 1.3 suites are not configurable and always on with TLS 1.3. A new
// slice each call.
func IntermediateCipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// is13Suite reports whether s is a TLS 1.3 suite. Those cannot be configured in
// Go: all of them are enabled whenever TLS 1.3 is.
func is13Suite(s *tls.CipherSuite) bool {
	return slices.Equal(s.SupportedVersions, []uint16{tls.VersionTLS13})
}

// supportsVersion reports whether s can be negotiated at version v.
func supportsVersion(s *tls.CipherSuite, v uint16) bool {
	return slices.Contains(s.SupportedVersions, v)
}

// weakness says why a suite is weak, or "" when it is not: Go lists it as
// insecure, it has no forward secrecy (RSA key exchange), or it uses CBC mode
// (the advice column of Flex's cipher table).
func weakness(s *tls.CipherSuite) string {
	var why []string
	if s.Insecure {
		why = append(why, "Go lists it as insecure")
	}
	if strings.HasPrefix(s.Name, "TLS_RSA_") {
		why = append(why, "RSA key exchange has no forward secrecy")
	}
	if strings.Contains(s.Name, "_CBC_") {
		why = append(why, "CBC mode")
	}
	return strings.Join(why, "; ")
}

// unsupportedSuite explains a cipher name crypto/tls does not implement: an
// OpenSSL spelling, a PSK suite, an IANA suite Go lacks, or not a suite.
func unsupportedSuite(name string) string {
	up := strings.ToUpper(strings.TrimSpace(name))
	if _, ok := goSuites[up]; ok {
		return fmt.Sprintf("%q must be written exactly as the IANA name %q (upper case)", name, up)
	}
	if iana, ok := opensslNames[up]; ok {
		msg := fmt.Sprintf("%q is an OpenSSL name; write the IANA name %q", name, iana)
		if _, supported := goSuites[iana]; !supported {
			msg += ", though that suite is not supported by Go's crypto/tls either; choose one of: " + recommendedSuites
		}
		return msg
	}
	if !strings.HasPrefix(up, "TLS_") {
		if _, ok := goSuites["TLS_"+up]; ok {
			return fmt.Sprintf("%q is missing the TLS_ prefix; write %q", name, "TLS_"+up)
		}
	}
	if isPSKSuite(up) {
		return fmt.Sprintf("%q is a PSK (pre-shared key) suite; PSK suites are not supported by this gateway's TLS stack (Go's crypto/tls): authenticate with certificates and choose one of: %s", name, recommendedSuites)
	}
	if ianaUnsupported[up] {
		return fmt.Sprintf("%q is an IANA suite but not supported by Go's crypto/tls (no finite-field DHE, static ECDH, CCM, ARIA, Camellia or SHA-384 CBC suites); choose one of: %s", name, recommendedSuites)
	}
	return fmt.Sprintf("%q is not an IANA cipher suite that this gateway supports; supported: %s", name, recommendedSuites)
}

func isPSKSuite(name string) bool {
	for _, p := range []string{"TLS_PSK_", "TLS_DHE_PSK_", "TLS_ECDHE_PSK_", "TLS_RSA_PSK_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// opensslNames maps OpenSSL's names of the suites people most often copy from
// `openssl ciphers` or nginx configurations to IANA names.
var opensslNames = map[string]string{
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	"ECDHE-ECDSA-AES128-SHA256":     "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-RSA-AES128-SHA256":       "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
	"ECDHE-ECDSA-AES256-SHA384":     "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
	"ECDHE-RSA-AES256-SHA384":       "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
	"ECDHE-RSA-DES-CBC3-SHA":        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
	"ECDHE-ECDSA-RC4-SHA":           "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
	"ECDHE-RSA-RC4-SHA":             "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
	"AES128-GCM-SHA256":             "TLS_RSA_WITH_AES_128_GCM_SHA256",
	"AES256-GCM-SHA384":             "TLS_RSA_WITH_AES_256_GCM_SHA384",
	"AES128-SHA256":                 "TLS_RSA_WITH_AES_128_CBC_SHA256",
	"AES256-SHA256":                 "TLS_RSA_WITH_AES_256_CBC_SHA256",
	"AES128-SHA":                    "TLS_RSA_WITH_AES_128_CBC_SHA",
	"AES256-SHA":                    "TLS_RSA_WITH_AES_256_CBC_SHA",
	"DES-CBC3-SHA":                  "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
	"RC4-SHA":                       "TLS_RSA_WITH_RC4_128_SHA",
	"DHE-RSA-AES128-GCM-SHA256":     "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
	"DHE-RSA-AES256-GCM-SHA384":     "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
	"DHE-RSA-CHACHA20-POLY1305":     "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"DHE-RSA-AES128-SHA":            "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
	"DHE-RSA-AES256-SHA":            "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
	"DHE-RSA-AES128-SHA256":         "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
	"DHE-RSA-AES256-SHA256":         "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
}

// ianaUnsupported are real IANA cipher suites (RFC 8447 registry) that
// crypto/tls does not implement, so that "not supported here" can be told
// apart from "not a cipher suite". It holds the families people configure
// (DHE, static ECDH, CCM, ARIA, Camellia, SHA-384 CBC, NULL and export
// suites), not the whole registry; PSK suites are recognised by prefix.
var ianaUnsupported = func() map[string]bool {
	m := make(map[string]bool)
	for _, n := range []string{
		"TLS_NULL_WITH_NULL_NULL",
		"TLS_RSA_WITH_NULL_MD5", "TLS_RSA_WITH_NULL_SHA", "TLS_RSA_WITH_NULL_SHA256",
		"TLS_RSA_EXPORT_WITH_RC4_40_MD5", "TLS_RSA_WITH_RC4_128_MD5", "TLS_RSA_EXPORT_WITH_RC2_CBC_40_MD5",
		"TLS_RSA_WITH_IDEA_CBC_SHA", "TLS_RSA_EXPORT_WITH_DES40_CBC_SHA", "TLS_RSA_WITH_DES_CBC_SHA",
		"TLS_RSA_WITH_AES_256_CBC_SHA256", "TLS_RSA_WITH_SEED_CBC_SHA",
		"TLS_DHE_RSA_WITH_DES_CBC_SHA", "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA",
		"TLS_DHE_RSA_WITH_AES_128_CBC_SHA", "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
		"TLS_DHE_RSA_WITH_AES_128_CBC_SHA256", "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
		"TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
		"TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
		"TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA",
		"TLS_DHE_DSS_WITH_AES_128_CBC_SHA", "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
		"TLS_DHE_DSS_WITH_AES_128_CBC_SHA256", "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256",
		"TLS_DHE_DSS_WITH_AES_128_GCM_SHA256", "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384",
		"TLS_DH_anon_WITH_AES_128_CBC_SHA", "TLS_DH_anon_WITH_AES_256_CBC_SHA",
		"TLS_ECDH_ECDSA_WITH_NULL_SHA", "TLS_ECDH_ECDSA_WITH_RC4_128_SHA", "TLS_ECDH_ECDSA_WITH_3DES_EDE_CBC_SHA",
		"TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA",
		"TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA256", "TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA384",
		"TLS_ECDH_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDH_ECDSA_WITH_AES_256_GCM_SHA384",
		"TLS_ECDH_RSA_WITH_NULL_SHA", "TLS_ECDH_RSA_WITH_RC4_128_SHA", "TLS_ECDH_RSA_WITH_3DES_EDE_CBC_SHA",
		"TLS_ECDH_RSA_WITH_AES_128_CBC_SHA", "TLS_ECDH_RSA_WITH_AES_256_CBC_SHA",
		"TLS_ECDH_RSA_WITH_AES_128_CBC_SHA256", "TLS_ECDH_RSA_WITH_AES_256_CBC_SHA384",
		"TLS_ECDH_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDH_RSA_WITH_AES_256_GCM_SHA384",
		"TLS_ECDHE_ECDSA_WITH_NULL_SHA", "TLS_ECDHE_RSA_WITH_NULL_SHA",
		"TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA",
		"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
		"TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256",
		"TLS_RSA_WITH_AES_128_CCM", "TLS_RSA_WITH_AES_256_CCM",
		"TLS_RSA_WITH_AES_128_CCM_8", "TLS_RSA_WITH_AES_256_CCM_8",
		"TLS_DHE_RSA_WITH_AES_128_CCM", "TLS_DHE_RSA_WITH_AES_256_CCM",
		"TLS_DHE_RSA_WITH_AES_128_CCM_8", "TLS_DHE_RSA_WITH_AES_256_CCM_8",
		"TLS_ECDHE_ECDSA_WITH_AES_128_CCM", "TLS_ECDHE_ECDSA_WITH_AES_256_CCM",
		"TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8",
		"TLS_RSA_WITH_ARIA_128_CBC_SHA256", "TLS_RSA_WITH_ARIA_256_CBC_SHA384",
		"TLS_RSA_WITH_ARIA_128_GCM_SHA256", "TLS_RSA_WITH_ARIA_256_GCM_SHA384",
		"TLS_DHE_RSA_WITH_ARIA_128_GCM_SHA256", "TLS_DHE_RSA_WITH_ARIA_256_GCM_SHA384",
		"TLS_ECDHE_ECDSA_WITH_ARIA_128_CBC_SHA256", "TLS_ECDHE_ECDSA_WITH_ARIA_256_CBC_SHA384",
		"TLS_ECDHE_RSA_WITH_ARIA_128_CBC_SHA256", "TLS_ECDHE_RSA_WITH_ARIA_256_CBC_SHA384",
		"TLS_ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_ARIA_256_GCM_SHA384",
		"TLS_ECDHE_RSA_WITH_ARIA_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_ARIA_256_GCM_SHA384",
		"TLS_RSA_WITH_CAMELLIA_128_CBC_SHA", "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA",
		"TLS_RSA_WITH_CAMELLIA_128_CBC_SHA256", "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA256",
		"TLS_RSA_WITH_CAMELLIA_128_GCM_SHA256", "TLS_RSA_WITH_CAMELLIA_256_GCM_SHA384",
		"TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA", "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA",
		"TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA256", "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA256",
		"TLS_DHE_RSA_WITH_CAMELLIA_128_GCM_SHA256", "TLS_DHE_RSA_WITH_CAMELLIA_256_GCM_SHA384",
		"TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256", "TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384",
		"TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256", "TLS_ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384",
		"TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_GCM_SHA384",
		"TLS_ECDHE_RSA_WITH_CAMELLIA_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_CAMELLIA_256_GCM_SHA384",
	} {
		m[strings.ToUpper(n)] = true
	}
	return m
}()

// checkCiphers validates the ciphers list against the enabled versions and
// returns the configurable (TLS 1.2 and below) suites in order, nil when none
// is listed. versionsOK is false when min or max was invalid: then only the
// names are checked.
func (c *checker) checkCiphers(at fieldPath, items []listItem, minV, maxV uint16, versionsOK bool) []*tls.CipherSuite {
	var suites []*tls.CipherSuite
	seen := make(map[string]int)
	for _, it := range items {
		p := at.Index(it.index)
		name := it.value
		if j, dup := seen[name]; dup {
			c.errorf(p, "%q is listed twice (also ciphers[%d]); remove one", name, j)
			continue
		}
		seen[name] = it.index
		s, ok := goSuites[name]
		if !ok {
			c.errorf(p, "%s", unsupportedSuite(name))
			continue
		}
		if is13Suite(s) {
			if !versionsOK || maxV >= tls.VersionTLS13 {
				c.warnf(p, "%q is a TLS 1.3 suite; TLS 1.3 suites cannot be chosen: all of them are always on when TLS 1.3 is, so this entry has no effect; remove it", name)
			} else {
				c.errorf(p, "%q is a TLS 1.3 suite, but maxversion is %s so TLS 1.3 is off; remove it, or set maxversion: \"1.3\" (TLS 1.3 suites are then always on)", name, versionName(maxV))
			}
			continue
		}
		if versionsOK && !suiteFitsVersions(s, minV, maxV) {
			c.errorf(p, "%q works only with TLS %s, which is not enabled (minversion %s, maxversion %s); remove it, or change the versions",
				name, versionList(s.SupportedVersions), versionName(minV), versionName(maxV))
			continue
		}
		if why := weakness(s); why != "" {
			c.warnf(p, "%q is weak (%s); prefer an ECDHE suite with AES-GCM or ChaCha20-Poly1305, such as TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 or TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", name, why)
		}
		suites = append(suites, s)
	}
	return suites
}

// suiteFitsVersions reports whether s can be negotiated at any version from
// minV to maxV.
func suiteFitsVersions(s *tls.CipherSuite, minV, maxV uint16) bool {
	for _, v := range s.SupportedVersions {
		if v >= minV && v <= maxV {
			return true
		}
	}
	return false
}

// versionList formats the versions a suite supports among those the gateway
// accepts (1.1 to 1.3): "1.2", "1.1 and 1.2".
func versionList(vs []uint16) string {
	var names []string
	for _, v := range vs {
		if v >= tls.VersionTLS11 {
			names = append(names, versionName(v))
		}
	}
	return strings.Join(names, " and ")
}
