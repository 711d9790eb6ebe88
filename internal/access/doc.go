// Package access decides who may call Keyway's APIs: the policy service,
// the secrets service (SecretsService and MaterialService) and a proxy
// node's admin port.
//
// A caller is authenticated by a client certificate that chains to one of
// the --client-ca certificates (the TLS handshake verifies it), or by a
// bearer token whose SHA-256 digest the access policy lists. The access
// policy ([Policy], a file in the resource format, kind AccessPolicy) then
// gives the caller's identity its [Role]s, and a [Table] per service says
// which role each procedure needs. [Guard.Middleware] does both in front
// of a Connect handler, answering Unauthenticated or PermissionDenied in the
// caller's protocol (Connect, gRPC, gRPC-Web; 401/403 for plain HTTP); the
// handler reads the caller with [FromContext].
//
// [Options] are the flags every binary shares (--tls-cert, --tls-key,
// --client-ca, --access-policy, --insecure-no-auth); [NewServer] turns them
// into a listener and a guard, and refuses to start without either TLS
// and a policy or the explicit, loopback-only --insecure-no-auth.
package access
