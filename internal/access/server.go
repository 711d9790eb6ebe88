package access

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"keyway.dev/internal/certfiles"
	"keyway.dev/internal/model"
)

// Environment variables of the flags [Options.RegisterFlags] defines, as
// package envflag names them.
const (
	EnvTLSCert        = "KEYWAY_TLS_CERT"
	EnvTLSKey         = "KEYWAY_TLS_KEY"
	EnvClientCA       = "KEYWAY_CLIENT_CA"
	EnvAccessPolicy   = "KEYWAY_ACCESS_POLICY"
	EnvInsecureNoAuth = "KEYWAY_INSECURE_NO_AUTH"
)

// Options are the flags every API shares.
type Options struct {
	// CertFile and KeyFile are the API's server certificate and key (PEM).
	CertFile, KeyFile string
	// ClientCAFile holds the CAs whose client certificates authenticate
	// callers (PEM, one or more).
	ClientCAFile string
	// PolicyFile is the access policy.
	PolicyFile string
	// InsecureNoAuth serves plain h2c with no authentication, on a
	// loopback address only.
	InsecureNoAuth bool
}

// RegisterFlags defines --tls-cert, --tls-key, --client-ca,
// --access-policy and --insecure-no-auth on fs; envflag.Parse reads their
// environment forms (Env*). what names the API in the help ("API", "admin
// port").
func (o *Options) RegisterFlags(fs *flag.FlagSet, what string) {
	fs.StringVar(&o.CertFile, "tls-cert", "", "the "+what+"'s server certificate, PEM; read again with --tls-key when the files change")
	fs.StringVar(&o.KeyFile, "tls-key", "", "key of --tls-cert, PEM")
	fs.StringVar(&o.ClientCAFile, "client-ca", "", "CA certificates whose client certificates authenticate callers of the "+what+", PEM; read again when the file changes")
	fs.StringVar(&o.PolicyFile, "access-policy", "", "access policy file (kind AccessPolicy): who holds which role; re-read on SIGHUP")
	fs.BoolVar(&o.InsecureNoAuth, "insecure-no-auth", false, "serve the "+what+" without TLS or authentication, on a loopback address only: for measurements, never in use")
}

// flagsHint says which flags turn authentication on.
const flagsHint = "give --tls-cert, --tls-key, --client-ca and --access-policy (env KEYWAY_TLS_CERT, KEYWAY_TLS_KEY, KEYWAY_CLIENT_CA, KEYWAY_ACCESS_POLICY), or --insecure-no-auth to serve without authentication on loopback"

// Server is an API's transport security and access control, built from
// [Options]. Safe for concurrent use.
type Server struct {
	opts  Options
	log   *slog.Logger
	guard *Guard
	// pair and callers are the certificate and the client CAs, each read
	// again when its files change (package certfiles); tls serves them.
	pair    *certfiles.KeyPair
	callers *certfiles.Bundle
	tls     *tls.Config
}

// NewServer checks the options for an API listening on listen and loads
// the certificate, client CAs and policy. Without TLS and a policy it
// refuses to start, unless InsecureNoAuth is set and listen is a loopback
// address; then it logs a warning.
func NewServer(o Options, listen string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: o, log: log}
	if o.InsecureNoAuth {
		if o.CertFile != "" || o.KeyFile != "" || o.ClientCAFile != "" || o.PolicyFile != "" {
			return nil, errors.New("--insecure-no-auth serves without TLS and authentication: drop it, or drop --tls-cert, --tls-key, --client-ca and --access-policy")
		}
		if err := CheckLoopback(listen); err != nil {
			return nil, err
		}
		log.Warn("authentication is off (--insecure-no-auth): anyone who reaches this address may call every procedure; use it only to measure", "addr", listen)
		return s, nil
	}
	var missing []string
	for _, f := range []struct{ flag, value string }{
		{"--tls-cert", o.CertFile}, {"--tls-key", o.KeyFile}, {"--client-ca", o.ClientCAFile}, {"--access-policy", o.PolicyFile},
	} {
		if f.value == "" {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("every API is served over TLS to authenticated callers, and %s %s not given: %s",
			strings.Join(missing, ", "), map[bool]string{true: "is", false: "are"}[len(missing) == 1], flagsHint)
	}
	var err error
	if s.pair, s.callers, s.tls, err = serverTLS(o.CertFile, o.KeyFile, o.ClientCAFile); err != nil {
		return nil, err
	}
	if s.guard, err = NewGuard(o.PolicyFile, log); err != nil {
		return nil, err
	}
	log.Info("access control on", "access_policy", o.PolicyFile, "bindings", s.guard.Policy().Bindings(), "client_ca", o.ClientCAFile)
	return s, nil
}

// Certificate is the server certificate in force (read again when its
// files change, and on SIGHUP); nil with --insecure-no-auth.
func (s *Server) Certificate() *x509.Certificate {
	if s.pair == nil {
		return nil
	}
	return s.pair.Leaf()
}

// ClientCAs are the callers' CAs in force (--client-ca, read again when
// the file changes); nil with --insecure-no-auth.
func (s *Server) ClientCAs() []*x509.Certificate {
	if s.callers == nil {
		return nil
	}
	return s.callers.Certificates()
}

// Insecure reports whether the server runs with --insecure-no-auth.
func (s *Server) Insecure() bool { return s.guard == nil }

// Guard is the access control, nil with --insecure-no-auth.
func (s *Server) Guard() *Guard { return s.guard }

// Handler wraps h with the guard and table; with --insecure-no-auth every
// request's caller is an unauthenticated one ([None]).
func (s *Server) Handler(table Table, h http.Handler) http.Handler {
	if s.guard == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := &Caller{Identity: "anonymous (--insecure-no-auth)", Method: None, Roles: Roles, Addr: r.RemoteAddr}
			h.ServeHTTP(w, r.WithContext(NewContext(r.Context(), c)))
		})
	}
	return s.guard.Middleware(table, h)
}

// PageHandler is [Server.Handler] for pages a person reads: a refused
// request is logged as the API's are, then answered by refused (an HTML
// page that names the fix, say) instead of in an RPC protocol.
func (s *Server) PageHandler(table Table, h http.Handler, refused RefusalWriter) http.Handler {
	if s.guard == nil {
		return s.Handler(table, h)
	}
	return s.guard.PageMiddleware(table, h, refused)
}

// Listen binds addr: TLS with the current certificate, or plain TCP with
// --insecure-no-auth.
func (s *Server) Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	if s.guard == nil {
		return ln, nil
	}
	return tls.NewListener(ln, s.tls), nil
}

// Protocols are HTTP/1.1 and HTTP/2: over TLS (ALPN), or h2c with
// --insecure-no-auth.
func (s *Server) Protocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	if s.guard == nil {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP2(true)
	}
	return p
}

// Scheme is "https", or "http" with --insecure-no-auth.
func (s *Server) Scheme() string {
	if s.guard == nil {
		return "http"
	}
	return "https"
}

// Reload reads the policy, and looks at the certificate, key and client
// CAs now rather than at the next handshake after the check interval (they
// are read again when their files change in any case). Each part is
// swapped only when it loads; on an error the old one stays in force and
// the error says why.
func (s *Server) Reload() error {
	if s.guard == nil {
		return nil
	}
	var errs []error
	if err := s.guard.Reload(); err != nil {
		errs = append(errs, err)
	}
	if err := s.pair.Reload(); err != nil {
		errs = append(errs, fmt.Errorf("keeping the TLS certificate in force (--tls-cert, --tls-key): %w", err))
	}
	if err := s.callers.Reload(); err != nil {
		errs = append(errs, fmt.Errorf("keeping the client CAs in force (--client-ca): %w", err))
	}
	return errors.Join(errs...)
}

// ReloadOnSIGHUP reloads on each SIGHUP until ctx ends, logging the
// outcome.
func (s *Server) ReloadOnSIGHUP(ctx context.Context) {
	if s.guard == nil {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := s.Reload(); err != nil {
					s.log.Error("reload refused; the previous access policy and certificates stay in force", "error", err)
					continue
				}
				s.log.Info("access policy and certificates reloaded", "access_policy", s.opts.PolicyFile, "bindings", s.guard.Policy().Bindings())
			}
		}
	}()
}

// serverTLS is an API's TLS configuration: its certificate, client
// certificates verified against the CAs in clientCAFile when given (a
// caller may instead present a bearer token), TLS 1.2 or later, HTTP/2 and
// HTTP/1.1 by ALPN. The certificate and the CAs are read again when their
// files change (at most once per certfiles.DefaultCheckInterval, at a
// handshake; a file that does not load keeps the last good one), so a
// renewed certificate is served, and a CA added to the bundle trusted, at
// the next handshake with no restart: the same mechanism as the internal
// ports'.
func serverTLS(certFile, keyFile, clientCAFile string) (*certfiles.KeyPair, *certfiles.Bundle, *tls.Config, error) {
	pair, err := certfiles.Load(certFile, keyFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("loading the server certificate --tls-cert %s and key --tls-key %s: %w", certFile, keyFile, err)
	}
	callers, err := certfiles.LoadBundle(clientCAFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--client-ca: %w", err)
	}
	return pair, callers, callers.ServerConfig(&tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: pair.GetCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		NextProtos:     model.DefaultALPN(),
	}), nil
}

// CheckLoopback refuses a listen address that is not a loopback IP or
// "localhost" (an empty host or 0.0.0.0 listens on every interface).
func CheckLoopback(listen string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", bounded(listen), err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--insecure-no-auth serves without authentication and binds loopback only, not %q: listen on 127.0.0.1 or ::1, or serve with TLS (%s)", bounded(listen), strings.TrimPrefix(flagsHint, "give "))
}
