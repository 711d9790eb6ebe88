// Package console is the policy service's operator console: read-only
// pages, rendered on the server from the binary's own templates and
// stylesheet, of the fleet's certificates by time left, the live nodes,
// the rollouts of recent changes, and the bindings with their last live
// probe.
//
// It reads what the API answers (the same PolicyService the API serves, in
// process) and the probe log (package probelog), behind the same
// authentication and roles as the API (package access; viewer suffices).
// Pages work without JavaScript and ship none: the rollouts and nodes
// pages refresh themselves with a meta refresh. Every response carries a
// strict Content-Security-Policy (default-src 'self', no script at all),
// so a value that slipped past html/template's escaping still could not
// run.
package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/access"
	"keyway.dev/policy/internal/probelog"
)

// API is what the console reads: the policy service's own answers
// ([policyv1connect.PolicyServiceHandler] has these methods). Its methods
// must be safe for concurrent use.
type API interface {
	List(context.Context, *connect.Request[policyv1.ListRequest]) (*connect.Response[policyv1.ListResponse], error)
	GetRollout(context.Context, *connect.Request[policyv1.GetRolloutRequest]) (*connect.Response[policyv1.GetRolloutResponse], error)
	ListAudit(context.Context, *connect.Request[policyv1.ListAuditRequest]) (*connect.Response[policyv1.ListAuditResponse], error)
}

// Guard puts the access control in front of the pages: [access.Server.PageHandler]
// or [access.Guard.PageMiddleware].
type Guard func(table access.Table, h http.Handler, refused access.RefusalWriter) http.Handler

// Config is what the console needs.
type Config struct {
	// API is the service the pages read, asked at each request (the
	// policy service replaces its server when NATS is connected anew).
	API func() API
	// Probes is the log of live probes; nil: the bindings page says no
	// probe was kept.
	Probes *probelog.Log
	// Guard authenticates and authorises each request; required.
	Guard Guard
	// Log logs pages that could not be built; nil: discarded.
	Log *slog.Logger
	// Now is the clock of "time left" and "ago"; nil: time.Now.
	Now func() time.Time
	// Refresh is how often the live pages (rollouts, nodes) reload
	// themselves; zero: DefaultRefresh.
	Refresh time.Duration
}

// DefaultRefresh is how often the rollouts and nodes pages reload.
const DefaultRefresh = 5 * time.Second

// Paths of the pages.
const (
	PathCertificates = "/certificates"
	PathNodes        = "/nodes"
	PathRollouts     = "/rollouts"
	PathBindings     = "/bindings"
	pathAssets       = "/assets/"
)

// Table is the console's access table: every page needs viewer
// (operators and secrets-admins have it). "/" covers every path, so an
// unknown one is a 404 page to a viewer and a refusal to anyone else. The
// stylesheet and icon are open: they are the binary's own, hold nothing
// of the fleet, and a refusal page needs them too.
func Table() access.Table {
	return access.Table{"/": {Role: access.Viewer}, pathAssets: {Open: true}}
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Handler is the console: the pages behind cfg.Guard, with the security
// headers on every answer, refusals included.
func Handler(cfg Config) (http.Handler, error) {
	if cfg.API == nil || cfg.Guard == nil {
		return nil, errors.New("console: the API and the guard are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &console{cfg: cfg, pages: pages}
	assets, err := fs.Sub(assetFS, "assets")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	files := http.StripPrefix(pathAssets, http.FileServerFS(assets))
	mux.HandleFunc("GET "+pathAssets+"{file}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("file") == "" {
			http.NotFound(w, r) // no listing of the folder
			return
		}
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, PathCertificates, http.StatusSeeOther)
	})
	mux.HandleFunc("GET "+PathCertificates, c.certificates)
	mux.HandleFunc("GET "+PathNodes, c.nodes)
	mux.HandleFunc("GET "+PathRollouts, c.rollouts)
	mux.HandleFunc("GET "+PathBindings, c.bindings)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.problem(w, r, http.StatusNotFound, "No such page", fmt.Sprintf("%s is not a page of the console; the pages are %s, %s, %s and %s.",
			clip(r.URL.Path, maxField), PathCertificates, PathNodes, PathRollouts, PathBindings))
	})
	return secure(cfg.Guard(Table(), readOnly(mux), c.refused)), nil
}

// console serves the pages.
type console struct {
	cfg   Config
	pages map[string]*template.Template
}

// contentSecurityPolicy allows the console's own stylesheet and nothing
// else: no script from anywhere, no inline style, no framing, no forms.
const contentSecurityPolicy = "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// secure sets the security headers on every answer.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
		// Pages show the fleet's state now; a cached one would mislead,
		// and none should rest on a shared machine's disk.
		h.Set("Cache-Control", "no-store")
		if r.TLS != nil {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}

// readOnly answers anything but GET and HEAD with 405: the console
// changes nothing.
func readOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the console is read-only: GET and HEAD only; change the configuration with keywayctl", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// page is what every template gets.
type page struct {
	Title string
	// Path is the page's own path (the navigation marks it).
	Path string
	// Refresh, when set, reloads the page every so many seconds.
	Refresh int
	// Generated is when the page was built.
	Generated time.Time
	// Caller names who is looking.
	Caller string
	// Data is the page's own.
	Data any
}

func (c *console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.Generated = c.cfg.Now().UTC()
	if caller := access.FromContext(r.Context()); caller != nil {
		p.Caller = clip(caller.String(), maxField)
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		c.cfg.Log.Error("rendering a console page", "page", name, "error", err)
		http.Error(w, "the page could not be rendered; the policy service's log says why", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// problemData is the error and refusal pages' data.
type problemData struct {
	Status  int
	Heading string
	Message string
	// Fix lists what to do, for a refusal.
	Fix []string
}

func (c *console) problem(w http.ResponseWriter, r *http.Request, status int, heading, msg string) {
	c.render(w, r, status, "problem", page{Title: heading, Data: problemData{Status: status, Heading: heading, Message: msg}})
}

// apiError is the page for an error of the API the console read.
func (c *console) apiError(w http.ResponseWriter, r *http.Request, what string, err error) {
	c.cfg.Log.Warn("console page: reading the API", "page", clip(r.URL.Path, maxField), "reading", what, "error", err)
	status := http.StatusServiceUnavailable
	if connect.CodeOf(err) == connect.CodeInvalidArgument {
		status = http.StatusBadRequest
	}
	c.problem(w, r, status, "The policy service could not answer", fmt.Sprintf("Reading %s: %s", what, clip(err.Error(), maxMessage)))
}

// refused is the page of a request the access control refused: the
// guard's message, which names the fix, and how a browser presents a
// credential.
func (c *console) refused(w http.ResponseWriter, r *http.Request, ref access.Refusal) {
	d := problemData{Status: ref.Status, Message: clip(ref.Err.Error(), maxMessage)}
	if ref.Status == http.StatusUnauthorized {
		d.Heading = "Sign in with a credential the policy service knows"
		d.Fix = []string{
			"In a browser: import a client certificate issued by the operator CA (the policy service's --client-ca), as a PKCS#12 file, into the browser's certificate store, and choose it when asked.",
			"From a tool: send a bearer token that the access policy lists, as the header \"Authorization: Bearer <token>\".",
			"The access policy (--access-policy) must give the identity the viewer role, or operator or secrets-admin, which include it.",
		}
	} else {
		d.Heading = "Your identity may not read the console"
		d.Fix = []string{
			"Bind the identity to the viewer role in the access policy (--access-policy; the policy service reads it again on SIGHUP), or use an identity that holds viewer, operator or secrets-admin.",
		}
	}
	c.render(w, r, ref.Status, "problem", page{Title: d.Heading, Data: d})
}
