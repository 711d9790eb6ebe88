// Package publish is the last step of a proxy node's configuration
// pipeline (watch → translate → publish): from what package translate
// gives, it resolves references to the secrets service into TLS material,
// builds the Upstreams (transports) and the routing table that changed,
// hands the Listeners to the inbound servers, and publishes one immutable
// [Snapshot] behind an atomic.Pointer. Upstreams that are replaced are
// drained in the background.
//
// Only what a change invalidated ([translate.Dirty]) is rebuilt: a binding
// or Service change, that Service's Upstream (kept when its endpoints and
// TLS fingerprint are the same); a route change, the shards of the routing
// table that route leaves and joins (router.Table.Update; the whole table
// when Update cannot), and the Upstreams of the changed routes only; a
// Listener or tls-inbound binding change, the Listeners.
//
// What cannot be built (an Upstream, a reference that does not resolve, a
// Listener the inbound servers cannot serve, a panic while building) is
// refused: the key keeps what it served, and the refusal is listed in
// [Snapshot.Skipped] until a later value or a delete supersedes it.
package publish
