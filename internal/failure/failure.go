// Package failure is Keyway's one taxonomy of upstream failures: every way a
// request can fail to reach an upstream has a [Reason], a stable snake_case
// name that appears in 502 bodies, logs, metrics and the policy service's live
// probe, with a one-line cause ([Reason.Describe]) and fix ([Reason.Fix]).
//
// [Classify] and [Diagnose] turn the error of a dial, a TLS handshake or a
// round trip into a Reason, using what the dialer saw during the handshake
// ([HandshakeFacts]) to tell apart failures that TLS reports with the same
// alert. The package depends on the standard library only, so that every
// service can share it.
package failure

import "slices"

// Reason names why an upstream could not be reached. The values are stable:
// they are part of the API (502 bodies, metrics labels).
type Reason string

// Reasons, grouped by [Class].
const (
	// Unknown is a failure none of the other reasons describes.
	Unknown Reason = "unknown"

	// TLS: the upstream's certificate, as we verify it.
	UnknownAuthority   Reason = "unknown_authority"
	Expired            Reason = "expired"
	NotYetValid        Reason = "not_yet_valid"
	SANMismatch        Reason = "san_mismatch"
	LegacyCommonName   Reason = "legacy_common_name"
	InvalidCertificate Reason = "invalid_certificate"
	// Revoked is a certificate its CA revoked (a CRL or an OCSP response
	// lists it); RevocationUnknown one whose revocation status no current
	// list or response gives, refused by a hard-fail revocation mode. Both
	// are used for upstreams and, with 401, for clients on a Listener.
	Revoked           Reason = "revoked"
	RevocationUnknown Reason = "revocation_unknown"

	// TLS: our client certificate, as the upstream judges it.
	NoClientCertificate       Reason = "no_client_certificate"
	ClientCertificateRejected Reason = "client_certificate_rejected"

	// TLS: parameters that do not meet.
	ProtocolVersion       Reason = "protocol_version"
	NoSharedCipher        Reason = "no_shared_cipher"
	NoApplicationProtocol Reason = "no_application_protocol"
	NotTLS                Reason = "not_tls"
	HandshakeFailure      Reason = "handshake_failure"

	// Timeouts.
	HandshakeTimeout Reason = "handshake_timeout"
	DialTimeout      Reason = "dial_timeout"
	UpstreamTimeout  Reason = "upstream_timeout"

	// Connection.
	ConnectionRefused Reason = "connection_refused"
	HostUnreachable   Reason = "host_unreachable"
	DNSFailure        Reason = "dns_failure"
	UpstreamReset     Reason = "upstream_reset"

	// Routing and availability.
	NoRoute           Reason = "no_route"
	NoHealthyUpstream Reason = "no_healthy_upstream"

	// ClientCanceled is the downstream client going away; not the upstream's fault.
	ClientCanceled Reason = "client_canceled"

	// Client: a request on a Listener refused for its client certificate.
	ClientCertificateRequired  Reason = "client_certificate_required"
	ClientCertificateExpired   Reason = "client_certificate_expired"
	ClientCertificateUntrusted Reason = "client_certificate_untrusted"
	IdentityNotAllowed         Reason = "identity_not_allowed"
	// MisdirectedRequest is a request for a route that needs a verified
	// client certificate, sent on a connection whose TLS server name chose
	// a Listener host that trusts other client CAs than the host the
	// request names (HTTP/2 connection reuse across host names).
	MisdirectedRequest Reason = "misdirected_request"
)

// Class groups reasons by where the failure happened.
type Class string

// Classes of [Reason].
const (
	ClassTLS        Class = "tls"
	ClassTimeout    Class = "timeout"
	ClassConnection Class = "connection"
	ClassRouting    Class = "routing"
	ClassOther      Class = "other"
	// ClassClient is a downstream client refused on a Listener.
	ClassClient Class = "client"
)

type info struct {
	class    Class
	describe string
	fix      string
}

var reasons = map[Reason]info{
	Unknown: {ClassOther,
		"the request to the upstream failed for a reason Keyway does not recognise",
		"look at the proxy node's log line for this request id: it carries the full error"},
	UnknownAuthority: {ClassTLS,
		"the upstream's certificate is not signed by a CA in the binding's trustedCA (or its chain is incomplete: AIA is not followed)",
		"put the CA that issued the upstream certificate in trustedCA, or make the upstream send its full chain (leaf and intermediates)"},
	Expired: {ClassTLS,
		"the upstream's certificate (or one in its chain) has expired",
		"renew the upstream's certificate"},
	NotYetValid: {ClassTLS,
		"the upstream's certificate is not valid yet (its notBefore is in the future)",
		"check the clocks of the upstream's CA and of the proxy node, or wait until the certificate's notBefore"},
	SANMismatch: {ClassTLS,
		"the upstream's certificate does not carry the server name (SNI) or the subjectAltNames the binding asks for",
		"set the binding's sni to a DNS name in the certificate, or reissue the certificate with that name as a subjectAltName"},
	LegacyCommonName: {ClassTLS,
		"the upstream's certificate has no subjectAltName, only a Common Name; verification uses SANs only",
		`reissue the upstream's certificate with a subjectAltName: openssl req ... -addext "subjectAltName=DNS:<host>", signed with openssl x509 -req ... -copy_extensions copy (OpenSSL 3 drops the SAN without it); or set legacyCommonName: true in the tls-outbound binding`},
	InvalidCertificate: {ClassTLS,
		"the upstream's certificate cannot be used (wrong key usage, name constraints, malformed)",
		"reissue the upstream's certificate for server authentication"},
	Revoked: {ClassTLS,
		"the upstream's certificate has been revoked by its CA (a CRL or an OCSP response lists it)",
		"have the upstream serve a certificate that is not revoked: renew it with its CA"},
	RevocationUnknown: {ClassTLS,
		"the revocation status of the upstream's certificate is unknown (no current CRL or OCSP response covers it) and the binding's revocation mode is hard-fail",
		"make the CRL or OCSP responder reachable from the proxy node (its log line names the source and the error), or set the binding's revocation mode to soft-fail"},
	NoClientCertificate: {ClassTLS,
		"the upstream requires a client certificate and the binding has none",
		"add certificate.crt and certificate.key to the tls-outbound binding"},
	ClientCertificateRejected: {ClassTLS,
		"the upstream refused the client certificate the gateway presented",
		"make the upstream trust the CA that issued the binding's client certificate, or bind a certificate it accepts (not expired, right identity)"},
	ProtocolVersion: {ClassTLS,
		"the gateway and the upstream have no TLS version in common",
		"align the binding's minversion/maxversion with the versions the upstream accepts"},
	NoSharedCipher: {ClassTLS,
		"the gateway and the upstream have no cipher suite in common",
		"add a cipher suite the upstream accepts to the binding's ciphers (or remove the list to use the defaults)"},
	NoApplicationProtocol: {ClassTLS,
		"the upstream accepts none of the ALPN protocols the binding offers",
		"set the binding's alpn to a protocol the upstream speaks (h2, http/1.1)"},
	NotTLS: {ClassTLS,
		"the upstream answered the TLS handshake with something that is not TLS (plain HTTP?)",
		"remove the tls-outbound binding if the upstream speaks plain HTTP, or point the Service at its TLS port"},
	HandshakeFailure: {ClassTLS,
		"the TLS handshake with the upstream failed",
		"look at the upstream's TLS log for why it aborted the handshake; the proxy node log carries the alert"},
	HandshakeTimeout: {ClassTimeout,
		"the upstream accepted the TCP connection but did not complete the TLS handshake in time",
		"check that the endpoint serves TLS on that port and is not overloaded, or raise --handshake-timeout"},
	DialTimeout: {ClassTimeout,
		"the TCP connection to the upstream did not complete in time",
		"check the endpoint address and that no firewall drops the traffic"},
	UpstreamTimeout: {ClassTimeout,
		"the upstream did not answer in time",
		"check the upstream's latency"},
	ConnectionRefused: {ClassConnection,
		"nothing listens on the upstream endpoint (connection refused)",
		"start the upstream or fix the Service's address/endpoints"},
	HostUnreachable: {ClassConnection,
		"there is no network route to the upstream endpoint (host or network unreachable)",
		"check the Service's address/endpoints, and the routes and firewalls between the proxy node and the upstream"},
	DNSFailure: {ClassConnection,
		"the upstream's host name does not resolve",
		"fix the host name in the Service's address/endpoints, or the node's DNS"},
	UpstreamReset: {ClassConnection,
		"the upstream closed or reset the connection",
		"look at the upstream's log; an upstream that closes during the TLS handshake often refuses the client certificate or the TLS parameters"},
	NoRoute: {ClassRouting,
		"no route matches the request's method, host and path",
		"apply a Route for this path, or check the request's Host and method"},
	NoHealthyUpstream: {ClassRouting,
		"the route's Service does not exist or has no usable endpoint",
		"apply the Service the route names"},
	ClientCanceled: {ClassOther,
		"the downstream client went away before the upstream answered",
		"nothing to fix on the gateway"},
	ClientCertificateRequired: {ClassClient,
		"the route requires a client certificate and the client presented none",
		"present a client certificate issued by a CA in the Listener host's clientCAs (curl --cert client.crt --key client.key)"},
	ClientCertificateExpired: {ClassClient,
		"the client certificate (or one in its chain) has expired, or is not valid yet",
		"renew the client certificate and reconnect"},
	ClientCertificateUntrusted: {ClassClient,
		"the client certificate does not chain to a CA the Listener host trusts now (it may have been removed from clientCAs)",
		"present a client certificate issued by a CA in the Listener host's clientCAs, or add its CA there"},
	IdentityNotAllowed: {ClassClient,
		"the client certificate is trusted but matches none of the route's allow rules",
		"present a certificate whose identity one of the route's allow rules names, or add a rule for it to the route"},
	MisdirectedRequest: {ClassClient,
		"the request names a host whose Listener host verifies client certificates against other CAs than the host the connection's TLS server name (SNI) chose",
		"send the request on a connection opened with the request's host name as SNI (browsers and Go clients retry a 421 on their own)"},
}

// inbound are the descriptions of handshake failures on a Listener, where
// the gateway is the server and the downstream client is the peer: the same
// reasons as for upstreams, seen from the other side.
var inbound = map[Reason]info{
	NoClientCertificate: {ClassTLS,
		"the Listener host requires a client certificate and the client sent none",
		"make the client present a certificate (curl --cert client.crt --key client.key), or set the host's clientAuth to request or verify-if-given"},
	UnknownAuthority: {ClassTLS,
		"the client certificate is not signed by a CA in the Listener host's clientCAs (or the client did not send its intermediates)",
		"add the CA that issued the client certificate to the host's clientCAs, or make the client send its full chain"},
	Expired: {ClassTLS,
		"the client certificate (or one in its chain) has expired or is not valid yet",
		"renew the client certificate"},
	InvalidCertificate: {ClassTLS,
		"the client certificate cannot be used for client authentication (key usage, malformed, chain longer than verifyDepth)",
		"reissue the client certificate with extendedKeyUsage clientAuth, or raise the host's verifyDepth"},
	ProtocolVersion: {ClassTLS,
		"the client and the Listener host have no TLS version in common",
		"align the host's minversion/maxversion with the versions the client offers"},
	NoSharedCipher: {ClassTLS,
		"the client and the Listener host have no cipher suite in common",
		"add a cipher suite the client offers to the host's ciphers (or remove the list to use the defaults)"},
	NoApplicationProtocol: {ClassTLS,
		"the client offers none of the ALPN protocols the Listener host serves",
		"set the host's alpn to a protocol the client speaks (h2, http/1.1)"},
	NotTLS: {ClassTLS,
		"the client spoke something that is not TLS to the Listener (plain HTTP?)",
		"use https:// for this address"},
	HandshakeTimeout: {ClassTimeout,
		"the client did not complete the TLS handshake in time",
		"check the client; a slow or idle client is cut off after the handshake timeout"},
	Revoked: {ClassTLS,
		"the client certificate has been revoked by its CA (a CRL or an OCSP response lists it)",
		"issue the client a new certificate; a revoked certificate is refused on new and already open connections"},
	RevocationUnknown: {ClassTLS,
		"the revocation status of the client certificate is unknown (no current CRL or OCSP response covers it) and the Listener host's revocation mode is hard-fail",
		"make the CRL or OCSP responder reachable from the proxy node (its log line names the source and the error), or set the host's revocation mode to soft-fail"},
	HandshakeFailure: {ClassTLS,
		"the TLS handshake with the client failed (the client may have refused the server certificate)",
		"check that the client trusts the CA of the host's certificate and asks for one of its hostnames (SNI); the node's log line has the detail"},
}

// InboundDescribe is [Reason.Describe] for a handshake on a Listener,
// where the downstream client is the peer.
func (r Reason) InboundDescribe() string {
	if i, ok := inbound[r]; ok {
		return i.describe
	}
	return r.Describe()
}

// InboundFix is [Reason.Fix] for a handshake on a Listener.
func (r Reason) InboundFix() string {
	if i, ok := inbound[r]; ok {
		return i.fix
	}
	return r.Fix()
}

// Describe says in one line what happened.
func (r Reason) Describe() string { return r.info().describe }

// Fix says in one line what to do about it.
func (r Reason) Fix() string { return r.info().fix }

// Class says where the failure happened.
func (r Reason) Class() Class { return r.info().class }

// String returns the reason's name.
func (r Reason) String() string { return string(r) }

func (r Reason) info() info {
	if i, ok := reasons[r]; ok {
		return i
	}
	return reasons[Unknown]
}

// Reasons lists every known reason, for documentation and metrics.
func Reasons() []Reason {
	out := make([]Reason, 0, len(reasons))
	for r := range reasons {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}
