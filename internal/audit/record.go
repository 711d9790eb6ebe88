package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"
	"unicode/utf8"

	"keyway.dev/internal/access"
)

// Services that write records.
const (
	ServicePolicy  = "policy"
	ServiceSecrets = "secrets"
)

// Actions recorded.
const (
	ActionApply        = "apply"
	ActionDelete       = "delete"
	ActionRollback     = "rollback"
	ActionSecretPut    = "secret.put"
	ActionSecretDelete = "secret.delete"
	// ActionSecretForceDelete is a delete of a secret that resources of
	// the configuration used, or whose users could not be determined,
	// made with force; Detail says which.
	ActionSecretForceDelete = "secret.delete.forced"
)

// Results of a write. An "attempt" record precedes every write; "ok" or
// "failed" (with the same ID) follows it.
const (
	ResultAttempt = "attempt"
	ResultOK      = "ok"
	ResultFailed  = "failed"
)

// Actor is who made a call, as the API authenticated it.
type Actor struct {
	// Identity is the authenticated identity (a SPIFFE ID, a certificate
	// subject, a token's name); empty when the service runs without
	// authentication.
	Identity string `json:"identity,omitempty"`
	// Method is how the caller authenticated: "certificate", "token", or
	// empty.
	Method string `json:"method,omitempty"`
	// Addr is the caller's network address, host:port.
	Addr string `json:"addr,omitempty"`
}

// Record is one entry of the audit trail, stored as JSON.
type Record struct {
	// ID pairs an attempt record with its outcome.
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Actor   Actor     `json:"actor"`
	Service string    `json:"service"`
	Action  string    `json:"action"`
	// Kind and Name say what was written: a resource kind and name, or
	// "alias" and "keystore/alias", or "truststore" and its name.
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Revision is the configuration store's revision the write made
	// (policy); 0 in attempt records and for failed writes.
	Revision uint64 `json:"revision,omitempty"`
	// Version is the secret version the write made (secrets); empty in
	// attempt records, for deletions and for failed writes.
	Version string `json:"version,omitempty"`
	// Digest is the SHA-256, lowercase hex, of the bytes stored (policy) or
	// of the secret's public parts (secrets); empty for deletions.
	Digest string `json:"digest,omitempty"`
	Result string `json:"result"`
	// Error says why a write failed.
	Error string `json:"error,omitempty"`
	// Detail says more about a write than the fields above: for a forced
	// delete, the resources that still used the secret.
	Detail  string `json:"detail,omitempty"`
	TraceID string `json:"traceId,omitempty"`
}

// Field bounds: a record's fields are cut to these many bytes, so that no
// client value makes a record large.
const (
	maxShort = 64   // service, action, result, method, kind, ID, trace ID, digest
	maxField = 256  // identity, address, name
	maxError = 1024 // error
)

// bounded returns r with every field cut to its bound.
func (r Record) bounded() Record {
	r.ID = cut(r.ID, maxShort)
	r.Service = cut(r.Service, maxShort)
	r.Action = cut(r.Action, maxShort)
	r.Result = cut(r.Result, maxShort)
	r.Kind = cut(r.Kind, maxShort)
	r.Digest = cut(r.Digest, maxShort)
	r.Version = cut(r.Version, maxShort)
	r.TraceID = cut(r.TraceID, maxShort)
	r.Actor.Method = cut(r.Actor.Method, maxShort)
	r.Actor.Identity = cut(r.Actor.Identity, maxField)
	r.Actor.Addr = cut(r.Actor.Addr, maxField)
	r.Name = cut(r.Name, maxField)
	r.Error = cut(r.Error, maxError)
	r.Detail = cut(r.Detail, maxError)
	return r
}

// cut shortens s to at most n bytes on a rune boundary, marking the cut
// with "…".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	end := n - len("…")
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return strings.ToValidUTF8(s[:end], "") + "…"
}

// NewID returns a random record ID (16 hex digits).
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type peerKey struct{}

// WithPeer records the caller's network address in ctx (an RPC handler
// passes connect.Request.Peer().Addr), for [PeerActor].
func WithPeer(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, peerKey{}, addr)
}

// PeerActor is the actor known from ctx without authentication: the peer
// address [WithPeer] recorded.
func PeerActor(ctx context.Context) Actor {
	addr, _ := ctx.Value(peerKey{}).(string)
	return Actor{Addr: addr}
}

// ActorFrom says who made the call whose context is ctx: the caller the
// access middleware authenticated ([access.FromContext]), with the peer
// address [WithPeer] recorded when the caller carries none.
func ActorFrom(ctx context.Context) Actor {
	a := PeerActor(ctx)
	if c := access.FromContext(ctx); c != nil {
		a.Identity, a.Method = c.Identity, string(c.Method)
		if c.Addr != "" {
			a.Addr = c.Addr
		}
	}
	return a
}
