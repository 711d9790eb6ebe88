package model

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"hash"
)

// Each fingerprint encoding starts with its version, so that a change to an
// encoding changes every fingerprint rather than colliding with old ones, and
// an outbound context never collides with an inbound one.
const (
	fingerprintVersion        = "keyway.dev/outbound-tls/v1"
	inboundFingerprintVersion = "keyway.dev/inbound-tls/v1"
)

// fingerprintWriter hashes a canonical encoding: each item is a tag and a
// value, both length-prefixed, in a fixed order, so no two different contexts
// encode alike.
type fingerprintWriter struct{ h hash.Hash }

func newFingerprintWriter(version string) fingerprintWriter {
	w := fingerprintWriter{h: sha256.New()}
	w.put("version", []byte(version))
	return w
}

func (w fingerprintWriter) put(tag string, value []byte) {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(tag)))
	b = append(b, tag...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	b = append(b, value...)
	w.h.Write(b)
}

func (w fingerprintWriter) u16(tag string, v uint16) {
	w.put(tag, binary.BigEndian.AppendUint16(nil, v))
}

func (w fingerprintWriter) flag(tag string, v bool) {
	if v {
		w.put(tag, []byte{1})
	} else {
		w.put(tag, []byte{0})
	}
}

// keyPair encodes a certificate chain and its key. The private key enters
// only through its public key: fingerprints are logged and published, and
// must reveal nothing secret.
func (w fingerprintWriter) keyPair(cert *tls.Certificate) {
	for _, der := range cert.Certificate {
		w.put("crt", der)
	}
	if signer, ok := cert.PrivateKey.(crypto.Signer); ok {
		if spki, err := x509.MarshalPKIXPublicKey(signer.Public()); err == nil {
			w.put("key", spki)
		}
	}
}

// protocol encodes versions, suites and ALPN, in that order.
func (w fingerprintWriter) protocol(minV, maxV uint16, suites []uint16, alpn []string) {
	w.u16("min", minV)
	w.u16("max", maxV)
	for _, id := range suites {
		w.u16("suite", id)
	}
	for _, p := range alpn {
		w.put("alpn", []byte(p))
	}
}

func (w fingerprintWriter) sum() string { return hex.EncodeToString(w.h.Sum(nil)) }

// fingerprint is the hex SHA-256 of a canonical encoding of everything in the
// context: two contexts with the same fingerprint configure the same TLS
// client.
func fingerprint(o *OutboundTLS) string {
	w := newFingerprintWriter(fingerprintVersion)
	w.flag("skip", o.SkipValidation)
	// Only when set, so that other contexts keep their fingerprints.
	if o.SystemRoots {
		w.flag("system-roots", true)
	}
	for _, ca := range o.TrustedCAs {
		w.put("ca", ca.Raw)
	}
	if o.Certificate != nil {
		w.keyPair(o.Certificate)
	}
	// References enter only when set, so that contexts without them keep
	// their fingerprints; with them, two bindings naming different aliases
	// never share a pool even before their material is resolved.
	if r := o.CertificateRef; r != nil {
		w.put("keystore", []byte(r.Keystore))
		w.put("alias", []byte(r.Alias))
	}
	if o.Truststore != "" {
		w.put("truststore", []byte(o.Truststore))
	}
	// A context without alpn hashes as the former default list did, so
	// that it keeps its fingerprint; one that gives a list is told apart,
	// as it offers h2 to HTTP/1.1 Services too.
	alpn := o.ALPN
	if alpn == nil {
		alpn = defaultALPN
	}
	w.protocol(o.MinVersion, o.MaxVersion, o.CipherSuites, alpn)
	if o.ALPN != nil {
		w.flag("alpn-given", true)
	}
	w.put("sni", []byte(o.SNI))
	for _, san := range o.SubjectAltNames {
		w.put("san", []byte(san))
	}
	// Only when set, so that other contexts keep their fingerprints.
	if o.LegacyCommonName {
		w.flag("legacy-cn", true)
	}
	// Nothing when off, so that other contexts keep their fingerprints;
	// a change rebuilds the Upstream, whose checker follows it.
	o.Revocation.fingerprint(w)
	return w.sum()
}

// hostFingerprint is the hex SHA-256 of everything a Listener host's server
// tls.Config is built from: two hosts with the same fingerprint can share one
// config. Hostnames are left out, since they select the config rather than
// shape it.
func hostFingerprint(h *ListenerHost) string {
	w := newFingerprintWriter(inboundFingerprintVersion)
	if h.Certificate != nil {
		w.keyPair(h.Certificate)
	}
	if r := h.CertificateRef; r != nil {
		w.put("keystore", []byte(r.Keystore))
		w.put("alias", []byte(r.Alias))
	}
	w.u16("clientAuth", uint16(h.ClientAuth))
	for _, ca := range h.ClientCAs {
		w.put("ca", ca.Raw)
	}
	if h.ClientTruststore != "" {
		w.put("truststore", []byte(h.ClientTruststore))
	}
	w.put("depth", binary.BigEndian.AppendUint64(nil, uint64(h.VerifyDepth)))
	w.protocol(h.MinVersion, h.MaxVersion, h.CipherSuites, h.ALPN)
	h.Revocation.fingerprint(w)
	return w.sum()
}
