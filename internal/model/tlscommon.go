package model

import (
	"crypto"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"keyway.dev/internal/certs"
)

// The rules below are shared by tls-outbound bindings and Listener hosts, so
// that a version, cipher, ALPN list or key pair means the same on both sides.
// The callers only read their own input format (a Struct for a policy config,
// typed proto fields for a Listener) and hand over plain values.

// textSetting is a string setting as read: its text and whether it was there.
type textSetting struct {
	text  string
	state presence
}

// listSetting is a list setting as read.
type listSetting struct {
	items []listItem
	state presence
}

// tlsParams are the protocol settings tls-outbound and Listener hosts share,
// as given. at is the path of the object that holds them.
type tlsParams struct {
	at         fieldPath
	minVersion textSetting
	maxVersion textSetting
	ciphers    listSetting
	alpn       listSetting
	// peers names the other side in messages: "upstreams" or "clients".
	peers string
}

// tlsProtocol is the validated form of tlsParams.
type tlsProtocol struct {
	minVersion, maxVersion uint16
	// cipherSuites is nil when none is listed: Go's defaults.
	cipherSuites []uint16
	alpn         []string
}

// tlsProtocol checks versions, ciphers and ALPN together: which ciphers are
// allowed depends on the versions.
func (c *checker) tlsProtocol(p tlsParams) tlsProtocol {
	var out tlsProtocol
	out.alpn = c.alpnList(p.at.Child(fieldALPN), p.alpn, p.peers)

	minV, minOK := c.parseVersion(p.at.Child(fieldMinVersion), fieldMinVersion, p.minVersion, DefaultMinVersion)
	maxV, maxOK := c.parseVersion(p.at.Child(fieldMaxVersion), fieldMaxVersion, p.maxVersion, DefaultMaxVersion)
	versionsOK := minOK && maxOK
	if versionsOK && minV > maxV {
		c.errorf(p.at.Child(fieldMinVersion), "minversion %s is above maxversion %s; lower minversion or raise maxversion (defaults: 1.2 and 1.3)", versionName(minV), versionName(maxV))
		versionsOK = false
	}
	out.minVersion, out.maxVersion = minV, maxV

	before := c.errorCount()
	suites := c.checkCiphers(p.at.Child(fieldCiphers), p.ciphers.items, minV, maxV, versionsOK)
	for _, s := range suites {
		out.cipherSuites = append(out.cipherSuites, s.ID)
	}
	if versionsOK && minV <= tls.VersionTLS11 && p.ciphers.state != invalid && c.errorCount() == before {
		switch {
		case len(suites) == 0:
			c.errorf(p.at.Child(fieldMinVersion), "TLS 1.1 has no default cipher suites: with minversion 1.1, list ciphers that TLS 1.1 can use (%s), or set minversion: \"1.2\"", strings.Join(tls11Suites(), ", "))
		case !slices.ContainsFunc(suites, func(s *tls.CipherSuite) bool { return supportsVersion(s, tls.VersionTLS11) }):
			c.warnf(p.at.Child(fieldCiphers), "none of the listed ciphers works with TLS 1.1, so TLS 1.1 cannot be negotiated even though minversion is 1.1; add a TLS 1.1 suite (%s), or set minversion: \"1.2\"", strings.Join(tls11Suites(), ", "))
		}
	}
	return out
}

// parseVersion reads minversion or maxversion: "1.1", "1.2" or "1.3", also
// spelled "TLSv1.2" or "TLS1.2". An absent setting is def; an invalid one
// (already reported) is def and false.
func (c *checker) parseVersion(at fieldPath, key string, v textSetting, def uint16) (uint16, bool) {
	switch v.state {
	case absent:
		return def, true
	case invalid:
		return def, false
	}
	s := strings.ToLower(strings.TrimSpace(v.text))
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
	c.errorf(at, "%s %q is not a TLS version this gateway supports; use \"1.1\", \"1.2\" or \"1.3\"", key, v.text)
	return def, false
}

// alpnList reads the ALPN protocols, in order of preference; at is the path
// of the list.
func (c *checker) alpnList(at fieldPath, l listSetting, peers string) []string {
	switch l.state {
	case absent:
		return slices.Clone(defaultALPN)
	case present:
		if len(l.items) == 0 {
			c.errorf(at, "alpn is empty; leave it out for the default [h2, http/1.1], or list h2 and/or http/1.1 in order of preference")
			return nil
		}
	}
	var out []string
	for _, it := range l.items {
		p := at.Index(it.index)
		switch v := it.value; {
		case v != alpnH2 && v != alpnHTTP11:
			msg := fmt.Sprintf("%q is not an ALPN protocol this gateway speaks to %s; use %q and/or %q, in order of preference", v, peers, alpnH2, alpnHTTP11)
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

// keyPairRole is what a key pair is for: it decides the extended key usage
// it needs and how messages name it.
type keyPairRole struct {
	name string           // "client" or "server"
	eku  x509.ExtKeyUsage // required when the leaf lists extended key usages
	// ekuName is the openssl spelling of eku.
	ekuName string
	// usedBy says who refuses a certificate without the usage.
	usedBy string
}

var (
	clientRole = keyPairRole{name: "client", eku: x509.ExtKeyUsageClientAuth, ekuName: "clientAuth", usedBy: "upstreams"}
	serverRole = keyPairRole{name: "server", eku: x509.ExtKeyUsageServerAuth, ekuName: "serverAuth", usedBy: "clients"}
)

// keyPair parses and checks a certificate chain (leaf first) and its private
// key: the key parses, is strong enough and matches the leaf, the leaf may be
// used for role, each certificate is signed by the next, and (outside Decode)
// every certificate is valid now. keyAt and crtAt are the paths of the two
// PEM fields. It returns nil when anything is wrong.
func (c *checker) keyPair(keyAt, crtAt fieldPath, keyPEM, crtPEM string, role keyPairRole) *tls.Certificate {
	before := c.errorCount()

	key, err := certs.ParsePEMKey(keyPEM)
	if err != nil {
		c.errorf(keyAt, "certificate.key %s", err)
	} else if k, isRSA := key.(*rsa.PrivateKey); isRSA && k.N.BitLen() < minRSABits {
		c.errorf(keyAt, "the RSA key is %d bits; keys must be at least %d bits (as Flex requires): make a new key with `openssl genrsa -out key.pem 2048` or an ECDSA key with `openssl ecparam -name prime256v1 -genkey -noout -out key.pem`, and have the certificate reissued for it", k.N.BitLen(), minRSABits)
	}

	chain, err := certs.ParsePEMCertificates(crtPEM)
	if err != nil {
		c.errorf(crtAt, "certificate.crt %s", err)
		return nil
	}
	for _, cert := range chain {
		c.report.Certificates = append(c.report.Certificates, CertificateInfo{Field: string(crtAt), Cert: cert, Fingerprint: certs.Fingerprint(cert), NotAfter: cert.NotAfter})
	}
	leaf := chain[0]
	if key != nil {
		if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
			c.errorf(keyAt, "certificate.key does not match the certificate %s (the first one in crt): give the key the certificate was issued for, or the certificate of this key (compare `openssl pkey -in key.pem -pubout` with `openssl x509 -in crt.pem -noout -pubkey`)", certs.Describe(leaf))
		}
	}
	if len(leaf.ExtKeyUsage) > 0 || len(leaf.UnknownExtKeyUsage) > 0 {
		if !slices.Contains(leaf.ExtKeyUsage, role.eku) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
			c.errorf(crtAt, "certificate %s is not for %s authentication (its extended key usage lacks %s), so %s will refuse it; reissue it with extendedKeyUsage = %s (openssl: -addext extendedKeyUsage=%s on the request, signed with openssl x509 -req … -copy_extensions copy, without which OpenSSL 3 drops it)", certs.Describe(leaf), role.name, role.ekuName, role.usedBy, role.ekuName, role.ekuName)
		}
	}
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			c.errorf(crtAt, "certificate %d (%s) in crt is not signed by certificate %d (%s): crt holds the leaf first, then each certificate that signed the one before it; reorder them or remove the ones that do not belong", i+1, certs.Describe(chain[i]), i+2, certs.Describe(chain[i+1]))
		}
	}
	if !c.decode {
		for i, cert := range chain {
			if p := certs.ValidityProblem(cert, c.now); p != "" {
				what := "the " + role.name + " certificate"
				if i > 0 {
					what = fmt.Sprintf("intermediate certificate %d", i+1)
				}
				fix := "renew it and apply the new certificate and key"
				if c.now.Before(cert.NotBefore) {
					fix = "apply it once it is valid, or have it reissued starting now (check the clock of the host that issued it)"
				}
				c.errorf(crtAt, "%s (%s) %s; %s", what, certs.Describe(cert), p, fix)
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
