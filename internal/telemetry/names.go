package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// InstrumentationName is the scope of every span Keyway starts.
const InstrumentationName = "keyway.dev"

// Span names. They are stable: dashboards and alerts may select on them.
const (
	// SpanPolicyApply is the policy service's Apply RPC: the server span
	// otelconnect starts, named after the procedure (every RPC has one).
	SpanPolicyApply = "keyway.policy.v1.PolicyService/Apply"
	// SpanStoreWrite is one all-or-nothing write of an apply's resources
	// to the configuration bucket.
	SpanStoreWrite = "keyway.store.write"
	// SpanStorePut is one key written (or deleted): its message carries
	// the trace context in its headers.
	SpanStorePut = "keyway.store.put"
	// SpanNodeApply is a proxy node applying one batch of changes read
	// from the bucket: decoding and validation, transport rebuild and
	// snapshot swap. Its parent is the SpanStorePut of the first change
	// of the batch; the others are links.
	SpanNodeApply = "keyway.node.apply"
	// SpanSecretFetch is the fetch of one secret (a keystore alias or a
	// truststore) from the secrets service; see [StartSecretFetch].
	SpanSecretFetch = "keyway.secret.fetch"
	// SpanInboundHandshake is the TLS handshake of one connection accepted
	// on a Listener. It is the root of its own trace; each request on the
	// connection links to it.
	SpanInboundHandshake = "keyway.inbound.handshake"
	// SpanRequest is one request through the proxy (server kind).
	SpanRequest = "keyway.proxy.request"
	// SpanUpstreamRequest is the round trip of a request to its
	// upstream (client kind); its context is what the upstream receives
	// in traceparent. How it got its connection is in its keyway.conn.*
	// attributes; a new connection's handshake is its child
	// SpanOutboundHandshake.
	SpanUpstreamRequest = "keyway.upstream.request"
	// SpanOutboundHandshake is the TCP connection and TLS handshake of a
	// new connection to an upstream (or of a live probe).
	SpanOutboundHandshake = "keyway.outbound.handshake"
)

// Event names.
const (
	// EventRouteMatch is added to SpanRequest when a route matched.
	EventRouteMatch = "keyway.route.match"
	// EventConfigEntry is added to SpanNodeApply for each change of its
	// batch: key, revision, operation, and the error of a refused one.
	EventConfigEntry = "keyway.config.entry"
)

// Attribute keys of the OpenTelemetry semantic conventions that Keyway sets.
const (
	AttrTLSProtocolVersion   = semconv.TLSProtocolVersionKey  // "1.3"
	AttrTLSCipher            = semconv.TLSCipherKey           // IANA name
	AttrTLSNextProtocol      = semconv.TLSNextProtocolKey     // ALPN
	AttrTLSResumed           = semconv.TLSResumedKey          // session resumed
	AttrTLSEstablished       = semconv.TLSEstablishedKey      // handshake completed
	AttrTLSServerSubject     = semconv.TLSServerSubjectKey    // upstream leaf subject
	AttrTLSServerNotAfter    = semconv.TLSServerNotAfterKey   // RFC 3339
	AttrTLSServerHashSHA256  = semconv.TLSServerHashSha256Key // upper-case hex of the DER
	AttrTLSClientSubject     = semconv.TLSClientSubjectKey
	AttrTLSClientNotAfter    = semconv.TLSClientNotAfterKey
	AttrTLSClientHashSHA256  = semconv.TLSClientHashSha256Key
	AttrServerAddress        = semconv.ServerAddressKey
	AttrServerPort           = semconv.ServerPortKey
	AttrClientAddress        = semconv.ClientAddressKey
	AttrHTTPRequestMethod    = semconv.HTTPRequestMethodKey
	AttrHTTPResponseStatus   = semconv.HTTPResponseStatusCodeKey
	AttrHTTPRoute            = semconv.HTTPRouteKey
	AttrURLPath              = semconv.URLPathKey
	AttrURLScheme            = semconv.URLSchemeKey
	AttrNetworkProtocolVer   = semconv.NetworkProtocolVersionKey
	AttrErrorType            = semconv.ErrorTypeKey // the failure reason on failing spans
	AttrMessagingSystem      = semconv.MessagingSystemKey
	AttrMessagingDestination = semconv.MessagingDestinationNameKey
)

// Keyway's own attribute keys, where no convention exists.
const (
	// AttrFailureReason is the [failure.Reason] of a failing span
	// ("unknown_authority"), the value of 502 bodies and metric labels.
	AttrFailureReason = attribute.Key("keyway.failure.reason")
	// AttrUpstream is the Service name a request or handshake is for.
	AttrUpstream = attribute.Key("keyway.upstream")
	// AttrRoute is the Route resource that matched.
	AttrRoute = attribute.Key("keyway.route")
	// AttrListener is the Listener a connection arrived on.
	AttrListener = attribute.Key("keyway.listener")
	// AttrRequestID is the request's X-Request-Id.
	AttrRequestID = attribute.Key("keyway.request_id")
	// AttrNodeID is the proxy node.
	AttrNodeID = attribute.Key("keyway.node.id")
	// AttrConfigRevision is a store revision: the one written (store
	// spans) or the one the node serves after applying (node spans).
	AttrConfigRevision = attribute.Key("keyway.config.revision")
	// AttrConfigKey is one bucket key ("policybinding.orders-mtls").
	AttrConfigKey = attribute.Key("keyway.config.key")
	// AttrConfigKeys are the bucket keys of a node's batch.
	AttrConfigKeys = attribute.Key("keyway.config.keys")
	// AttrConfigOperation is "put" or "delete".
	AttrConfigOperation = attribute.Key("keyway.config.operation")
	// AttrConfigError is why a node refused a change (on EventConfigEntry).
	AttrConfigError = attribute.Key("keyway.config.error")
	// AttrConfigResources is how many resources an apply carried.
	AttrConfigResources = attribute.Key("keyway.config.resources")
	// AttrConfigSkipped are the keys a node refused in a batch.
	AttrConfigSkipped = attribute.Key("keyway.config.skipped")
	// AttrUpstreamsRebuilt are the Services whose transport a batch rebuilt.
	AttrUpstreamsRebuilt = attribute.Key("keyway.upstreams.rebuilt")
	// AttrDryRun is set on an apply that writes nothing.
	AttrDryRun = attribute.Key("keyway.dry_run")
	// AttrConnReused is whether the upstream connection came from the pool.
	AttrConnReused = attribute.Key("keyway.conn.reused")
	// AttrConnWasIdle is whether a pooled connection was idle.
	AttrConnWasIdle = attribute.Key("keyway.conn.was_idle")
	// AttrConnWait is the wait for a connection (pooled or new), in
	// seconds.
	AttrConnWait = attribute.Key("keyway.conn.wait")
	// AttrConnIdleTime is how long it was idle, in seconds.
	AttrConnIdleTime = attribute.Key("keyway.conn.idle_time")
	// AttrUpstreamEndpoint is the endpoint ("host:port") a failed
	// request was sent to.
	AttrUpstreamEndpoint = attribute.Key("keyway.upstream.endpoint")
	// AttrTLSServerName is the server name sent (SNI) or asked for.
	AttrTLSServerName = attribute.Key("keyway.tls.server_name")
	// AttrTLSServerSANs are the upstream leaf's subjectAltNames.
	AttrTLSServerSANs = attribute.Key("keyway.tls.server.sans")
	// AttrTLSClientSANs are the client certificate's subjectAltNames.
	AttrTLSClientSANs = attribute.Key("keyway.tls.client.sans")
	// AttrTLSClientCertificateRequested is whether the upstream asked us
	// for a client certificate; AttrTLSClientCertificateSent whether we
	// sent one.
	AttrTLSClientCertificateRequested = attribute.Key("keyway.tls.client_certificate.requested")
	AttrTLSClientCertificateSent      = attribute.Key("keyway.tls.client_certificate.sent")
	// AttrTLSContextFingerprint is the tls-outbound context's fingerprint
	// (as in /status and metrics).
	AttrTLSContextFingerprint = attribute.Key("keyway.tls.context.fingerprint")
	// AttrSecretRef names a secret fetched: "keystore/edge#gw".
	AttrSecretRef = attribute.Key("keyway.secret.ref")
	// AttrSecretVersion is the version of a secret fetched.
	AttrSecretVersion = attribute.Key("keyway.secret.version")
)
