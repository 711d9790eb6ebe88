package telemetry

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/failure"
)

// TLSVersion is a TLS version as tls.protocol.version spells it ("1.3").
func TLSVersion(v uint16) string {
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
	return ""
}

// ConnectionAttributes are the negotiated parameters of cs: version,
// cipher (IANA name), ALPN, resumption and the server name.
func ConnectionAttributes(cs *tls.ConnectionState) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		AttrTLSEstablished.Bool(cs.HandshakeComplete),
		AttrTLSProtocolVersion.String(TLSVersion(cs.Version)),
		AttrTLSCipher.String(tls.CipherSuiteName(cs.CipherSuite)),
		AttrTLSResumed.Bool(cs.DidResume),
	}
	if cs.NegotiatedProtocol != "" {
		attrs = append(attrs, AttrTLSNextProtocol.String(cs.NegotiatedProtocol))
	}
	if cs.ServerName != "" {
		attrs = append(attrs, AttrTLSServerName.String(cs.ServerName))
	}
	return attrs
}

// ServerCertificateAttributes describe the server's leaf certificate:
// subject, subjectAltNames, notAfter and SHA-256 fingerprint.
func ServerCertificateAttributes(leaf *x509.Certificate) []attribute.KeyValue {
	if leaf == nil {
		return nil
	}
	return []attribute.KeyValue{
		AttrTLSServerSubject.String(leaf.Subject.String()),
		AttrTLSServerSANs.StringSlice(SANs(leaf)),
		AttrTLSServerNotAfter.String(leaf.NotAfter.UTC().Format(time.RFC3339)),
		AttrTLSServerHashSHA256.String(CertificateHash(leaf)),
	}
}

// ClientCertificateAttributes describe a client certificate, ours
// (outbound) or a client's (inbound).
func ClientCertificateAttributes(leaf *x509.Certificate) []attribute.KeyValue {
	if leaf == nil {
		return nil
	}
	return []attribute.KeyValue{
		AttrTLSClientSubject.String(leaf.Subject.String()),
		AttrTLSClientSANs.StringSlice(SANs(leaf)),
		AttrTLSClientNotAfter.String(leaf.NotAfter.UTC().Format(time.RFC3339)),
		AttrTLSClientHashSHA256.String(CertificateHash(leaf)),
	}
}

// CertificateHash is the SHA-256 of the certificate's DER in upper-case hex,
// as the semantic conventions ask (the lower-case form is the fingerprint
// of /status and metrics).
func CertificateHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// SANs lists the certificate's subjectAltNames, each with its type:
// "DNS:orders.internal", "URI:spiffe://...", "IP:10.0.0.1", "email:...".
func SANs(cert *x509.Certificate) []string {
	var out []string
	for _, n := range cert.DNSNames {
		out = append(out, "DNS:"+n)
	}
	for _, u := range cert.URIs {
		out = append(out, "URI:"+u.String())
	}
	for _, ip := range cert.IPAddresses {
		out = append(out, "IP:"+ip.String())
	}
	for _, e := range cert.EmailAddresses {
		out = append(out, "email:"+e)
	}
	return out
}

// Fail marks span as failed for reason: status Error with detail (or the
// reason's description), error.type and keyway.failure.reason. detail must
// hold no key material.
func Fail(span trace.Span, reason failure.Reason, detail string) {
	if !span.IsRecording() {
		return
	}
	if detail == "" {
		detail = reason.Describe()
	}
	span.SetAttributes(AttrFailureReason.String(string(reason)), AttrErrorType.String(string(reason)))
	span.SetStatus(codes.Error, string(reason)+": "+detail)
}
