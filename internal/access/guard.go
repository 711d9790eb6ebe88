package access

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"

	"connectrpc.com/connect"
)

// Guard authenticates and authorises requests against the current access
// policy. Safe for concurrent use; [Guard.Reload] swaps the policy while
// requests are served.
type Guard struct {
	file   string
	policy atomic.Pointer[Policy]
	log    *slog.Logger
	errw   *connect.ErrorWriter
}

// NewGuard loads the policy file at path.
func NewGuard(path string, log *slog.Logger) (*Guard, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p, err := LoadPolicy(path)
	if err != nil {
		return nil, err
	}
	g := &Guard{file: path, log: log, errw: connect.NewErrorWriter()}
	g.policy.Store(p)
	return g, nil
}

// NewGuardFor is a guard over a policy held in memory (tests, and
// embedders without a file). Reload then fails.
func NewGuardFor(p *Policy, log *slog.Logger) *Guard {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Guard{log: log, errw: connect.NewErrorWriter()}
	g.policy.Store(p)
	return g
}

// Policy is the policy in force.
func (g *Guard) Policy() *Policy { return g.policy.Load() }

// Reload reads the policy file again. On any error the policy in force
// stays, and the error says why the new one was refused.
func (g *Guard) Reload() error {
	if g.file == "" {
		return errors.New("access: the policy was not read from a file")
	}
	p, err := LoadPolicy(g.file)
	if err != nil {
		return fmt.Errorf("keeping the access policy in force: %w", err)
	}
	g.policy.Store(p)
	return nil
}

// Middleware authenticates each request to next and checks that the
// caller holds the role table gives its path; next reads the caller with
// [FromContext]. Refusals reach Connect, gRPC and gRPC-Web clients as
// Unauthenticated or PermissionDenied, plain HTTP clients as 401 or 403,
// with a message that names the fix.
func (g *Guard) Middleware(table Table, next http.Handler) http.Handler {
	return g.middleware(table, next, nil)
}

// Refusal is a request the guard refused: the code, the HTTP status that
// goes with it (401 or 403) and the error, whose message names the fix.
type Refusal struct {
	Code   connect.Code
	Status int
	Err    error
}

// RefusalWriter answers a refused request in a form of its own (an HTML
// page, say); the guard has logged the refusal already.
type RefusalWriter func(w http.ResponseWriter, r *http.Request, ref Refusal)

// PageMiddleware is [Guard.Middleware] for pages a person reads: a refused
// request is logged as the API's are, then answered by refused (an HTML
// page that names the fix, say) instead of in an RPC protocol.
func (g *Guard) PageMiddleware(table Table, next http.Handler, refused RefusalWriter) http.Handler {
	return g.middleware(table, next, refused)
}

func (g *Guard) middleware(table Table, next http.Handler, write RefusalWriter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rule, known := table.Lookup(r.URL.Path)
		if known && rule.Open {
			next.ServeHTTP(w, r)
			return
		}
		caller, err := g.authenticate(r)
		if err != nil {
			g.refuse(w, r, nil, connect.CodeUnauthenticated, err, write)
			return
		}
		switch {
		case !known:
			g.refuse(w, r, caller, connect.CodePermissionDenied,
				fmt.Errorf("%s is not served to anyone here (no entry in the access table); seen as %s", bounded(r.URL.Path), caller), write)
			return
		case rule.Role != "" && !caller.Has(rule.Role):
			g.refuse(w, r, caller, connect.CodePermissionDenied,
				fmt.Errorf("%s needs the %s role; you are %s, with %s: bind the identity to %s in the access policy (--access-policy) or call with an identity that holds it",
					bounded(r.URL.Path), rule.Role, caller, caller.rolesString(), rule.Role), write)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), caller)))
	})
}

// errNoCredential is what a caller without certificate or token is told.
var errNoCredential = errors.New("no credential: present a client certificate issued by the operator CA (keywayctl --cert/--key, buf curl --cert/--key, curl --cert/--key) or a bearer token (keywayctl --token-file, header \"Authorization: Bearer …\")")

// authenticate finds the caller: a verified client certificate, else a
// bearer token the policy lists.
func (g *Guard) authenticate(r *http.Request) (*Caller, error) {
	p := g.policy.Load()
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		leaf := r.TLS.VerifiedChains[0][0]
		return &Caller{Identity: certIdentity(leaf), Method: Certificate, Roles: p.CertificateRoles(leaf), Addr: r.RemoteAddr}, nil
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return nil, errNoCredential
	}
	scheme, token, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return nil, errors.New("the Authorization header is not \"Bearer <token>\"; send the token as \"Authorization: Bearer <token>\" or use a client certificate")
	}
	token = strings.TrimSpace(token)
	roles, known := p.TokenRoles(token)
	if !known {
		return nil, errors.New("the bearer token is not in the access policy: list its SHA-256 (`printf %s \"$TOKEN\" | sha256sum`) as a tokenSHA256 subject, or use a client certificate")
	}
	digest := TokenDigest(token)
	return &Caller{Identity: "token sha256:" + digest[:12], Method: Token, Roles: roles, Addr: r.RemoteAddr}, nil
}

// certIdentity names a certificate's holder: its SPIFFE ID when it has one,
// else its subject.
func certIdentity(leaf *x509.Certificate) string {
	for _, u := range leaf.URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return leaf.Subject.String()
}

// refuse answers a refused request in its protocol, or with write when
// given, and logs it.
func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, caller *Caller, code connect.Code, err error, write RefusalWriter) {
	attrs := []any{"procedure", bounded(r.URL.Path), "reason", code.String(), "peer", r.RemoteAddr}
	if caller != nil {
		attrs = append(attrs, "identity", bounded(caller.Identity), "method", string(caller.Method))
	}
	g.log.Info("call refused", attrs...)
	status := http.StatusForbidden
	if code == connect.CodeUnauthenticated {
		status = http.StatusUnauthorized
	}
	if write != nil {
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyway"`)
		}
		write(w, r, Refusal{Code: code, Status: status, Err: err})
		return
	}
	if g.errw.IsSupported(r) {
		_ = g.errw.Write(w, r, connect.NewError(code, err))
		return
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyway"`)
	}
	http.Error(w, err.Error(), status)
}
