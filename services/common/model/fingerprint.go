package model

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
)

// fingerprintVersion starts every encoding, so that a change to the encoding
// changes every fingerprint rather than colliding with old ones.
const fingerprintVersion = "keyway.dev/outbound-tls/v1"

// fingerprint is the hex SHA-256 of a canonical encoding of everything in the
// context: two contexts with the same fingerprint configure the same TLS
// client. Each item is a tag and a value, both length-prefixed, in a fixed
// order, so no two different contexts encode alike. The private key enters
// only through its public key: the fingerprint is logged and published, and
// must reveal nothing secret.
func fingerprint(o *OutboundTLS) string {
	h := sha256.New()
	put := func(tag string, value []byte) {
		var b []byte
		b = binary.AppendUvarint(b, uint64(len(tag)))
		b = append(b, tag...)
		b = binary.AppendUvarint(b, uint64(len(value)))
		b = append(b, value...)
		h.Write(b)
	}
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

	put("version", []byte(fingerprintVersion))
	if o.SkipValidation {
		put("skip", []byte{1})
	} else {
		put("skip", []byte{0})
	}
	for _, ca := range o.TrustedCAs {
		put("ca", ca.Raw)
	}
	if cert := o.Certificate; cert != nil {
		for _, der := range cert.Certificate {
			put("crt", der)
		}
		if signer, ok := cert.PrivateKey.(crypto.Signer); ok {
			if spki, err := x509.MarshalPKIXPublicKey(signer.Public()); err == nil {
				put("key", spki)
			}
		}
	}
	put("min", u16(o.MinVersion))
	put("max", u16(o.MaxVersion))
	for _, id := range o.CipherSuites {
		put("suite", u16(id))
	}
	for _, p := range o.ALPN {
		put("alpn", []byte(p))
	}
	put("sni", []byte(o.SNI))
	for _, san := range o.SubjectAltNames {
		put("san", []byte(san))
	}
	return hex.EncodeToString(h.Sum(nil))
}
