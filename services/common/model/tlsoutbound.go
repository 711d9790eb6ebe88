package model

import (
	"crypto"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
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
)

var (
	outboundFields = []string{
		fieldSkipValidation, fieldTrustedCA, fieldCertificate, fieldALPN, fieldMinVersion,
		fieldMaxVersion, fieldCiphers, fieldSNI, fieldSubjectAltNames,
	}
	certificateFields = []string{fieldKey, fieldCrt}
)

// ALPN protocols the gateway speaks to upstreams.
const (
	alpnH2     = "h2"
	alpnHTTP11 = "http/1.1"
)

// Defaults of the tls-outbound config (Flex's).
var defaultALPN = []string{alpnH2, alpnHTTP11}

const (
	defaultMinVersion = tls.VersionTLS12
	defaultMaxVersion = tls.VersionTLS13
	// minRSABits is Flex's floor for RSA keys.
	minRSABits = 2048
)

// outboundTLS builds the TLS context of a tls-outbound binding from its
// config; at is the path of the config.
func (c *checker) outboundTLS(at fieldPath, cfg *structpb.Struct) *OutboundTLS {
	if cfg == nil {
		c.errorf(at, "config is required for tls-outbound: give at least skipValidation: false and trustedCA (the PEM of the CA that signs the upstream's certificate)")
		return nil
	}
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

	trusted, trustedState := o.str(fieldTrustedCA)
	switch {
	case trustedState == present && out.SkipValidation:
		c.warnf(at.Child(fieldTrustedCA), "trustedCA is ignored because skipValidation is true; remove it, or set skipValidation: false to verify the upstream with it")
	case trustedState == present:
		out.TrustedCAs = c.trustedCAs(at.Child(fieldTrustedCA), trusted)
	case trustedState == absent && skipState == present && !skip:
		c.errorf(at.Child(fieldTrustedCA), "trustedCA is required when skipValidation is false: give the PEM of the CA certificates that sign the upstream's certificate (one or more -----BEGIN CERTIFICATE----- blocks)")
	}

	if cert, state := o.object(fieldCertificate); state == present {
		out.Certificate = c.clientCertificate(cert)
	}

	out.ALPN = c.alpn(o)

	minV, minOK := c.version(o, fieldMinVersion, defaultMinVersion)
	maxV, maxOK := c.version(o, fieldMaxVersion, defaultMaxVersion)
	versionsOK := minOK && maxOK
	if versionsOK && minV > maxV {
		c.errorf(at.Child(fieldMinVersion), "minversion %s is above maxversion %s; lower minversion or raise maxversion (defaults: 1.2 and 1.3)", versionName(minV), versionName(maxV))
		versionsOK = false
	}
	out.MinVersion, out.MaxVersion = minV, maxV

	ciphers, ciphersState := o.stringList(fieldCiphers)
	before := c.errorCount()
	suites := c.checkCiphers(at.Child(fieldCiphers), ciphers, minV, maxV, versionsOK)
	for _, s := range suites {
		out.CipherSuites = append(out.CipherSuites, s.ID)
	}
	if versionsOK && minV <= tls.VersionTLS11 && ciphersState != invalid && c.errorCount() == before {
		switch {
		case len(suites) == 0:
			c.errorf(at.Child(fieldMinVersion), "TLS 1.1 has no default cipher suites: with minversion 1.1, list ciphers that TLS 1.1 can use (%s), or set minversion: \"1.2\"", strings.Join(tls11Suites(), ", "))
		case !slices.ContainsFunc(suites, func(s *tls.CipherSuite) bool { return supportsVersion(s, tls.VersionTLS11) }):
			c.warnf(at.Child(fieldCiphers), "none of the listed ciphers works with TLS 1.1, so TLS 1.1 cannot be negotiated even though minversion is 1.1; add a TLS 1.1 suite (%s), or set minversion: \"1.2\"", strings.Join(tls11Suites(), ", "))
		}
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

	out.Fingerprint = fingerprint(out)
	return out
}

// trustedCAs parses the CA bundle that verifies upstreams.
func (c *checker) trustedCAs(at fieldPath, data string) []*x509.Certificate {
	certs, err := parseCertificates(data)
	if err != nil {
		c.errorf(at, "trustedCA %s", err)
		return nil
	}
	for i, cert := range certs {
		c.report.Certificates = append(c.report.Certificates, CertificateInfo{Field: string(at), Cert: cert, Fingerprint: certFingerprint(cert), NotAfter: cert.NotAfter})
		if !cert.IsCA {
			c.warnf(at, "trustedCA certificate %d (%s) is not a CA certificate, so it only matches an upstream presenting exactly this certificate; give the CA that issued the upstream's certificate instead", i+1, describe(cert))
		}
		if c.decode {
			continue
		}
		if p := validityProblem(cert, c.now); p != "" {
			c.errorf(at, "trustedCA certificate %d (%s) %s, so upstream certificates cannot be verified with it; give the CA's current certificate", i+1, describe(cert), p)
		}
	}
	return certs
}

// clientCertificate builds the key pair presented to upstreams from
// certificate {key, crt}; cfg is at the path of certificate.
func (c *checker) clientCertificate(cfg configObject) *tls.Certificate {
	cfg.unknownKeys(certificateFields, "certificate")
	keyPEM, keyState := cfg.str(fieldKey)
	crtPEM, crtState := cfg.str(fieldCrt)
	switch {
	case keyState == present && crtState == absent:
		c.errorf(cfg.at.Child(fieldCrt), "certificate.crt is missing: key and crt come together; give the client certificate in PEM (leaf first, then intermediates), or remove key")
	case keyState == absent && crtState == present:
		c.errorf(cfg.at.Child(fieldKey), "certificate.key is missing: key and crt come together; give the private key of the client certificate in PEM, or remove crt")
	}
	if keyState != present || crtState != present {
		return nil
	}
	before := c.errorCount()

	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		c.errorf(cfg.at.Child(fieldKey), "certificate.key %s", err)
	} else if k, isRSA := key.(*rsa.PrivateKey); isRSA && k.N.BitLen() < minRSABits {
		c.errorf(cfg.at.Child(fieldKey), "the RSA key is %d bits; keys must be at least %d bits (as Flex requires): make a new key with `openssl genrsa -out key.pem 2048` or an ECDSA key with `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`, and have the certificate reissued for it", k.N.BitLen(), minRSABits)
	}

	crtAt := cfg.at.Child(fieldCrt)
	chain, err := parseCertificates(crtPEM)
	if err != nil {
		c.errorf(crtAt, "certificate.crt %s", err)
		return nil
	}
	for _, cert := range chain {
		c.report.Certificates = append(c.report.Certificates, CertificateInfo{Field: string(crtAt), Cert: cert, Fingerprint: certFingerprint(cert), NotAfter: cert.NotAfter})
	}
	leaf := chain[0]
	if key != nil {
		if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
			c.errorf(cfg.at.Child(fieldKey), "certificate.key does not match the certificate %s (the first one in crt): give the key the certificate was issued for, or the certificate of this key (compare `openssl pkey -in key.pem -pubout` with `openssl x509 -in crt.pem -noout -pubkey`)", describe(leaf))
		}
	}
	if len(leaf.ExtKeyUsage) > 0 || len(leaf.UnknownExtKeyUsage) > 0 {
		if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
			c.errorf(crtAt, "certificate %s is not for client authentication (its extended key usage lacks clientAuth), so upstreams will refuse it; reissue it with extendedKeyUsage = clientAuth (openssl: -addext extendedKeyUsage=clientAuth)", describe(leaf))
		}
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			c.errorf(crtAt, "certificate %d (%s) in crt is not signed by certificate %d (%s): crt holds the leaf first, then each certificate that signed the one before it; reorder them or remove the ones that do not belong", i+1, describe(chain[i]), i+2, describe(chain[i+1]))
		}
	}
	if !c.decode {
		for i, cert := range chain {
			if p := validityProblem(cert, c.now); p != "" {
				what := "the client certificate"
				if i > 0 {
					what = fmt.Sprintf("intermediate certificate %d", i+1)
				}
				fix := "renew it and apply the new certificate and key"
				if c.now.Before(cert.NotBefore) {
					fix = "apply it once it is valid, or have it reissued starting now (check the clock of the host that issued it)"
				}
				c.errorf(crtAt, "%s (%s) %s; %s", what, describe(cert), p, fix)
			}
		}
	}
	if c.errorCount() != before {
		return nil
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, cert := range chain {
		tc.Certificate = append(tc.Certificate, cert.Raw)
	}
	return tc
}

// alpn reads the ALPN protocols, in order of preference.
func (c *checker) alpn(o configObject) []string {
	items, state := o.stringList(fieldALPN)
	switch state {
	case absent:
		return slices.Clone(defaultALPN)
	case present:
		if len(items) == 0 {
			c.errorf(o.at.Child(fieldALPN), "alpn is empty; leave it out for the default [h2, http/1.1], or list h2 and/or http/1.1 in order of preference")
			return nil
		}
	}
	var out []string
	for _, it := range items {
		p := o.at.Child(fieldALPN).Index(it.index)
		switch v := it.value; {
		case v != alpnH2 && v != alpnHTTP11:
			msg := fmt.Sprintf("%q is not an ALPN protocol this gateway speaks to upstreams; use %q and/or %q, in order of preference", v, alpnH2, alpnHTTP11)
			if s := suggestProtocol(v); s == ProtocolH2 || s == ProtocolGRPC {
				msg += fmt.Sprintf(": did you mean %q?", alpnH2)
			} else if s == ProtocolHTTP1 {
				msg += fmt.Sprintf(": did you mean %q?", alpnHTTP11)
			}
			c.errorf(p, "%s", msg)
		case slices.Contains(out, v):
			c.errorf(p, "%q is listed twice; remove one", v)
		default:
			out = append(out, v)
		}
	}
	return out
}

// version reads minversion or maxversion: "1.1", "1.2" or "1.3", also
// spelled "TLSv1.2" or "TLS1.2", or a YAML number (1.2), which reaches the
// Struct as a float64.
func (c *checker) version(o configObject, key string, def uint16) (uint16, bool) {
	v := o.value(key)
	if v == nil {
		return def, true
	}
	var text string
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		text = k.StringValue
	case *structpb.Value_NumberValue:
		text = strconv.FormatFloat(k.NumberValue, 'f', -1, 64)
	default:
		o.wrongType(key, v, "a TLS version", `write "1.1", "1.2" or "1.3"`)
		return def, false
	}
	s := strings.ToLower(strings.TrimSpace(text))
	s = strings.TrimPrefix(s, "tls")
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	switch s {
	case "1.1":
		return tls.VersionTLS11, true
	case "1.2":
		return tls.VersionTLS12, true
	case "1.3":
		return tls.VersionTLS13, true
	}
	c.errorf(o.at.Child(key), "%s %q is not a TLS version this gateway supports; use \"1.1\", \"1.2\" or \"1.3\"", key, text)
	return def, false
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
