// Package upstream reaches one Service: its endpoints in turn, over one
// http.Transport that carries exactly one outbound TLS context (and, for an
// HTTP/1.1-only upstream, an [h1.Pool] on the same dialer, which makes the
// round trips it can in the handler's goroutine).
//
// An [Upstream] is immutable. A change to the Service or to its tls-outbound
// binding builds a new Upstream; the old one is drained ([Upstream.Drain]):
// requests already on it finish, then its idle connections close, so a pooled
// connection never outlives the client certificate it presented. Its
// transport and pools are built by its first request; what can refuse a
// configuration is built, and fails, in [New].
//
// Connections are opened by an [outbound.Dialer], which performs the TLS
// handshake itself and records what it saw
// ([failure.HandshakeFacts]); failures surface as [*Error] with a
// [failure.Reason].
package upstream

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/outbound"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/telemetry"
	"keyway.dev/proxy/internal/upstream/h1"
)

// Defaults for [Options].
const (
	DefaultHandshakeTimeout    = outbound.DefaultHandshakeTimeout
	DefaultDialTimeout         = outbound.DefaultDialTimeout
	DefaultMaxIdleConnsPerHost = 256
	DefaultIdleConnTimeout     = 90 * time.Second
	// DefaultResponseHeaderTimeout bounds the wait for an upstream's
	// response headers (not its body). gRPC Services have none: a stream
	// may hold its headers.
	DefaultResponseHeaderTimeout = 60 * time.Second
)

// Options tune every Upstream a node builds. The zero value is usable.
type Options struct {
	// HandshakeTimeout bounds the TLS handshake of a new connection.
	HandshakeTimeout time.Duration
	// DialTimeout bounds name resolution and the TCP connection.
	DialTimeout time.Duration
	// MaxIdleConnsPerHost is the size of the keep-alive pool per endpoint.
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes pooled connections idle for this long.
	IdleConnTimeout time.Duration
	// ResponseHeaderTimeout answers 504 upstream_timeout when an upstream
	// sends no response headers for this long after the request.
	ResponseHeaderTimeout time.Duration
	// ErrorHandler answers a request that could not be forwarded and
	// returns the status it answered with. Nil answers a bare 502.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, u *Upstream, err *Error) int
	// ModifyResponse, if set, edits every upstream response (see
	// httputil.ReverseProxy).
	ModifyResponse func(*http.Response) error
	// BufferPool is shared by the body copies of all upstreams.
	BufferPool httputil.BufferPool
	// Logger receives the reverse proxy's own errors (body copy failures).
	Logger *slog.Logger
	// Handshakes, if set, is told of every TLS handshake (and dial) the
	// Upstreams' dialers make.
	Handshakes outbound.Observer
	// Recorder, if set, gives the [Recorder] of an Upstream's requests. It
	// is called when an Upstream is built, never per request.
	Recorder func(upstream string) Recorder
	// DisableDirectH1 sends every request through http.Transport, none
	// in the calling goroutine (see [h1.Pool]); for comparisons.
	DisableDirectH1 bool
	// Tracing, when on, records a [telemetry.SpanUpstreamRequest] span
	// per request (with [telemetry.SpanUpstreamConn] and the dialer's
	// [telemetry.SpanOutboundHandshake] under it) and sends its context
	// to the upstream in traceparent. Off (the zero value): nothing is
	// recorded and the request path is unchanged.
	Tracing telemetry.Tracing
	// Revocation checks the certificates of upstreams whose tls-outbound
	// context turns revocation on; nil: building such an Upstream fails.
	Revocation *Revocation
}

// Recorder receives the outcome of every request an Upstream forwards.
// Request is called on the request path: implementations must be safe for
// concurrent use, quick, and should not allocate.
type Recorder interface {
	// Request reports one request answered with code after elapsed (for
	// an upgraded connection: once it closed). reason is "" when the
	// upstream answered, else the failure the client got a failure body
	// for.
	Request(code int, reason failure.Reason, elapsed time.Duration)
	// Release is called once, when the Upstream has been drained: it
	// forwards no more requests (those a drain cut short may still
	// report).
	Release()
}

type discardRecorder struct{}

func (discardRecorder) Request(int, failure.Reason, time.Duration) {}
func (discardRecorder) Release()                                   {}

func (o Options) withDefaults() Options {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if o.ResponseHeaderTimeout <= 0 {
		o.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Error is a request that could not reach its upstream, classified.
type Error = outbound.Error

// Upstream forwards requests to one Service. Safe for concurrent use.
type Upstream struct {
	name      string
	protocol  string
	endpoints []string
	next      atomic.Uint64
	scheme    string
	// host is the Host header sent: the SNI when one is configured, else
	// the endpoint (empty).
	host string

	tls    *model.OutboundTLS
	dialer *outbound.Dialer
	// conns is built on the first request ([Upstream.conns]); connsMu
	// orders its building with Drain. lazy is what it is built from.
	conns   atomic.Pointer[conns]
	connsMu sync.Mutex
	drained bool // under connsMu
	lazy    lazyOptions
	// modifyResponse edits every upstream response (Options).
	modifyResponse func(*http.Response) error
	// streaming flushes every write of a response body (h2, gRPC).
	streaming bool
	rec       Recorder
	// tracing is on when its Tracer is set.
	tracing telemetry.Tracing
	// traceAttrs are the span attributes of each endpoint traced so far
	// (trace.go).
	traceAttrs atomic.Pointer[[]endpointAttrs]
	// fail answers a request that could not be forwarded, returning the
	// status and the classified failure.
	fail func(w http.ResponseWriter, r *http.Request, err error) (int, *Error)

	// inflight counts requests between acquire and release; draining is
	// set once the Upstream is replaced. Both are only atomics, so the
	// request path takes no lock.
	inflight atomic.Int64
	draining atomic.Bool
	idleOnce sync.Once
	idle     chan struct{}
	// released is done once the first Drain has waited for the
	// requests: the recorder is told then.
	released sync.Once

	probeMu sync.Mutex
	probes  map[string]*probeState // by endpoint

	// revocation checks the upstream's certificate at each handshake;
	// nil when the context does not.
	revocation *upstreamRevocation
}

// conns are what an Upstream needs to carry requests. They are built on its
// first request, not with the Upstream: a node builds one Upstream per
// Service at start, 10,000 of them, and the transport, pool and reverse
// proxy were most of the memory each held and a share of the start's time,
// for Services that may serve nothing for a while. All that can refuse a
// configuration (the dialer and its TLS config, revocation) stays in New.
type conns struct {
	transport *http.Transport
	// h1pool serves the requests it can (h1.Eligible) of an
	// HTTP/1.1-only upstream in the calling goroutine, traced or not;
	// nil for the others.
	h1pool *h1.Pool
	// proxy serves Upgrade requests; its hooks serve forward too.
	proxy  *httputil.ReverseProxy
	errLog *log.Logger
}

// lazyOptions are the Options [conns] are built from.
type lazyOptions struct {
	maxIdlePerHost        int
	idleConnTimeout       time.Duration
	responseHeaderTimeout time.Duration
	protocols             http.Protocols
	// direct: an [h1.Pool] serves what it can.
	direct     bool
	bufferPool httputil.BufferPool
	logger     *slog.Logger
}

// New builds the Upstream for svc. tlsCtx is the tls-outbound context of the
// binding that targets svc, or nil for plain HTTP.
func New(svc *model.Service, tlsCtx *model.OutboundTLS, opts Options) (*Upstream, error) {
	if svc == nil || len(svc.Endpoints) == 0 {
		return nil, errors.New("upstream: service without endpoints")
	}
	opts = opts.withDefaults()
	u := &Upstream{
		name:      svc.Name,
		protocol:  svc.Protocol,
		endpoints: slices.Clone(svc.Endpoints),
		scheme:    "http",
		tls:       tlsCtx,
		idle:      make(chan struct{}),
		rec:       discardRecorder{},
		tracing:   opts.Tracing,
	}
	dopts := outbound.Options{HandshakeTimeout: opts.HandshakeTimeout, DialTimeout: opts.DialTimeout, Observer: opts.Handshakes, Tracer: opts.Tracing.Tracer, Protocol: svc.Protocol}
	rev, err := newUpstreamRevocation(svc.Name, tlsCtx, opts.Revocation)
	if err != nil {
		return nil, err
	}
	if rev != nil {
		u.revocation, dopts.Revocation = rev, rev.check
	}
	d, err := outbound.NewDialer(svc.Name, tlsCtx, dopts)
	if err != nil {
		if rev != nil {
			rev.checker.Close()
		}
		return nil, err
	}
	u.dialer = d
	var protos http.Protocols
	h2 := svc.Protocol == model.ProtocolH2 || svc.Protocol == model.ProtocolGRPC
	if tlsCtx != nil {
		u.scheme = "https"
		u.host = tlsCtx.SNI
		// http.Transport speaks h2 on a *tls.Conn that negotiated it.
		// Only when h2 is offered does it look for an h2 connection
		// first: not for an HTTP/1.1 Service whose binding gives no
		// alpn (it is offered http/1.1 alone).
		alpn := tlsCtx.OfferedALPN(svc.Protocol)
		protos.SetHTTP1(slices.Contains(alpn, "http/1.1"))
		protos.SetHTTP2(slices.Contains(alpn, "h2"))
	} else if h2 {
		protos.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	} else {
		protos.SetHTTP1(true)
	}
	u.lazy = lazyOptions{
		maxIdlePerHost:  opts.MaxIdleConnsPerHost,
		idleConnTimeout: opts.IdleConnTimeout,
		protocols:       protos,
		direct:          !protos.HTTP2() && !protos.UnencryptedHTTP2() && !opts.DisableDirectH1,
		bufferPool:      opts.BufferPool,
		logger:          opts.Logger,
	}
	if svc.Protocol != model.ProtocolGRPC {
		u.lazy.responseHeaderTimeout = opts.ResponseHeaderTimeout
	}
	u.streaming = h2
	u.modifyResponse = opts.ModifyResponse

	eh := opts.ErrorHandler
	u.fail = func(w http.ResponseWriter, r *http.Request, err error) (int, *Error) {
		ue := u.asError(r.Context(), err, r.URL.Host)
		if eh == nil {
			http.Error(w, string(ue.Reason), http.StatusBadGateway)
			return http.StatusBadGateway, ue
		}
		return eh(w, r, u, ue), ue
	}
	// Last: an Upstream that is not built holds no recorder.
	if opts.Recorder != nil {
		u.rec = opts.Recorder(svc.Name)
	}
	return u, nil
}

// connections returns the Upstream's [conns], building them on the first
// call; after that it is one atomic load.
func (u *Upstream) connections() *conns {
	if c := u.conns.Load(); c != nil {
		return c
	}
	return u.buildConns()
}

func (u *Upstream) buildConns() *conns {
	u.connsMu.Lock()
	defer u.connsMu.Unlock()
	if c := u.conns.Load(); c != nil {
		return c
	}
	o := u.lazy
	t := &http.Transport{
		Proxy:                  nil, // never the environment's proxy
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    o.maxIdlePerHost,
		IdleConnTimeout:        o.idleConnTimeout,
		ResponseHeaderTimeout:  o.responseHeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true, // a proxy passes encodings through
		MaxResponseHeaderBytes: 1 << 20,
		ForceAttemptHTTP2:      u.tls != nil && o.protocols.HTTP2(),
	}
	protos := o.protocols
	t.Protocols = &protos
	dial := u.dialer.DialContext
	if u.tls != nil {
		dial = u.dialer.DialTLSContext
		t.DialTLSContext = dial
	} else {
		t.DialContext = dial
	}
	c := &conns{transport: t}
	if u.drained {
		// A request Drain stopped waiting for: its connection is not
		// kept, as Drain has closed the pools already.
		t.DisableKeepAlives = true
	} else if o.direct {
		c.h1pool = h1.NewPool(dial, t.MaxIdleConnsPerHost, t.IdleConnTimeout, t.ResponseHeaderTimeout, t.MaxResponseHeaderBytes)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:        u.rewrite,
		Transport:      u,
		BufferPool:     o.bufferPool,
		ModifyResponse: u.modifyResponse,
		ErrorLog:       slog.NewLogLogger(o.logger.Handler(), slog.LevelWarn),
	}
	if u.streaming {
		rp.FlushInterval = -1 // streaming (gRPC): flush every write
	}
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		code, ue := u.fail(w, r, err)
		if uw, ok := w.(*upgradeWriter); ok {
			uw.code, uw.reason = code, ue.Reason
		}
	}
	c.proxy, c.errLog = rp, rp.ErrorLog
	u.conns.Store(c)
	return c
}

// Name is the Service's name.
func (u *Upstream) Name() string { return u.name }

// Endpoints are the Service's endpoints.
func (u *Upstream) Endpoints() []string { return slices.Clone(u.endpoints) }

// TLS is the outbound TLS context, nil for plain HTTP.
func (u *Upstream) TLS() *model.OutboundTLS { return u.tls }

// Fingerprint identifies the TLS context ("" for plain HTTP).
func (u *Upstream) Fingerprint() string {
	if u.tls == nil {
		return ""
	}
	return u.tls.Fingerprint
}

// InFlight is the number of requests currently forwarded.
func (u *Upstream) InFlight() int64 { return u.inflight.Load() }

// Forward sends r to the upstream and writes the answer (or the error
// handler's) to w. It edits r's header in place (hop-by-hop and forwarding
// headers). It returns false, having written nothing, when the
// Upstream is being drained: the caller loads the current snapshot, which
// already holds the replacement, and tries again.
func (u *Upstream) Forward(w http.ResponseWriter, r *http.Request) bool {
	u.inflight.Add(1)
	// Sequentially consistent atomics: either Drain sees this request in
	// inflight, or this request sees draining and backs off.
	if u.draining.Load() {
		u.release()
		return false
	}
	defer u.release()
	if rv := u.revocation; rv != nil {
		// Before the request takes a pooled connection, and again
		// once it gave its own back.
		defer rv.after(u, rv.sweep(u))
	}
	u.forward(w, r)
	return true
}

// closeIdle closes the idle connections of every pool, which stay open
// for more.
func (u *Upstream) closeIdle() {
	c := u.conns.Load()
	if c == nil {
		return // no request yet: nothing is open
	}
	c.transport.CloseIdleConnections()
	if c.h1pool != nil {
		c.h1pool.CloseIdle()
	}
}

func (u *Upstream) release() {
	if u.inflight.Add(-1) == 0 && u.draining.Load() {
		u.idleOnce.Do(func() { close(u.idle) })
	}
}

// Drain stops the Upstream from taking requests, waits until the requests
// it is serving finish (or ctx ends), then closes its idle connections.
// Call it after the replacement is published. It is safe to call more than
// once.
func (u *Upstream) Drain(ctx context.Context) error {
	u.draining.Store(true)
	var err error
	if u.inflight.Load() != 0 {
		select {
		case <-u.idle:
		case <-ctx.Done():
			err = fmt.Errorf("upstream %q: draining: %d requests still in flight: %w", u.name, u.inflight.Load(), ctx.Err())
		}
	}
	u.connsMu.Lock()
	u.drained = true
	c := u.conns.Load()
	u.connsMu.Unlock()
	if c != nil {
		c.transport.CloseIdleConnections()
		if c.h1pool != nil {
			c.h1pool.Close()
		}
	}
	if u.revocation != nil {
		// Its CRLs stop being fetched unless another checker names
		// them; the replacement's checker already does.
		u.revocation.checker.Close()
	}
	u.released.Do(u.rec.Release)
	return err
}

func (u *Upstream) rewrite(pr *httputil.ProxyRequest) {
	out := pr.Out
	out.URL.Scheme = u.scheme
	out.URL.Host = u.endpoint()
	out.Host = u.host
	// The inbound X-Forwarded-For is not trusted (Rewrite already removed
	// it): the gateway is the edge.
	pr.SetXForwarded()
}

func (u *Upstream) endpoint() string {
	if len(u.endpoints) == 1 {
		return u.endpoints[0]
	}
	return u.endpoints[(u.next.Add(1)-1)%uint64(len(u.endpoints))]
}

// RoundTrip implements http.RoundTripper over the Upstream's pool; errors
// are [*Error].
func (u *Upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := u.connections().transport.RoundTrip(req)
	if err != nil {
		return nil, u.asError(req.Context(), err, req.URL.Host)
	}
	return resp, nil
}

// asError classifies an error of the transport. Dial and handshake errors
// are already *Error; what is left happened on an established connection.
func (u *Upstream) asError(ctx context.Context, err error, endpoint string) *Error {
	if ue, ok := errors.AsType[*Error](err); ok {
		return ue
	}
	facts := failure.HandshakeFacts{
		Phase: failure.PhaseRequest,
		// Which pooled connection failed is not known here: say whether a
		// certificate would have been sent. A TLS 1.3 upstream refuses it
		// only now, on the first read after the handshake.
		ClientCertificateSent: u.tls != nil && u.tls.Certificate != nil,
	}
	d := failure.Diagnose(err, facts)
	if u.tls != nil && (d.Reason == failure.UpstreamReset || strings.Contains(err.Error(), "http2: client conn could not be established")) {
		// A TLS 1.3 upstream that refuses our certificate closes the
		// connection right after the handshake; the alert may be lost to
		// a broken pipe, or to the h2 transport's read loop. Find it
		// again with a fresh handshake.
		if pe := u.probe(ctx, endpoint); pe != nil {
			return pe
		}
	}
	return &Error{Upstream: u.name, Endpoint: endpoint, Reason: d.Reason, Detail: d.Detail, Err: err}
}

// probe runs the dialer's probe for endpoint once at a time and at most
// once a second: concurrent failing requests wait for the probe in flight
// and share its answer, so a failing upstream does not get one extra
// handshake per request. Only failing requests get here; the lock is off the
// request path.
func (u *Upstream) probe(ctx context.Context, endpoint string) *Error {
	u.probeMu.Lock()
	p := u.probes[endpoint]
	if p == nil || (p.finished() && time.Since(p.at) >= time.Second) {
		p = &probeState{done: make(chan struct{})}
		if u.probes == nil {
			u.probes = make(map[string]*probeState)
		}
		u.probes[endpoint] = p
		u.probeMu.Unlock()
		// The probe serves every waiter, so it does not end with the
		// first caller's request; the dialer's timeouts bound it.
		_, p.err = u.dialer.ProbeHandshake(context.WithoutCancel(ctx), endpoint)
		p.at = time.Now()
		close(p.done)
		return p.err
	}
	u.probeMu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return nil
	}
}

// probeState is one probe of one endpoint: err and at are written before
// done is closed and read after.
type probeState struct {
	done chan struct{}
	err  *Error
	at   time.Time
}

func (p *probeState) finished() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Status describes an Upstream for the admin API.
type Status struct {
	Name        string   `json:"name"`
	Endpoints   []string `json:"endpoints"`
	Protocol    string   `json:"protocol"`
	TLS         bool     `json:"tls"`
	Fingerprint string   `json:"fingerprint,omitempty"`
	// ClientCertificate is the SHA-256 of the client certificate presented.
	ClientCertificate string    `json:"clientCertificate,omitempty"`
	ClientNotAfter    time.Time `json:"clientCertificateNotAfter,omitzero"`
	InFlight          int64     `json:"inFlight"`
	// Revocation is the mode the upstream's certificate is checked in
	// (soft-fail, hard-fail); empty when it is not.
	Revocation revocation.Mode `json:"revocation,omitempty"`
}

// Status reports the Upstream's configuration and load.
func (u *Upstream) Status() Status {
	s := Status{Name: u.name, Endpoints: u.Endpoints(), Protocol: u.protocol, TLS: u.tls != nil, Fingerprint: u.Fingerprint(), InFlight: u.InFlight()}
	if u.tls != nil && u.tls.Certificate != nil && u.tls.Certificate.Leaf != nil {
		s.ClientCertificate = certs.Fingerprint(u.tls.Certificate.Leaf)
		s.ClientNotAfter = u.tls.Certificate.Leaf.NotAfter
	}
	if u.revocation != nil {
		s.Revocation = u.revocation.mode
	}
	return s
}
