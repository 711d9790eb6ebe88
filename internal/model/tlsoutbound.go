package model

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/secretref"
)

// tls-outbound config fields, spelled exactly as Flex Gateway spells them
// (minversion and maxversion are all lowercase there), plus sni and
// subjectAltNames.
const (
	fieldSkipValidation  = "skipValidation"
	fieldTrustedCA       = "trustedCA"
	fieldCertificate     = "certificate"
	fieldKey             = "key"
	fieldCrt             = "crt"
	fieldALPN            = "alpn"
	fieldMinVersion      = "minversion"
	fieldMaxVersion      = "maxversion"
	fieldCiphers         = "ciphers"
	fieldSNI             = "sni"
	fieldSubjectAltNames = "subjectAltNames"
	// fieldLegacyCommonName opts in to matching the Common Name of an
	// upstream certificate that has no DNS subjectAltName (Keyway's own
	// field; Flex has none).
	fieldLegacyCommonName = "legacyCommonName"
	// fieldProbePath is the path of the live probe's HTTP request
	// (Keyway's own field).
	fieldProbePath = "probePath"
	// maxProbePath bounds probePath.
	maxProbePath = 1024
)

var (
	outboundFields = []string{
		fieldSkipValidation, fieldTrustedCA, fieldCertificate, fieldALPN, fieldMinVersion,
		fieldMaxVersion, fieldCiphers, fieldSNI, fieldSubjectAltNames, fieldLegacyCommonName, fieldProbePath,
		fieldRevocation,
	}
	certificateFields = []string{fieldKey, fieldCrt, fieldKeystore, fieldAlias}
)

// ALPN protocols the gateway speaks to upstreams.
const (
	alpnH2     = "h2"
	alpnHTTP11 = "http/1.1"
)

// Defaults of the tls-outbound config (Flex's). defaultALPN is also a
// Listener host's default; a tls-outbound context without alpn offers it
// to h2 and gRPC Services only ([OutboundTLS.OfferedALPN]).
var defaultALPN = []string{alpnH2, alpnHTTP11}

// DefaultALPN is the ALPN list offered where none is configured: h2, then
// http/1.1. It is a Listener host's default (alpn left out), what a
// tls-outbound context without alpn offers to h2 and gRPC Services, and
// what Keyway's own API servers offer. The slice is the caller's.
func DefaultALPN() []string { return slices.Clone(defaultALPN) }

// OfferedALPN is the ALPN list offered to an upstream of a Service that
// speaks protocol: the context's alpn when it gives one; else h2 then
// http/1.1 for h2 and gRPC Services, and http/1.1 alone for HTTP/1.1
// Services, whose requests then travel in HTTP/1.1 even to an upstream
// that also speaks h2 (and the client does not look for an h2 connection
// on every request). The slice is the caller's.
func (o *OutboundTLS) OfferedALPN(protocol string) []string {
	switch {
	case o.ALPN != nil:
		return slices.Clone(o.ALPN)
	case protocol == ProtocolH2 || protocol == ProtocolGRPC:
		return slices.Clone(defaultALPN)
	}
	return []string{alpnHTTP11}
}

// DefaultMinVersion and DefaultMaxVersion bound the TLS versions of a
// tls-outbound context or a Listener host that gives none.
const (
	DefaultMinVersion = tls.VersionTLS12
	DefaultMaxVersion = tls.VersionTLS13
)

// minRSABits is Flex's floor for RSA keys.
const minRSABits = 2048

// outboundTLS builds the TLS context of a tls-outbound binding from its
// config; at is the path of the config.
func (c *checker) outboundTLS(at fieldPath, cfg *structpb.Struct) *OutboundTLS {
	if cfg == nil {
		c.errorf(at, "config is required for tls-outbound: give at least skipValidation: false and trustedCA (the PEM of the CA that signs the upstream's certificate)")
		return nil
	}
	// Decoding only: validation reports warnings and certificates, which a
	// shared context would leave out.
	var key [sha256.Size]byte
	cached := false
	if c.decode && c.outboundCache != nil {
		if key, cached = outboundKey(cfg); cached {
			if o := c.outboundCache.get(key); o != nil {
				return o
			}
		}
	}
	before := c.errorCount()
	out := c.buildOutboundTLS(at, cfg)
	if cached && c.errorCount() == before {
		c.outboundCache.put(key, out)
	}
	return out
}

// buildOutboundTLS is outboundTLS without the cache.
func (c *checker) buildOutboundTLS(at fieldPath, cfg *structpb.Struct) *OutboundTLS {
	o := configObject{c: c, at: at, fields: cfg.GetFields()}
	o.unknownKeys(outboundFields, "tls-outbound config")
	out := &OutboundTLS{}

	skip, skipState := o.boolean(fieldSkipValidation)
	switch {
	case skipState == absent:
		c.errorf(at.Child(fieldSkipValidation), "skipValidation is required: set skipValidation: false and give trustedCA to verify the upstream's certificate, or skipValidation: true to accept any certificate (not recommended)")
	case skipState == present && skip:
		out.SkipValidation = true
		c.warnf(at.Child(fieldSkipValidation), "skipValidation is true: upstream certificates will not be verified, so anyone on the network path can impersonate the upstream; set skipValidation: false and give trustedCA")
	}

	trustedState := c.trustedCA(o, out)
	switch {
	case trustedState == present && out.SkipValidation:
		c.warnf(at.Child(fieldTrustedCA), "trustedCA is ignored because skipValidation is true; remove it, or set skipValidation: false to verify the upstream with it")
		out.TrustedCAs, out.Truststore = nil, ""
	case trustedState == absent && skipState == present && !skip:
		c.errorf(at.Child(fieldTrustedCA), "trustedCA is required when skipValidation is false: give the PEM of the CA certificates that sign the upstream's certificate (one or more -----BEGIN CERTIFICATE----- blocks), or a truststore of the secrets service as trustedCA: {truststore: NAME}")
	}

	if cert, state := o.object(fieldCertificate); state == present {
		out.Certificate, out.CertificateRef = c.clientCertificate(cert)
	}

	alpn := listOf(o.stringList(fieldALPN))
	protocol := c.tlsProtocol(tlsParams{
		at:         at,
		minVersion: c.configVersion(o, fieldMinVersion),
		maxVersion: c.configVersion(o, fieldMaxVersion),
		ciphers:    listOf(o.stringList(fieldCiphers)),
		alpn:       alpn,
		peers:      "upstreams",
	})
	out.MinVersion, out.MaxVersion = protocol.minVersion, protocol.maxVersion
	out.CipherSuites, out.ALPN = protocol.cipherSuites, protocol.alpn
	if alpn.state == absent {
		// Decided per Service: see OfferedALPN.
		out.ALPN = nil
	}

	if sni, state := o.str(fieldSNI); state == present {
		switch {
		case isIP(sni):
			out.SNI = sni
		case isDNSName(sni):
			out.SNI = strings.ToLower(sni)
		default:
			c.errorf(at.Child(fieldSNI), "sni %q is neither a DNS name nor an IP address; give the host name the upstream's certificate is issued for, without port or scheme", sni)
		}
	}

	if sans, state := o.stringList(fieldSubjectAltNames); state != absent {
		out.SubjectAltNames = c.subjectAltNames(at.Child(fieldSubjectAltNames), sans)
		if out.SkipValidation && len(out.SubjectAltNames) > 0 {
			c.warnf(at.Child(fieldSubjectAltNames), "subjectAltNames are not checked because skipValidation is true; set skipValidation: false and give trustedCA to have them checked")
		}
	}

	if legacy, state := o.boolean(fieldLegacyCommonName); state == present && legacy {
		if out.SkipValidation {
			c.warnf(at.Child(fieldLegacyCommonName), "legacyCommonName is ignored because skipValidation is true: nothing is verified; set skipValidation: false and give trustedCA")
		} else {
			out.LegacyCommonName = true
			c.warnf(at.Child(fieldLegacyCommonName), "legacyCommonName is true: an upstream certificate with no DNS subjectAltName is matched by its Common Name, which RFC 6125 deprecates and Go, browsers and curl refuse; "+
				"the chain, expiry and key usage are still verified, and a certificate with DNS SANs is still matched by them only. Reissue the upstream's certificate with a SAN "+
				"(openssl req … -addext subjectAltName=DNS:NAME, signed with openssl x509 -req … -copy_extensions copy) and remove this field")
		}
	}

	if rev := c.configRevocation(o, upstreamPeer, 0); rev.On() && out.SkipValidation {
		c.warnf(at.Child(fieldRevocation), "revocation is ignored because skipValidation is true: the upstream's certificate is not verified, so it has no verified issuer to check it against; set skipValidation: false and give trustedCA")
	} else {
		out.Revocation = rev
	}

	if path, state := o.str(fieldProbePath); state == present {
		if msg := CheckProbePath(path); msg != "" {
			c.errorf(at.Child(fieldProbePath), "%s", msg)
		} else {
			out.ProbePath = path
		}
	}

	out.Fingerprint = fingerprint(out)
	return out
}

// CheckProbePath says what is wrong with a probe path, or "" when it is an
// absolute path (with an optional query) of at most 1,024 bytes.
func CheckProbePath(path string) string {
	switch {
	case len(path) > maxProbePath:
		return fmt.Sprintf("probePath is %d bytes long; at most %d", len(path), maxProbePath)
	case !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//"):
		return fmt.Sprintf("probePath %q is not an absolute path: give one such as \"/healthz\"", truncate(path, 64))
	case strings.ContainsAny(path, " \t\r\n#") || strings.ContainsFunc(path, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Sprintf("probePath %q has a space, a control character or a fragment: give a path such as \"/healthz\" (percent-encode what it needs)", truncate(path, 64))
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// trustedCA reads trustedCA: a PEM string, or {truststore: NAME}. It fills
// out.TrustedCAs or out.Truststore and says whether the field was given.
// With skipValidation true the field is only read (the caller warns), so a
// truststore is not looked up.
func (c *checker) trustedCA(o configObject, out *OutboundTLS) presence {
	v := o.value(fieldTrustedCA)
	if v == nil {
		return absent
	}
	at := o.at.Child(fieldTrustedCA)
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		if !out.SkipValidation {
			out.TrustedCAs = c.trustedCAs(at, k.StringValue)
		}
		return present
	case *structpb.Value_StructValue:
		ref := configObject{c: c, at: at, fields: k.StructValue.GetFields()}
		ref.unknownKeys([]string{fieldTruststore}, "trustedCA (as a reference)")
		name, state := ref.str(fieldTruststore)
		switch {
		case state == absent:
			c.errorf(at.Child(fieldTruststore), "trustedCA as an object needs truststore: give trustedCA: {truststore: NAME} to use a truststore of the secrets service, or the CA PEM as a string")
			return invalid
		case state == invalid:
			return invalid
		}
		if out.SkipValidation {
			out.Truststore = name // dropped by the caller, with a warning
			return present
		}
		if out.Truststore = c.truststoreRef(at.Child(fieldTruststore), name); out.Truststore == "" {
			return invalid
		}
		return present
	}
	o.wrongType(fieldTrustedCA, v, "a PEM string or {truststore: NAME}", "give the CA certificates in PEM, or trustedCA: {truststore: NAME}")
	return invalid
}

// trustedCAs parses the CA bundle that verifies upstreams.
func (c *checker) trustedCAs(at fieldPath, data string) []*x509.Certificate {
	cas, err := certs.ParsePEMCertificates(data)
	if err != nil {
		c.errorf(at, "trustedCA %s", err)
		return nil
	}
	for i, cert := range cas {
		c.report.Certificates = append(c.report.Certificates, CertificateInfo{Field: string(at), Cert: cert, Fingerprint: certs.Fingerprint(cert), NotAfter: cert.NotAfter})
		if !cert.IsCA && certs.IsV1Root(cert) {
			c.warnf(at, "%s", certs.V1RootWarning(fmt.Sprintf("trustedCA certificate %d", i+1), cert))
		} else if !cert.IsCA {
			c.warnf(at, "trustedCA certificate %d (%s) is not a CA certificate, so it only matches an upstream presenting exactly this certificate; give the CA that issued the upstream's certificate instead", i+1, certs.Describe(cert))
		}
		if c.decode {
			continue
		}
		if p := certs.ValidityProblem(cert, c.now); p != "" {
			c.errorf(at, "trustedCA certificate %d (%s) %s, so upstream certificates cannot be verified with it; give the CA's current certificate", i+1, certs.Describe(cert), p)
		}
	}
	return cas
}

// clientCertificate builds the key pair presented to upstreams from
// certificate {key, crt}, or reads the reference certificate {keystore,
// alias}; cfg is at the path of certificate.
func (c *checker) clientCertificate(cfg configObject) (*tls.Certificate, *secretref.Ref) {
	cfg.unknownKeys(certificateFields, "certificate")
	keyPEM, keyState := cfg.str(fieldKey)
	crtPEM, crtState := cfg.str(fieldCrt)
	keystore, ksState := cfg.str(fieldKeystore)
	alias, aliasState := cfg.str(fieldAlias)
	inline := keyState != absent || crtState != absent
	ref := ksState != absent || aliasState != absent
	switch {
	case inline && ref:
		c.errorf(cfg.at, "certificate has both an inline key pair (key, crt) and a reference (keystore, alias); give one form: {key, crt} with the PEM, or {keystore, alias} naming an alias of the secrets service")
		return nil, nil
	case ref && ksState == absent:
		c.errorf(cfg.at.Child(fieldKeystore), "certificate.keystore is missing: keystore and alias come together; name the keystore that holds alias %q", alias)
		return nil, nil
	case ref && aliasState == absent:
		c.errorf(cfg.at.Child(fieldAlias), "certificate.alias is missing: keystore and alias come together; name the alias in keystore %q", keystore)
		return nil, nil
	case ref:
		if ksState != present || aliasState != present {
			return nil, nil
		}
		return nil, c.aliasRef(cfg.at, keystore, alias, clientRole)
	case !inline:
		c.errorf(cfg.at, "certificate is empty: give {key, crt} (the client key pair in PEM) or {keystore, alias} (an alias of the secrets service), or remove certificate")
		return nil, nil
	}
	switch {
	case keyState == present && crtState == absent:
		c.errorf(cfg.at.Child(fieldCrt), "certificate.crt is missing: key and crt come together; give the client certificate in PEM (leaf first, then intermediates), or remove key")
	case keyState == absent && crtState == present:
		c.errorf(cfg.at.Child(fieldKey), "certificate.key is missing: key and crt come together; give the private key of the client certificate in PEM, or remove crt")
	}
	if keyState != present || crtState != present {
		return nil, nil
	}
	return c.keyPair(cfg.at.Child(fieldKey), cfg.at.Child(fieldCrt), keyPEM, crtPEM, clientRole), nil
}

// configVersion reads minversion or maxversion from a config: a string, or
// a YAML number (1.2), which reaches the Struct as a float64.
func (c *checker) configVersion(o configObject, key string) textSetting {
	v := o.value(key)
	if v == nil {
		return textSetting{state: absent}
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return textSetting{text: k.StringValue, state: present}
	case *structpb.Value_NumberValue:
		return textSetting{text: strconv.FormatFloat(k.NumberValue, 'f', -1, 64), state: present}
	}
	o.wrongType(key, v, "a TLS version", `write "1.1", "1.2" or "1.3"`)
	return textSetting{state: invalid}
}

// listOf packs what configObject.stringList returns.
func listOf(items []listItem, state presence) listSetting {
	return listSetting{items: items, state: state}
}

// versionName formats a TLS version as the config writes it ("1.2").
func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "1.0"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

// subjectAltNames reads the DNS names of which the upstream's certificate
// must carry one. A leading "*." is allowed: it matches a wildcard SAN.
func (c *checker) subjectAltNames(at fieldPath, items []listItem) []string {
	var out []string
	for _, it := range items {
		name := strings.ToLower(it.value)
		switch {
		case !isDNSName(strings.TrimPrefix(name, "*.")):
			c.errorf(at.Index(it.index), "%q is not a DNS name; subjectAltNames lists DNS names the upstream's certificate must carry (one of them), such as \"orders.internal\"", it.value)
		case slices.Contains(out, name):
			c.errorf(at.Index(it.index), "%q is listed twice; remove one", it.value)
		default:
			out = append(out, name)
		}
	}
	return out
}

// tls11Suites names the suites that can be negotiated at TLS 1.1 and are not
// on Go's insecure list.
func tls11Suites() []string {
	var names []string
	for _, s := range tls.CipherSuites() {
		if supportsVersion(s, tls.VersionTLS11) {
			names = append(names, s.Name)
		}
	}
	return names
}
