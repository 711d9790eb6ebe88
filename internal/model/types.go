// Package model is the validated form of Keyway's declarative resources: the
// middle step of proto → model → TLS snapshot → transport.
//
// [Validate] turns API resources (keyway.policy.v1) into model values and
// reports every problem at once, each with the field path and the fix. The
// policy service calls it before storing anything; a proxy node calls it on
// what it reads from the store, so both sides agree on what a resource means.
package model

import (
	"crypto/tls"
	"crypto/x509"
	"time"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/identity"
	"keyway.dev/internal/secretref"
)

// Kinds of resource.
const (
	KindService       = "Service"
	KindRoute         = "Route"
	KindPolicyBinding = "PolicyBinding"
	KindListener      = "Listener"
)

// API versions accepted on input.
const (
	APIVersion     = "keyway.dev/v1alpha1"
	FlexAPIVersion = "gateway.mulesoft.com/v1alpha1"
)

// Policy names a PolicyBinding can refer to.
const (
	PolicyTLSOutbound = "tls-outbound"
	PolicyTLSInbound  = "tls-inbound"
	// FlexPolicyTLS is Flex Gateway's name for its inbound TLS policy; it
	// is read as tls-inbound.
	FlexPolicyTLS = "tls"
)

// Upstream protocols.
const (
	ProtocolHTTP1 = "http1"
	ProtocolH2    = "h2"
	ProtocolGRPC  = "grpc"
)

// Ref names one resource.
type Ref struct {
	Kind string
	Name string
}

func (r Ref) String() string { return r.Kind + "/" + r.Name }

// Service is a validated upstream.
type Service struct {
	Name string
	// Endpoints are "host:port", at least one.
	Endpoints []string
	// Protocol is one of the Protocol constants.
	Protocol string
	// DefaultTLS is the TLS context used when no tls-outbound binding
	// targets the Service: set when its address is https://, as Flex
	// Gateway's Service says TLS, and then verified against the system's
	// trusted roots ([OutboundTLS.SystemRoots]); nil for host:port and
	// http://, which are plain HTTP. A binding replaces it.
	DefaultTLS *OutboundTLS
}

// Route is a validated route.
type Route struct {
	Name string
	// Path is a path template; see keyway.policy.v1.RouteSpec.
	Path string
	// Methods are upper-case HTTP methods; empty means all.
	Methods []string
	// Host is a lowercase host name without port; empty means any.
	Host    string
	Service string
	// ClientCertificate: requests need a client certificate verified by
	// their Listener (set by clientCertificate: required or by Allow).
	ClientCertificate bool
	// Allow admits a request whose client certificate matches any rule;
	// empty admits any (verified) client.
	Allow []identity.Rule
	// Listeners are the Listeners whose requests the route serves; empty
	// means every Listener and the node's plain-HTTP port.
	Listeners []string
}

// Binding is a validated PolicyBinding.
type Binding struct {
	Name string
	// Target is the Service (tls-outbound) or the Listener (tls-inbound)
	// the binding applies to.
	Target Ref
	// Policy is PolicyTLSOutbound or PolicyTLSInbound (also for Flex's
	// "tls").
	Policy string
	// Outbound is set for tls-outbound bindings.
	Outbound *OutboundTLS
	// Inbound is set for tls-inbound bindings: the host it adds to its
	// Listener.
	Inbound *InboundTLS
}

// InboundTLS is what a tls-inbound binding adds to its Listener: one host,
// which serves the SNI names it lists, or, when it lists none, every client
// the Listener's own hosts do not (Flex's port-level TLS context).
type InboundTLS struct {
	Host ListenerHost
	// Default: the host serves clients that send no SNI or a name no host
	// lists (always so when Host.Hostnames is empty).
	Default bool
}

// OutboundTLS is the TLS context a proxy node uses to reach one upstream:
// everything a tls.Config needs, already parsed and checked. It is immutable
// once built.
type OutboundTLS struct {
	// SkipValidation turns upstream certificate verification off.
	SkipValidation bool
	// SystemRoots verifies the upstream against the trusted roots of the
	// host the context runs on (x509.SystemCertPool: SSL_CERT_FILE,
	// SSL_CERT_DIR, else the distribution's bundle), instead of
	// TrustedCAs. Only a Service's DefaultTLS sets it.
	SystemRoots bool
	// TrustedCAs verify the upstream; nil with SkipValidation, and nil
	// until resolved when Truststore is set.
	TrustedCAs []*x509.Certificate
	// Truststore, when set, names the truststore of the secrets service
	// whose CAs verify the upstream (trustedCA: {truststore: NAME}).
	Truststore string
	// Certificate is the client key pair presented to the upstream, with
	// Leaf set and the chain in order; nil when none is configured, and
	// nil until resolved when CertificateRef is set.
	Certificate *tls.Certificate
	// CertificateRef, when set, names the alias of the secrets service
	// that holds the client key pair (certificate: {keystore, alias}).
	CertificateRef *secretref.Ref
	// ALPN protocols in order of preference, as given; nil when the
	// config has none, and then they depend on the Service's protocol:
	// use [OutboundTLS.OfferedALPN].
	ALPN []string
	// MinVersion and MaxVersion are tls.VersionTLS1x; defaults 1.2 and 1.3.
	MinVersion uint16
	MaxVersion uint16
	// CipherSuites are TLS 1.2 (and 1.1) suites; nil keeps Go's defaults.
	// TLS 1.3 suites are not configurable.
	CipherSuites []uint16
	// SNI is the server name sent and verified; empty means the host of the
	// Service address.
	SNI string
	// SubjectAltNames, when set, are DNS names of which the upstream
	// certificate must carry at least one, in addition to chain and SNI
	// verification.
	SubjectAltNames []string
	// LegacyCommonName, when set, matches the server name against the
	// Common Name of an upstream certificate that carries no DNS
	// subjectAltName; the chain, validity and key usage are verified as
	// always. Never set with SkipValidation.
	LegacyCommonName bool
	// Revocation checks the upstream's leaf certificate, against its
	// issuer in the verified chain, for revocation (proxy nodes only: the
	// policy service's live probe holds no lists and leaves it out).
	Revocation Revocation
	// ProbePath is the path of the live probe's HTTP request after the
	// handshake ("" for "/"). It is not part of the TLS context, and not
	// in the fingerprint.
	ProbePath string
	// Fingerprint identifies this context: two contexts with the same
	// fingerprint are interchangeable. Connection pools are keyed by it.
	Fingerprint string
}

// Listener is a validated inbound TLS address.
type Listener struct {
	Name string
	// Address is "host:port".
	Address string
	// Hosts in the order given; Default is the index of the host that serves
	// clients without SNI or with a name no host lists.
	Hosts   []ListenerHost
	Default int
	// DefaultSet: a host was marked default: true (otherwise the first host
	// is the default, and a tls-inbound binding's default host takes over).
	DefaultSet bool
}

// ListenerHost is the TLS a Listener serves for some SNI names: everything a
// server tls.Config needs, parsed and checked. Immutable once built.
type ListenerHost struct {
	// Hostnames are lowercase; a wildcard is "*.example.com".
	Hostnames []string
	// Certificate is the server key pair, with Leaf set and the chain in
	// order; nil until resolved when CertificateRef is set.
	Certificate *tls.Certificate
	// CertificateRef, when set, names the alias of the secrets service
	// that holds the server key pair.
	CertificateRef *secretref.Ref
	ClientAuth     tls.ClientAuthType
	// ClientCAs verify client certificates; nil when ClientAuth does not
	// verify, and nil until resolved when ClientTruststore is set.
	ClientCAs []*x509.Certificate
	// ClientTruststore, when set, names the truststore of the secrets
	// service whose CAs verify client certificates.
	ClientTruststore string
	// VerifyDepth is the longest client chain accepted, leaf included; 0
	// means no limit.
	VerifyDepth int
	MinVersion  uint16
	MaxVersion  uint16
	// CipherSuites are TLS 1.2 (and 1.1) suites; nil serves
	// [IntermediateCipherSuites].
	CipherSuites []uint16
	ALPN         []string
	// Revocation is how client certificates are checked for revocation.
	Revocation Revocation
	// Fingerprint identifies the host's TLS context, as OutboundTLS's does.
	Fingerprint string
}

// Object is one validated resource: exactly one field is set.
type Object struct {
	Service  *Service
	Route    *Route
	Binding  *Binding
	Listener *Listener
}

// Ref names the object.
func (o Object) Ref() Ref {
	switch {
	case o.Service != nil:
		return Ref{KindService, o.Service.Name}
	case o.Route != nil:
		return Ref{KindRoute, o.Route.Name}
	case o.Binding != nil:
		return Ref{KindPolicyBinding, o.Binding.Name}
	case o.Listener != nil:
		return Ref{KindListener, o.Listener.Name}
	}
	return Ref{}
}

// Violation is one problem, with the field it is in and what to do.
type Violation struct {
	// Field is a JSON path into the request, e.g.
	// "resources[0].policyBinding.spec.config.ciphers[2]".
	Field string
	// Message says what is wrong and how to fix it.
	Message string
}

// CertificateInfo describes a certificate found in a resource, given
// inline (Cert) or held by the secrets service (Summary).
type CertificateInfo struct {
	Field       string
	Cert        *x509.Certificate
	Fingerprint string // SHA-256 of DER, lowercase hex
	NotAfter    time.Time
	// Summary describes a certificate behind a reference; Cert is nil then.
	Summary *certs.Summary
	// Reference is "alias/<keystore>/<alias>" or "truststore/<name>" for a
	// referenced certificate, and Version the secret's version.
	Reference string
	Version   string
}

// Report is the outcome of validating resources. Errors block an apply;
// warnings do not.
type Report struct {
	Errors       []Violation
	Warnings     []Violation
	Certificates []CertificateInfo
}

// OK reports whether there are no errors.
func (r *Report) OK() bool { return len(r.Errors) == 0 }
