package access

import (
	"context"
	"slices"
	"strings"
)

// Role is a set of procedures a caller may call; see the tables
// ([PolicyAPI], [SecretsAPI], [MaterialAPI], [NodeAdmin]).
type Role string

// The roles. Operator and secrets-admin include what viewer may; node is
// MaterialService alone.
const (
	// Viewer reads: resources, nodes, rollouts, secrets' descriptions
	// (never keys), a node's /status and /metrics.
	Viewer Role = "viewer"
	// Operator applies and deletes resources, and reads as viewer does.
	Operator Role = "operator"
	// SecretsAdmin puts and deletes secrets, and reads as viewer does.
	SecretsAdmin Role = "secrets-admin"
	// Node fetches key material from MaterialService, and nothing else.
	Node Role = "node"
)

// Roles are all roles, in the order documentation lists them.
var Roles = []Role{Viewer, Operator, SecretsAdmin, Node}

// grants reports whether holding r lets a caller do what need allows.
func (r Role) grants(need Role) bool {
	if r == need {
		return true
	}
	return need == Viewer && (r == Operator || r == SecretsAdmin)
}

// Method is how a caller was authenticated.
type Method string

// Authentication methods.
const (
	// Certificate: a client certificate verified against --client-ca.
	Certificate Method = "certificate"
	// Token: a bearer token whose digest the access policy lists.
	Token Method = "token"
	// None: the service runs with --insecure-no-auth, or the path is open
	// (health); the caller is unknown.
	None Method = "none"
)

// Caller is an authenticated (or, with [None], unauthenticated) caller of
// an API, as the middleware saw it.
type Caller struct {
	// Identity names the caller: the certificate's SPIFFE ID, else its
	// subject; for a token "token sha256:<first 12 hex digits>". Never a
	// secret.
	Identity string
	Method   Method
	// Roles are the roles the access policy binds to the identity, in
	// [Roles] order.
	Roles []Role
	// Addr is the peer's address (host:port).
	Addr string
}

// Has reports whether the caller may do what role allows (an operator or
// secrets-admin also has viewer's rights).
func (c *Caller) Has(role Role) bool {
	if c == nil {
		return false
	}
	for _, r := range c.Roles {
		if r.grants(role) {
			return true
		}
	}
	return false
}

// String is "identity (method)" for messages and logs.
func (c *Caller) String() string {
	if c == nil {
		return "nobody"
	}
	return c.Identity + " (" + string(c.Method) + ")"
}

func (c *Caller) rolesString() string {
	if len(c.Roles) == 0 {
		return "no role"
	}
	names := make([]string, len(c.Roles))
	for i, r := range c.Roles {
		names[i] = string(r)
	}
	return "the roles " + strings.Join(names, ", ")
}

type callerKey struct{}

// NewContext returns ctx carrying the caller.
func NewContext(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// FromContext is the caller the middleware authenticated for this request,
// or nil outside a request (or for an open path such as health).
func FromContext(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	return c
}

// sortRoles puts roles in [Roles] order without duplicates.
func sortRoles(set map[Role]bool) []Role {
	var out []Role
	for _, r := range Roles {
		if set[r] {
			out = append(out, r)
		}
	}
	return slices.Clip(out)
}
