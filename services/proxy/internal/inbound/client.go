package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/failure"
	"keyway.dev/internal/telemetry"
)

// HandshakeObserver counts a Listener's TLS handshakes. reason is "" for a
// handshake that completed, else why it failed ([failure.ClassifyInbound]).
// Called once per connection, from the connection's goroutine; must be safe
// for concurrent use and cheap.
type HandshakeObserver interface {
	ObserveInboundHandshake(listener string, reason failure.Reason)
}

// conn is one accepted connection on a Listener: the raw TCP connection the
// *tls.Conn served is layered on. It is found again from that *tls.Conn
// (NetConn), so the servers' ConnContext hook reaches it without a map.
type conn struct {
	net.Conn
	srv *server
	tls *tls.Conn
	// observed is set once the handshake's outcome has been counted.
	observed atomic.Bool
	// verified caches the last verification of this connection's client
	// certificate, for one host of one snapshot.
	verified atomic.Pointer[verification]
	// accepted is when the connection was accepted, and handshake the
	// context of its handshake's span; both only when tracing is on.
	// handshake is written by observe before the connection serves its
	// first request, and read by the requests.
	accepted  time.Time
	handshake trace.SpanContext
	// handshakeHost is the host whose config served the handshake: while
	// it is still the current one, the chains crypto/tls verified against
	// its clientCAs stand, and the first request needs no second
	// verification.
	handshakeHost atomic.Pointer[host]
	// revocation caches the last revocation judgement of this
	// connection's client certificate.
	revocation atomic.Pointer[revocationVerdict]
	// viaNetHTTP2 is set when the connection is handed to net/http's
	// server for h2; taken once that server has it (see server.pending).
	viaNetHTTP2 bool
	taken       atomic.Bool
	// start is when the connection was accepted; handshook is set, under
	// srv.mu, once its handshake has ended.
	start     time.Time
	handshook bool
}

// connListener is the listener net/http's server serves: it yields the
// connections handed to it, handshaken already.
type connListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// hand gives c to the server, or closes it when the listener is closed
// (and reports false).
func (l *connListener) hand(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

type connKey struct{}

// connContext is the server's ConnContext: it attaches the conn to every
// request's context.
func connContext(ctx context.Context, nc net.Conn) context.Context {
	if c := connOf(nc); c != nil {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

func connOf(nc net.Conn) *conn {
	if tc, ok := nc.(*tls.Conn); ok {
		c, _ := tc.NetConn().(*conn)
		return c
	}
	return nil
}

// observe counts and logs c's handshake, once per connection, with its
// typed error: VerifyConnection does not run when crypto/tls's own checks
// fail, and a server's ErrorLog only gets the error as text.
func (s *server) observe(c *conn, err error) {
	if !c.observed.CompareAndSwap(false, true) {
		return
	}
	var reason failure.Reason
	if err != nil {
		reason = failure.ClassifyInbound(err)
		// Once per failure. The error says what crypto/tls saw (which
		// certificate, which versions); it never holds key material.
		s.log.Info("inbound TLS handshake failed", "listener", s.name, "client", c.RemoteAddr().String(),
			"reason", string(reason), "detail", err.Error(), "fix", reason.InboundFix())
	}
	if s.observer != nil {
		s.observer.ObserveInboundHandshake(s.name, reason)
	}
	if s.tracing.Tracer != nil {
		s.traceHandshake(c, reason, err)
	}
}

// traceHandshake records the connection's handshake, from its accept to
// now, as a [telemetry.SpanInboundHandshake] span: the root of a trace of
// its own, which each request on the connection links to.
func (s *server) traceHandshake(c *conn, reason failure.Reason, err error) {
	attrs := []attribute.KeyValue{telemetry.AttrListener.String(s.name)}
	if host, _, herr := net.SplitHostPort(c.RemoteAddr().String()); herr == nil {
		attrs = append(attrs, telemetry.AttrClientAddress.String(host))
	}
	_, span := s.tracing.Tracer.Start(context.Background(), telemetry.SpanInboundHandshake,
		trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(c.accepted), trace.WithAttributes(attrs...))
	if !span.IsRecording() {
		// Not sampled: the certificate's attributes (subject, names,
		// hash) are not worth computing for nobody. Requests still link
		// to the span's context.
		if err == nil {
			c.handshake = span.SpanContext()
		}
		span.End()
		return
	}
	cs := c.tls.ConnectionState()
	if err != nil {
		span.SetAttributes(telemetry.AttrTLSEstablished.Bool(false))
		if cs.ServerName != "" {
			span.SetAttributes(telemetry.AttrTLSServerName.String(cs.ServerName))
		}
		telemetry.Fail(span, reason, err.Error())
	} else {
		span.SetAttributes(telemetry.ConnectionAttributes(&cs)...)
		if len(cs.PeerCertificates) > 0 {
			span.SetAttributes(telemetry.ClientCertificateAttributes(cs.PeerCertificates[0])...)
		}
		c.handshake = span.SpanContext()
	}
	span.End()
}

// HandshakeSpan is the span context of the TLS handshake of the connection
// r arrived on; invalid when r did not arrive on a Listener or tracing is
// off.
func HandshakeSpan(r *http.Request) trace.SpanContext {
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c == nil {
		return trace.SpanContext{}
	}
	return c.handshake
}

// Client is a request's client certificate as judged, at the time of the
// request, by the host that serves the request's connection in its
// Listener's current snapshot.
type Client struct {
	// Leaf is the client certificate; nil when the client presented none.
	Leaf *x509.Certificate
	// HostVerifies is set when the host's clientAuth is verify-if-given or
	// require-and-verify.
	HostVerifies bool
	// CanVerify is set when the host has clientCAs to verify Leaf with.
	CanVerify bool
	// Reason is why Leaf does not verify now against the host's current
	// clientCAs: client_certificate_expired or
	// client_certificate_untrusted; or, on a host that checks revocation,
	// why it is refused now: revoked, or revocation_unknown in hard-fail
	// mode. Empty when it verifies, or when there is no Leaf or no
	// clientCAs.
	Reason failure.Reason
	// XFCC is the X-Forwarded-Client-Cert value of a verified Leaf, else
	// empty.
	XFCC string
	// Misdirected is set when the request's Host names another host of
	// the Listener than the one the connection's TLS server name chose,
	// and the two trust different client certificates: the connection
	// was opened for one name and carries a request for another (HTTP/2
	// connection reuse, or a client that sends a Host unlike its SNI).
	// The judgement above is the connection's host's, not the request's.
	Misdirected bool
}

// Verified reports whether Leaf verifies now against the host's clientCAs.
func (c *Client) Verified() bool { return c.Leaf != nil && c.CanVerify && c.Reason == "" }

// verification is the outcome of verifying one client chain against one
// host of one snapshot. Immutable.
type verification struct {
	leaf *x509.Certificate
	host *host
	// reason is client_certificate_untrusted, or empty when the chain
	// verified; then validUntil is when it stops being valid (the latest,
	// over the verified chains, of each chain's earliest NotAfter).
	reason     failure.Reason
	validUntil time.Time
	xfcc       string
	// issuer issued leaf, in the first verified chain within verifyDepth;
	// nil when leaf is a trusted CA itself. For revocation checks.
	issuer *x509.Certificate
}

// ClientOf judges r's client certificate against the current snapshot of
// the Listener r arrived on; ok is false when r did not arrive on a
// Listener. The chain is verified once per connection and host snapshot
// (the result is cached on the connection); its validity period is checked
// against now on every call. One atomic load and a map lookup otherwise.
func ClientOf(r *http.Request, now time.Time) (cl Client, ok bool) {
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c == nil || r.TLS == nil {
		return Client{}, false
	}
	snap := c.srv.snap.Load()
	h := snap.hostFor(r.TLS.ServerName)
	cl = Client{
		HostVerifies: h.clientAuth == tls.VerifyClientCertIfGiven || h.clientAuth == tls.RequireAndVerifyClientCert,
		CanVerify:    h.roots != nil,
	}
	if len(snap.listener.Hosts) > 1 {
		if named, ok := snap.named(hostName(r.Host)); ok && named != h && named.trust != h.trust {
			cl.Misdirected = true
		}
	}
	if len(r.TLS.PeerCertificates) == 0 {
		return cl, true
	}
	cl.Leaf = r.TLS.PeerCertificates[0]
	if h.roots == nil {
		return cl, true
	}
	v := c.verified.Load()
	if v == nil && h.chains != nil && c.handshakeHost.Load() == h {
		// This very host verified the chain, at this handshake (when its
		// clientAuth verifies) or for an earlier connection; its cache
		// holds the judgement (XFCC included) while the chain's
		// certificates are valid.
		if e := h.chains.lookup(r.TLS.PeerCertificates, now); e != nil {
			v = e.forLeaf(cl.Leaf)
			c.verified.Store(v)
		}
	}
	if v == nil && len(r.TLS.VerifiedChains) > 0 && c.handshakeHost.Load() == h {
		// The handshake verified the chain against this very host's
		// clientCAs (and for client authentication); only the clock is
		// left to check, below.
		v = fromChains(h, cl.Leaf, r.TLS.VerifiedChains)
		c.verified.Store(v)
	}
	if v == nil || v.leaf != cl.Leaf || v.host != h {
		v = verify(h, r.TLS.PeerCertificates, now)
		if v.reason != failure.ClientCertificateExpired {
			// An expired chain is re-verified: only for its error.
			c.verified.Store(v)
		}
	}
	switch {
	case v.reason != "":
		cl.Reason = v.reason
	case now.After(v.validUntil):
		cl.Reason = failure.ClientCertificateExpired
	case h.revocation != nil:
		// Checked at every request: a certificate revoked while its
		// connection is open is refused at its next request.
		if cl.Reason = h.revocation.request(c, h, cl.Leaf, v.issuer, now); cl.Reason == "" {
			cl.XFCC = v.xfcc
		}
	default:
		cl.XFCC = v.xfcc
	}
	return cl, true
}

// hostName is the host of a request's Host (":authority"), without the
// port or an IPv6 literal's brackets.
func hostName(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// verify verifies certs (leaf first, then the intermediates the client
// sent) for client authentication against h's clientCAs at now.
func verify(h *host, certs []*x509.Certificate, now time.Time) *verification {
	v := &verification{leaf: certs[0], host: h}
	if h.chains != nil {
		e, _, err := h.chains.verify(h, certs, now)
		if err != nil {
			v.reason = verifyReason(err)
			return v
		}
		return e.forLeaf(certs[0])
	}
	opts := x509.VerifyOptions{
		Roots:       h.roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := certs[0].Verify(opts)
	if err != nil {
		v.reason = verifyReason(err)
		return v
	}
	return fromChains(h, certs[0], chains)
}

// verifyReason is why a client chain whose verification failed with err is
// refused.
func verifyReason(err error) failure.Reason {
	if invalid, ok := errors.AsType[x509.CertificateInvalidError](err); ok && invalid.Reason == x509.Expired {
		return failure.ClientCertificateExpired
	}
	return failure.ClientCertificateUntrusted
}

// forLeaf is the entry's judgement for a connection whose client presented
// leaf (the same certificate as the entry's, parsed again by its
// handshake).
func (e *chainEntry) forLeaf(leaf *x509.Certificate) *verification {
	v := *e.verification
	v.leaf = leaf
	return &v
}

// fromChains is the verification of leaf whose verified chains against h's
// clientCAs are chains: h's verifyDepth applies, and the certificate is
// valid until the earliest NotAfter of its longest-lived chain.
func fromChains(h *host, leaf *x509.Certificate, chains [][]*x509.Certificate) *verification {
	v := &verification{leaf: leaf, host: h}
	for _, chain := range chains {
		if h.verifyDepth > 0 && len(chain) > h.verifyDepth {
			continue
		}
		until := chain[0].NotAfter
		for _, c := range chain[1:] {
			if c.NotAfter.Before(until) {
				until = c.NotAfter
			}
		}
		if until.After(v.validUntil) {
			v.validUntil = until
		}
	}
	if v.validUntil.IsZero() {
		v.reason = failure.ClientCertificateUntrusted // every chain exceeds verifyDepth
		return v
	}
	_, v.issuer = chainIssuer(chains, h.verifyDepth)
	v.xfcc = XFCC(leaf)
	return v
}

// XFCC is the X-Forwarded-Client-Cert value for a client certificate, in
// Envoy's format: Hash (hex SHA-256 of the DER), Subject (quoted), then one
// URI and one DNS element per SAN, separated by ';'.
func XFCC(leaf *x509.Certificate) string {
	var b strings.Builder
	b.WriteString("Hash=")
	b.WriteString(certs.Fingerprint(leaf))
	b.WriteString(";Subject=")
	b.WriteString(quote(leaf.Subject.String()))
	for _, u := range leaf.URIs {
		b.WriteString(";URI=")
		b.WriteString(xfccValue(u.String()))
	}
	for _, d := range leaf.DNSNames {
		b.WriteString(";DNS=")
		b.WriteString(xfccValue(d))
	}
	return b.String()
}

// xfccValue quotes a value that holds one of XFCC's separators.
func xfccValue(s string) string {
	if strings.ContainsAny(s, `,;="\`) {
		return quote(s)
	}
	return s
}

// quote wraps s in double quotes, escaping quotes and backslashes in it.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// ListenerOf names the Listener r arrived on, "" when it did not arrive on
// one (the node's plain-HTTP port).
func ListenerOf(r *http.Request) string {
	if c, ok := r.Context().Value(connKey{}).(*conn); ok {
		return c.srv.name
	}
	return ""
}
