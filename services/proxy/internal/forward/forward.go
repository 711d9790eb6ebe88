// Package forward is the node's request path: route lookup in the current
// snapshot (one atomic load), then forwarding on the route's Upstream. Failures
// answer with a JSON body that names a [failure.Reason] and the fix, and are
// logged in full with the request id.
package forward

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/identity"
	"keyway.dev/internal/telemetry"
	"keyway.dev/proxy/internal/inbound"
	"keyway.dev/proxy/internal/publish"
	"keyway.dev/proxy/internal/router"
	"keyway.dev/proxy/internal/upstream"
)

// HeaderRequestID carries the request id, in both directions.
const HeaderRequestID = "X-Request-Id"

// HeaderXFCC carries the verified client certificate of a request that
// arrived on a Listener to the upstream, in Envoy's format. A client's own
// is always removed.
const HeaderXFCC = "X-Forwarded-Client-Cert"

// Source gives the current configuration snapshot. Snapshot must be cheap
// (an atomic load) and never return nil.
type Source interface {
	Snapshot() *publish.Snapshot
}

// Handler forwards requests per the current snapshot.
type Handler struct {
	src Source
	log *slog.Logger
	ids *RequestIDs
	tr  telemetry.Tracing
}

// New returns the handler. ids makes request ids for requests without one.
// With tr on, every request gets a [telemetry.SpanRequest] span; off, the
// request path does no tracing work at all.
func New(src Source, ids *RequestIDs, log *slog.Logger, tr telemetry.Tracing) *Handler {
	return &Handler{src: src, ids: ids, log: log, tr: tr}
}

// maxAttempts bounds the retries when the Upstream found was being drained;
// one is enough in practice, as the replacement is published first.
const maxAttempts = 8

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 {
		growStack() // a new goroutine per stream
	}
	id := r.Header.Get(HeaderRequestID)
	if id == "" || len(id) > 200 {
		id = h.ids.Next()
		r.Header[HeaderRequestID] = []string{id}
	}
	if h.tr.Tracer != nil {
		h.serveTraced(w, r, id)
		return
	}
	h.serve(w, r, id, nil)
}

// serve forwards r; span is the request's span, nil when tracing is off.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, id string, span trace.Span) {
	for range maxAttempts {
		s := h.src.Snapshot()
		if !s.Ready {
			writeError(w, id, "", failure.NoHealthyUpstream, "the node has not loaded its configuration yet", http.StatusServiceUnavailable)
			failSpan(span, failure.NoHealthyUpstream, "the node has not loaded its configuration yet", http.StatusServiceUnavailable)
			return
		}
		target, ok := s.Router.Match(r, inbound.ListenerOf(r))
		if !ok {
			writeError(w, id, "", failure.NoRoute, "", StatusCode(failure.NoRoute))
			failSpan(span, failure.NoRoute, "", StatusCode(failure.NoRoute))
			return
		}
		if span != nil {
			routeMatched(span, target)
		}
		if !h.admit(w, r, id, target, span) {
			return
		}
		u := s.Upstream(target)
		if u == nil {
			h.log.WarnContext(r.Context(), "route to a service that does not exist", "route", target.Route, "upstream", target.Service, "request_id", id)
			writeError(w, id, target.Service, failure.NoHealthyUpstream, "", StatusCode(failure.NoHealthyUpstream))
			failSpan(span, failure.NoHealthyUpstream, "the route's Service does not exist", StatusCode(failure.NoHealthyUpstream))
			return
		}
		if u.Forward(w, r) {
			return
		}
	}
	writeError(w, id, "", failure.NoHealthyUpstream, "", StatusCode(failure.NoHealthyUpstream))
	failSpan(span, failure.NoHealthyUpstream, "", StatusCode(failure.NoHealthyUpstream))
}

// admit applies the route's client-certificate rules to a request that
// arrived on a Listener, answering 401 or 403 when it is refused, and sets
// the request's X-Forwarded-Client-Cert (after removing the client's).
//
// A certificate is judged against the host's current snapshot, at now: on
// a host that verifies clients, an expired or no longer trusted
// certificate is refused on every route, so that neither a resumed session
// nor an open connection carries it past its expiry or its CA's removal.
// On a host that only requests one, a route that needs an identity still
// requires it verified by the host's clientCAs.
//
// A route that needs an identity fails closed everywhere else: on the
// plain-HTTP port, where no certificate can be asked for, it answers 401
// client_certificate_required; on a connection whose TLS server name chose
// a host that trusts other client CAs than the host the request's Host
// names (a request sent on a connection opened for another name, as HTTP/2
// coalescing does), it answers 421 so that the client retries on a
// connection of its own.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request, id string, target *router.Target, span trace.Span) bool {
	delete(r.Header, HeaderXFCC)
	need := target.NeedsIdentity()
	refuse := func(reason failure.Reason, fix string) bool {
		h.log.InfoContext(r.Context(), "client refused", "route", target.Route, "reason", string(reason), "client", r.RemoteAddr, "request_id", id)
		status := clientStatus(reason)
		writeError(w, id, "", reason, fix, status)
		failSpan(span, reason, fix, status)
		return false
	}
	cl, ok := inbound.ClientOf(r, time.Now())
	if !ok {
		if need {
			return refuse(failure.ClientCertificateRequired, plainPortFix(target.Route))
		}
		return true
	}
	switch {
	case need && cl.Misdirected:
		return refuse(failure.MisdirectedRequest, fmt.Sprintf(
			"route %q needs a client certificate verified by the Listener host that serves %q, and this connection was opened for TLS server name %q, whose host trusts other client CAs: open a connection whose SNI is the request's host name",
			target.Route, bounded(r.Host), bounded(r.TLS.ServerName)))
	case cl.Leaf == nil:
		if need {
			return refuse(failure.ClientCertificateRequired, "")
		}
		return true
	case !cl.CanVerify:
		if need {
			return refuse(failure.ClientCertificateUntrusted, fmt.Sprintf(
				"route %q needs a verified client certificate, and the Listener host serving %q has no clientCAs: set its clientAuth to verify-if-given or require-and-verify, with clientCAs",
				target.Route, r.TLS.ServerName))
		}
		return true
	case cl.Reason != "":
		if need || cl.HostVerifies {
			return refuse(cl.Reason, cl.Reason.InboundFix())
		}
		return true
	}
	if len(target.Allow) > 0 && !target.Admits(cl.Leaf) {
		return refuse(failure.IdentityNotAllowed, fmt.Sprintf(
			"present a client certificate whose %s one of route %q's allow rules names, or add a rule for this client to the route",
			ruleKinds(target.Allow), target.Route))
	}
	r.Header[HeaderXFCC] = []string{cl.XFCC}
	return true
}

// plainPortFix is the fix for a request for route, which needs a verified
// client certificate, that arrived on the plain-HTTP port.
func plainPortFix(route string) string {
	return fmt.Sprintf("route %q needs a verified client certificate, and this is the plain-HTTP port, where none is asked for: "+
		"call it with https:// on a Listener whose host verifies client certificates (curl --cert client.crt --key client.key); "+
		"to stop serving the route here, add listeners: [<listener>] to it", route)
}

// bounded is at most 64 bytes of a client-supplied value, for a message.
func bounded(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// ruleKinds names the kinds of rule in rules ("spiffeID or dnsName"), as
// the API spells them; never their values.
func ruleKinds(rules []identity.Rule) string {
	var kinds []string
	add := func(set bool, kind string) {
		if set && !slices.Contains(kinds, kind) {
			kinds = append(kinds, kind)
		}
	}
	for _, r := range rules {
		add(r.SPIFFEID != "", "spiffeID")
		add(r.URI != "", "uri")
		add(r.DNSName != "", "dnsName")
		add(r.CN != "", "subject CN")
		add(r.OU != "", "subject OU")
		add(len(r.SPKISHA256) > 0, "spkiSHA256")
	}
	return strings.Join(kinds, " or ")
}

// UpstreamOptions adds the handler's hooks to opts: the error answer, the
// response request id and a shared buffer pool.
func UpstreamOptions(opts upstream.Options, log *slog.Logger) upstream.Options {
	opts.ErrorHandler = func(w http.ResponseWriter, r *http.Request, u *upstream.Upstream, err *upstream.Error) int {
		id := r.Header.Get(HeaderRequestID)
		if err.Reason == failure.ClientCanceled || r.Context().Err() != nil {
			log.Debug("client went away", "upstream", u.Name(), "endpoint", err.Endpoint, "request_id", id)
			w.WriteHeader(499) // nginx's "client closed request"; nobody reads it
			return 499
		}
		log.WarnContext(r.Context(), "upstream request failed",
			"upstream", u.Name(), "reason", string(err.Reason), "endpoint", err.Endpoint,
			"request_id", id, "fingerprint", u.Fingerprint(), "detail", err.Detail)
		fix := ""
		switch {
		case err.Reason == failure.LegacyCommonName:
			fix = err.Detail // the exact openssl command for this host
		case err.Reason == failure.UnknownAuthority && u.TLS() != nil && u.TLS().SystemRoots:
			// The generic fix speaks of trustedCA, which an https://
			// Service without a binding has not.
			fix = "the upstream's certificate is not signed by a CA in the node's system trusted roots, which verify an https:// Service that no tls-outbound binding targets: bind one with the CA that issued the upstream's certificate in trustedCA"
		}
		status := StatusCode(err.Reason)
		writeError(w, id, u.Name(), err.Reason, fix, status)
		failSpan(requestSpan(r.Context()), err.Reason, err.Detail, status)
		return status
	}
	opts.ModifyResponse = func(resp *http.Response) error {
		if span := requestSpan(resp.Request.Context()); span != nil {
			span.SetAttributes(telemetry.AttrHTTPResponseStatus.Int(resp.StatusCode))
			if resp.StatusCode >= 500 {
				span.SetStatus(codes.Error, "")
			}
		}
		// The upstream may echo or set its own: ours wins, one value.
		resp.Header[HeaderRequestID] = resp.Request.Header[HeaderRequestID]
		return nil
	}
	opts.BufferPool = bufferPool{}
	return opts
}

// StatusCode is the HTTP status a failure answers with: 401 for a client
// certificate missing, expired or untrusted, 403 for one no allow rule
// names, 421 for a request on a connection opened for another host; 404
// for no route;
// 503 when nothing can take the request now (refused connection, no
// upstream); 504 for timeouts; 502 for everything else (the upstream, its
// TLS or our configuration of it is wrong).
func StatusCode(r failure.Reason) int {
	switch r {
	case failure.NoRoute:
		return http.StatusNotFound
	case failure.ConnectionRefused, failure.NoHealthyUpstream:
		return http.StatusServiceUnavailable
	case failure.HandshakeTimeout, failure.DialTimeout, failure.UpstreamTimeout:
		return http.StatusGatewayTimeout
	case failure.ClientCanceled:
		return 499
	case failure.ClientCertificateRequired, failure.ClientCertificateExpired, failure.ClientCertificateUntrusted:
		return http.StatusUnauthorized
	case failure.IdentityNotAllowed:
		return http.StatusForbidden
	case failure.MisdirectedRequest:
		return http.StatusMisdirectedRequest
	}
	return http.StatusBadGateway
}

// ErrorBody is the JSON answer to a request that could not be forwarded. It
// never carries key material.
type ErrorBody struct {
	// Error is a summary for people.
	Error string `json:"error"`
	// Reason is the stable failure name.
	Reason failure.Reason `json:"reason"`
	// Upstream is the Service's name.
	Upstream  string `json:"upstream,omitempty"`
	RequestID string `json:"requestId"`
	// Fix says what to change.
	Fix string `json:"fix"`
}

func summary(r failure.Reason) string {
	switch r {
	case failure.Revoked:
		return "certificate revoked"
	case failure.RevocationUnknown:
		return "certificate revocation status unknown"
	}
	switch r.Class() {
	case failure.ClassTLS:
		return "upstream TLS handshake failed"
	case failure.ClassTimeout:
		return "upstream timed out"
	case failure.ClassConnection:
		return "upstream connection failed"
	}
	switch r {
	case failure.ClientCertificateRequired:
		return "client certificate required"
	case failure.ClientCertificateExpired:
		return "client certificate expired"
	case failure.ClientCertificateUntrusted:
		return "client certificate not trusted"
	case failure.IdentityNotAllowed:
		return "client identity not allowed on this route"
	case failure.MisdirectedRequest:
		return "request sent on a connection opened for another host"
	case failure.NoRoute:
		return "no route"
	case failure.NoHealthyUpstream:
		return "no upstream available"
	}
	return "upstream request failed"
}

func writeError(w http.ResponseWriter, id, upstreamName string, reason failure.Reason, fix string, status int) {
	if fix == "" {
		fix = reason.Fix()
	}
	// No HTML escaping: the fix holds shell commands meant to be pasted
	// ("&&", "<host>").
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(ErrorBody{Error: summary(reason), Reason: reason, Upstream: upstreamName, RequestID: id, Fix: fix})
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr[HeaderRequestID] = []string{id}
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// RequestIDs makes request ids: the node's prefix and a counter. Unique per
// node run without a random read per request. Safe for concurrent use.
type RequestIDs struct {
	prefix string
	n      atomic.Uint64
}

// NewRequestIDs returns a generator whose ids start with nodeID and the
// start time, so that ids of a restarted node do not repeat.
func NewRequestIDs(nodeID string) *RequestIDs {
	return &RequestIDs{prefix: nodeID + "-" + strconv.FormatInt(time.Now().UnixMilli(), 36) + "-"}
}

// Next returns a new id.
func (g *RequestIDs) Next() string {
	var buf [96]byte
	b := append(buf[:0], g.prefix...)
	b = strconv.AppendUint(b, g.n.Add(1), 36)
	return string(b)
}

// bufferPool lends the reverse proxies their 32 KiB copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
