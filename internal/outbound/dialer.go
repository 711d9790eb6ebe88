// Package outbound opens connections to an upstream with one tls-outbound
// context ([model.OutboundTLS]), performing the TLS handshake itself so that
// every failure is classified ([failure.Reason]) with what the handshake saw.
//
// Proxy nodes dial through it; the policy service's live probe handshakes
// through it too, so an apply-time probe and the data plane agree on what a
// context can reach. The *tls.Config of each connection, with its
// verification callbacks, is [tlsconf.Outbound] and [tlsconf.OutboundConn].
package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/telemetry"
	"keyway.dev/internal/tlsconf"
)

// Defaults for [Options].
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDialTimeout      = 10 * time.Second
)

// Options bound a Dialer's waits. The zero value takes the defaults.
type Options struct {
	// HandshakeTimeout bounds the TLS handshake of a new connection.
	HandshakeTimeout time.Duration
	// DialTimeout bounds name resolution and the TCP connection.
	DialTimeout time.Duration
	// Observer, if set, is told of every handshake the Dialer makes
	// (proxy dials and probes alike).
	Observer Observer
	// Tracer, if set, records a [telemetry.SpanOutboundHandshake] span
	// for every handshake, child of the dialing context's span. Nil: no
	// tracing.
	Tracer trace.Tracer
	// Protocol is the Service's protocol (model.ProtocolHTTP1 when
	// empty): it chooses the ALPN protocols offered when the context
	// gives none ([model.OutboundTLS.OfferedALPN]).
	Protocol string
	// Revocation, if set, checks the upstream's verified leaf at every
	// handshake ([tlsconf.OutboundConn]): a proxy node's, for a context
	// whose revocation is on. The policy service's live probe holds no
	// lists and sets none.
	Revocation tlsconf.RevocationCheck
}

// Observer is told of each outbound TLS handshake once it is over: a
// metrics sink, for instance. Proxy nodes implement it; this package stays
// free of any metrics library.
type Observer interface {
	// ObserveHandshake reports one handshake with an endpoint of
	// upstream: reason is "" when it succeeded, else the failure's
	// [failure.Reason]; elapsed covers the TCP connection and the TLS
	// handshake. Called from the dialing goroutine, possibly from many
	// at once: implementations must be safe for concurrent use and quick.
	ObserveHandshake(upstream string, reason failure.Reason, elapsed time.Duration)
}

// Error is a request that could not reach its upstream, classified.
type Error struct {
	// Upstream is the Service name.
	Upstream string
	// Endpoint is the "host:port" tried.
	Endpoint string
	Reason   failure.Reason
	// Phase is how far the attempt got: PhaseDial when no TCP connection
	// was established (see [Error.Reached]).
	Phase failure.Phase
	// Detail is for logs and the error body; never key material.
	Detail string
	// Err is the underlying error.
	Err error
}

// Reached says whether a TCP connection to the endpoint was established
// before the failure: false for a refused connection, no route, a name
// that does not resolve or a dial timeout, where the upstream never had
// its say; true when the upstream answered and the handshake or the
// request failed.
func (e *Error) Reached() bool { return e.Phase > failure.PhaseDial }

func (e *Error) Error() string {
	return fmt.Sprintf("upstream %q endpoint %s: %s: %s", e.Upstream, e.Endpoint, e.Reason, e.Detail)
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// FailureReason implements [failure.Reasoner].
func (e *Error) FailureReason() failure.Reason { return e.Reason }

// Dialer opens connections to the endpoints of one upstream, performing the
// TLS handshake itself so that failures are classified with what it saw.
// Safe for concurrent use.
type Dialer struct {
	upstream string
	tls      *model.OutboundTLS
	base     *tls.Config
	// sessions is the dialer's own session cache: base is shared with
	// the dialers of equal contexts, resumption is not. It is made by
	// the first handshake (sessionsOnce): of 10,000 dialers a node
	// builds at start, many may never dial.
	sessions     tls.ClientSessionCache
	sessionsOnce sync.Once
	net          net.Dialer
	timeout      time.Duration
	observer     Observer
	tracer       trace.Tracer
	revoked      tlsconf.RevocationCheck
}

// NewDialer builds the dialer of upstream name for tlsCtx (nil: plain TCP).
// The live probe of the policy service can use it to handshake exactly as
// the proxy does.
func NewDialer(name string, tlsCtx *model.OutboundTLS, opts Options) (*Dialer, error) {
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	d := &Dialer{
		upstream: name,
		tls:      tlsCtx,
		net:      net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second},
		timeout:  opts.HandshakeTimeout,
		observer: opts.Observer,
		tracer:   opts.Tracer,
		revoked:  opts.Revocation,
	}
	if tlsCtx == nil {
		return d, nil
	}
	cfg, err := tlsconf.SharedOutbound(name, tlsCtx, opts.Protocol)
	if err != nil {
		return nil, err
	}
	d.base = cfg
	return d, nil
}

// DialContext opens a plain TCP connection; errors are [*Error].
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.net.DialContext(ctx, network, addr)
	if err != nil {
		return nil, d.fail(err, addr, &failure.HandshakeFacts{Phase: failure.PhaseDial})
	}
	return c, nil
}

// DialTLSContext opens a TCP connection and completes the TLS handshake
// within the handshake timeout. It returns a *tls.Conn so that
// http.Transport sees the negotiated protocol; errors are [*Error].
func (d *Dialer) DialTLSContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.base == nil {
		return d.DialContext(ctx, network, addr)
	}
	tc, _, herr := d.Handshake(ctx, network, addr)
	if herr != nil {
		return nil, herr
	}
	return tc, nil
}

// Handshake dials addr and completes the TLS handshake, returning the
// connection and what was seen. Errors are [*Error]. The Options' Observer,
// if any, is told of the outcome.
func (d *Dialer) Handshake(ctx context.Context, network, addr string) (*tls.Conn, *failure.HandshakeFacts, *Error) {
	return d.observedHandshake(ctx, network, addr, nil)
}

// observedHandshake is [Dialer.Handshake]; with hold, the TCP connection
// under the TLS one is a [heldConn].
func (d *Dialer) observedHandshake(ctx context.Context, network, addr string, hold *heldConn) (*tls.Conn, *failure.HandshakeFacts, *Error) {
	if d.observer == nil && d.tracer == nil {
		return d.handshake(ctx, network, addr, hold)
	}
	start := time.Now()
	var tc *tls.Conn
	var facts *failure.HandshakeFacts
	var herr *Error
	if d.tracer != nil {
		tc, facts, herr = d.tracedHandshake(ctx, network, addr, hold)
	} else {
		tc, facts, herr = d.handshake(ctx, network, addr, hold)
	}
	if d.observer == nil {
		return tc, facts, herr
	}
	var reason failure.Reason
	if herr != nil {
		reason = herr.Reason
	}
	d.observer.ObserveHandshake(d.upstream, reason, time.Since(start))
	return tc, facts, herr
}

// tracedHandshake is handshake inside a [telemetry.SpanOutboundHandshake]
// span that records what was negotiated and seen, or why it failed.
func (d *Dialer) tracedHandshake(ctx context.Context, network, addr string, hold *heldConn) (*tls.Conn, *failure.HandshakeFacts, *Error) {
	attrs := []attribute.KeyValue{telemetry.AttrUpstream.String(d.upstream)}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		attrs = append(attrs, telemetry.AttrServerAddress.String(host))
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, telemetry.AttrServerPort.Int(p))
		}
	}
	if d.tls != nil && d.tls.Fingerprint != "" {
		attrs = append(attrs, telemetry.AttrTLSContextFingerprint.String(d.tls.Fingerprint))
	}
	ctx, span := d.tracer.Start(ctx, telemetry.SpanOutboundHandshake,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	defer span.End()
	tc, facts, herr := d.handshake(ctx, network, addr, hold)
	if facts != nil {
		if facts.ServerName != "" {
			span.SetAttributes(telemetry.AttrTLSServerName.String(facts.ServerName))
		}
		span.SetAttributes(
			telemetry.AttrTLSClientCertificateRequested.Bool(facts.ClientCertificateRequested),
			telemetry.AttrTLSClientCertificateSent.Bool(facts.ClientCertificateSent))
		if facts.ClientCertificateSent && d.tls.Certificate != nil && d.tls.Certificate.Leaf != nil {
			span.SetAttributes(telemetry.AttrTLSClientHashSHA256.String(telemetry.CertificateHash(d.tls.Certificate.Leaf)))
		}
	}
	if herr != nil {
		span.SetAttributes(telemetry.AttrTLSEstablished.Bool(false))
		telemetry.Fail(span, herr.Reason, herr.Detail)
		return tc, facts, herr
	}
	cs := tc.ConnectionState()
	span.SetAttributes(telemetry.ConnectionAttributes(&cs)...)
	if len(cs.PeerCertificates) > 0 {
		span.SetAttributes(telemetry.ServerCertificateAttributes(cs.PeerCertificates[0])...)
	}
	return tc, facts, herr
}

func (d *Dialer) handshake(ctx context.Context, network, addr string, hold *heldConn) (*tls.Conn, *failure.HandshakeFacts, *Error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, &Error{Upstream: d.upstream, Endpoint: addr, Reason: failure.Unknown, Detail: err.Error(), Err: err}
	}
	facts := &failure.HandshakeFacts{Phase: failure.PhaseDial, ServerName: d.serverName(host)}
	raw, err := d.net.DialContext(ctx, network, addr)
	if err != nil {
		return nil, facts, d.fail(err, addr, facts)
	}
	if hold != nil {
		hold.Conn = raw
		raw = hold
	}
	cfg := tlsconf.OutboundConn(d.base, d.tls, facts, d.revoked)
	d.sessionsOnce.Do(func() { d.sessions = tls.NewLRUClientSessionCache(64) })
	cfg.ClientSessionCache = d.sessions
	facts.Phase = failure.PhaseHandshake
	tc := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, d.timeout)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		raw.Close()
		return nil, facts, d.fail(err, addr, facts)
	}
	return tc, facts, nil
}

// ServerName is the name sent as SNI to addr and verified in its
// certificate: the context's sni, else the host of addr.
func (d *Dialer) ServerName(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return d.serverName(host)
}

func (d *Dialer) serverName(host string) string {
	return tlsconf.OutboundServerName(d.tls, host)
}

// Result is what a successful probe saw of an upstream.
type Result struct {
	Endpoint   string
	ServerName string
	// Version and CipherSuite are tls.VersionTLS1x and the suite ID.
	Version     uint16
	CipherSuite uint16
	ALPN        string
	// Peer is the upstream's leaf certificate.
	Peer                       *x509.Certificate
	ClientCertificateRequested bool
	ClientCertificateSent      bool
	Elapsed                    time.Duration
	// HTTPStatus is the status of the request sent after the handshake
	// for HTTPPath.
	HTTPStatus int
	HTTPPath   string
}

// Post-handshake wait bounds for Probe. A TLS 1.3 server verifies the
// client certificate after the client considers the handshake done, and its
// refusal arrives as an alert on the first read: wait a few handshake times
// for it, never less than probeWaitMin nor more than probeWaitMax.
const (
	probeWaitMin = 100 * time.Millisecond //nolint:revive // Min is minimum, not minutes
	probeWaitMax = time.Second
)

// Probe handshakes with addr exactly as the proxy does, then sends one
// HTTP request for path ("/" when empty) on that connection and reads the
// answer, so that a refusal made after the handshake is seen: a TLS 1.3
// server's certificate_required or bad_certificate alert, or an HTTP page
// such as nginx's 400 for `ssl_verify_client on`. It returns what it saw,
// or the classified failure. Any status that is not such a refusal is a
// successful probe: the TLS context works, and the status is reported.
func (d *Dialer) Probe(ctx context.Context, addr, path string) (*Result, *Error) {
	if path == "" {
		path = "/"
	}
	return d.probe(ctx, addr, path)
}

// ProbeHandshake is [Dialer.Probe] without the HTTP request: the handshake,
// and for TLS 1.3 a short wait for an alert refusing the client
// certificate. The proxy uses it to explain a failed request without
// sending the upstream another one.
func (d *Dialer) ProbeHandshake(ctx context.Context, addr string) (*Result, *Error) {
	return d.probe(ctx, addr, "")
}

func (d *Dialer) probe(ctx context.Context, addr, path string) (*Result, *Error) {
	if d.base == nil {
		return nil, &Error{Upstream: d.upstream, Endpoint: addr, Reason: failure.Unknown, Detail: "the upstream has no tls-outbound context to probe"}
	}
	start := time.Now()
	// The probe's request goes through an http.Transport, which closes the
	// connection when a write fails; a TLS 1.3 server that refused the
	// client certificate has by then sent its alert, which only a read
	// after the failure can find. The TCP connection is held open until
	// the probe is done with it.
	hold := &heldConn{}
	tc, facts, herr := d.observedHandshake(ctx, "tcp", addr, hold)
	if herr != nil {
		return nil, herr
	}
	hold.held.Store(true)
	defer func() { _ = tc.Close(); _ = hold.Conn.Close() }()
	elapsed := time.Since(start)
	cs := tc.ConnectionState()
	after := *facts
	after.Phase = failure.PhaseRequest
	if path == "" && cs.Version == tls.VersionTLS13 && facts.ClientCertificateRequested {
		// A TLS 1.3 server verifies the client certificate after the
		// client considers the handshake done; wait a few handshake
		// times for its alert. (With a request to send, its answer
		// brings the alert instead: reading here would take the first
		// bytes of an h2 server's SETTINGS.)
		_ = tc.SetReadDeadline(time.Now().Add(min(probeWaitMax, max(probeWaitMin, 4*elapsed))))
		var b [1]byte
		if _, err := tc.Read(b[:]); err != nil {
			if _, ok := failure.AlertCode(err); ok {
				return nil, d.fail(err, addr, &after)
			}
		}
		_ = tc.SetReadDeadline(time.Time{})
	}
	r := &Result{
		Endpoint: addr, ServerName: facts.ServerName,
		Version: cs.Version, CipherSuite: cs.CipherSuite, ALPN: cs.NegotiatedProtocol,
		ClientCertificateRequested: facts.ClientCertificateRequested,
		ClientCertificateSent:      facts.ClientCertificateSent,
		Elapsed:                    elapsed,
	}
	if len(cs.PeerCertificates) > 0 {
		r.Peer = cs.PeerCertificates[0]
	}
	if path == "" {
		return r, nil
	}
	status, err := d.request(ctx, tc, addr, path)
	if err != nil {
		return nil, d.fail(err, addr, &after)
	}
	r.HTTPStatus, r.HTTPPath = status, path
	return r, nil
}

// probeRequestTimeout bounds the probe's HTTP request and its answer.
const probeRequestTimeout = 5 * time.Second

// request sends GET path on the handshaken connection tc, over h2 when it
// negotiated h2, and returns the status; a refusal page is returned as a
// classified error.
func (d *Dialer) request(ctx context.Context, tc *tls.Conn, addr, path string) (int, error) {
	used := false
	tr := &http.Transport{
		DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, errors.New("the probe's connection is used once")
			}
			used = true
			return tc, nil
		},
		ForceAttemptHTTP2:  tc.ConnectionState().NegotiatedProtocol == "h2",
		DisableCompression: true,
		DisableKeepAlives:  true,
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, probeRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+path, nil)
	if err != nil {
		return 0, failure.WithReason(failure.Unknown, fmt.Errorf("probe path %q: %w", path, err))
	}
	if sni := d.tls.SNI; sni != "" {
		req.Host = sni // as the proxy sends it
	}
	req.Header.Set("User-Agent", "keyway-probe")
	res, err := tr.RoundTrip(req)
	if err != nil {
		if _, ok := failure.AlertCode(err); !ok {
			// The h2 client reports "client conn could not be
			// established" without the alert that caused it; the TLS
			// connection keeps that alert as its error.
			_ = tc.SetReadDeadline(time.Now().Add(probeWaitMin))
			var b [1]byte
			if _, rerr := tc.Read(b[:]); rerr != nil {
				if _, ok := failure.AlertCode(rerr); ok {
					err = rerr
				}
			}
		}
		return 0, fmt.Errorf("sending GET %s after the handshake: %w", path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, failure.MaxRefusalPage+1))
	if reason, ok := failure.RefusalPage(res.StatusCode, body); ok {
		return res.StatusCode, failure.WithReason(reason, fmt.Errorf("the upstream completed the TLS handshake, then answered GET %s with %d %q: it refused the gateway's client certificate",
			path, res.StatusCode, failure.PageTitle(body)))
	}
	return res.StatusCode, nil
}

func (d *Dialer) fail(err error, addr string, facts *failure.HandshakeFacts) *Error {
	dg := failure.Diagnose(err, *facts)
	if dg.Reason == failure.UnknownAuthority && d.tls != nil && d.tls.SystemRoots {
		// The generic fix speaks of trustedCA, which this context has
		// not: say where its roots come from.
		dg.Detail = strings.TrimPrefix(dg.Detail+"; ", "; ") + "verified against this host's system trusted roots, since the Service's address is https:// and no tls-outbound binding targets it: bind one with the CA that issued the upstream's certificate in trustedCA"
	}
	return &Error{Upstream: d.upstream, Endpoint: addr, Reason: dg.Reason, Phase: facts.Phase, Detail: dg.Detail, Err: err}
}

// heldConn is a connection whose Close, once held, is left to its owner
// (it calls Conn.Close): a probe keeps reading what the server sent after
// an HTTP client gave up on the connection. Until held, Close closes: that
// is how a handshake past its deadline is interrupted.
type heldConn struct {
	net.Conn
	held atomic.Bool
}

// Close closes the connection unless it is held; then the probe closes
// Conn when it is done.
func (h *heldConn) Close() error {
	if h.held.Load() {
		return nil
	}
	return h.Conn.Close()
}
