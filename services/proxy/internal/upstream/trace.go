package upstream

import (
	"context"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/telemetry"
)

// traced is the tracing state of one forwarded request; it exists only when
// tracing is on, so that the untraced path allocates nothing for it. Its
// span takes all its attributes in one call when it ends
// ([telemetry.SpanBuffer]).
type traced struct {
	u    *Upstream
	ctx  context.Context // holds span
	span telemetry.SpanBuffer
	// getConn is when the Transport started looking for a connection.
	getConn time.Time
}

// clientStart are the upstream span's start options, made once (a
// variadic argument to an interface method is a new slice per call).
var clientStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// startSpan starts the request's [telemetry.SpanUpstreamRequest] span, a
// child of ctx's (the proxy's request span), and hooks connection
// acquisition into ct.
func (u *Upstream) startSpan(ctx context.Context, in *http.Request, ct *httptrace.ClientTrace) (*traced, context.Context) {
	ctx, span := u.tracing.Tracer.Start(ctx, telemetry.SpanUpstreamRequest, clientStart...)
	t := &traced{u: u, ctx: ctx}
	t.span.Reset(span)
	if span.IsRecording() {
		t.span.SetAttributes(telemetry.AttrHTTPRequestMethod.String(in.Method))
	}
	ct.GetConn = t.gotConnStart
	ct.GotConn = t.gotConn
	return t, ctx
}

// endpointAttrs are the upstream span's attributes of one endpoint of the
// Upstream: keyway.upstream, url.scheme, server.address, server.port and
// keyway.tls.context.fingerprint. Made once per endpoint, by the first
// traced request that goes there; shared, so read only.
type endpointAttrs struct {
	endpoint string
	attrs    []attribute.KeyValue
}

// spanAttrs are the attributes of a request to endpoint.
func (u *Upstream) spanAttrs(endpoint string) []attribute.KeyValue {
	if all := u.traceAttrs.Load(); all != nil {
		for i := range *all {
			if (*all)[i].endpoint == endpoint {
				return (*all)[i].attrs
			}
		}
	}
	attrs := []attribute.KeyValue{telemetry.AttrUpstream.String(u.name), telemetry.AttrURLScheme.String(u.scheme)}
	if host, port, err := net.SplitHostPort(endpoint); err == nil {
		attrs = append(attrs, telemetry.AttrServerAddress.String(host))
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, telemetry.AttrServerPort.Int(p))
		}
	}
	if fp := u.Fingerprint(); fp != "" {
		attrs = append(attrs, telemetry.AttrTLSContextFingerprint.String(fp))
	}
	attrs = attrs[:len(attrs):len(attrs)]
	if len(u.endpoints) > maxTracedEndpoints {
		return attrs // not kept: the list is searched one by one
	}
	for {
		old := u.traceAttrs.Load()
		var next []endpointAttrs
		if old != nil {
			next = slices.Clone(*old)
		}
		next = append(next, endpointAttrs{endpoint: endpoint, attrs: attrs})
		if u.traceAttrs.CompareAndSwap(old, &next) {
			return attrs
		}
	}
}

// maxTracedEndpoints bounds the endpoints whose span attributes an
// Upstream keeps.
const maxTracedEndpoints = 16

// sending records where out goes and writes the span's context into its
// headers (replacing any the client sent: the upstream's parent is this
// span).
func (t *traced) sending(out *http.Request) {
	if t.span.IsRecording() {
		t.span.SetAttributes(t.u.spanAttrs(out.URL.Host)...)
	}
	// Not sampled: only the context goes on, flagged so.
	t.u.tracing.InjectHTTP(t.ctx, out.Header)
}

func (t *traced) gotConnStart(string) { t.getConn = time.Now() }

// gotConn records how the request got its connection, on the request's
// span: pooled (and how long it was idle) or new (whose handshake is the
// dialer's child span), and the wait for it. Attributes rather than a span
// of their own: a pooled connection is the common case, and costs nothing
// worth a span.
func (t *traced) gotConn(info httptrace.GotConnInfo) {
	if !t.span.IsRecording() {
		return
	}
	var buf [4]attribute.KeyValue
	attrs := append(buf[:0],
		telemetry.AttrConnReused.Bool(info.Reused),
		telemetry.AttrConnWasIdle.Bool(info.WasIdle),
	)
	if !t.getConn.IsZero() {
		attrs = append(attrs, telemetry.AttrConnWait.Float64(time.Since(t.getConn).Seconds()))
	}
	if info.WasIdle {
		attrs = append(attrs, telemetry.AttrConnIdleTime.Float64(info.IdleTime.Seconds()))
	}
	t.span.SetAttributes(attrs...)
}

// end closes the span of a request the upstream answered with code; err is
// the body copy's.
func (t *traced) end(code int, err error) {
	if t == nil {
		return
	}
	if !t.span.IsRecording() {
		t.span.End()
		return
	}
	t.span.SetAttributes(telemetry.AttrHTTPResponseStatus.Int(code))
	switch {
	case err != nil:
		t.span.SetStatus(codes.Error, "copying the response body: "+err.Error())
	case code >= 400:
		// A client span's 4xx and 5xx are errors (semantic conventions).
		t.span.SetAttributes(telemetry.AttrErrorType.String(strconv.Itoa(code)))
		t.span.SetStatus(codes.Error, "")
	}
	t.span.End()
}

// fail closes the span of a request that could not be forwarded.
func (t *traced) fail(ue *Error) {
	if t == nil {
		return
	}
	if ue.Endpoint != "" {
		t.span.SetAttributes(telemetry.AttrUpstreamEndpoint.String(ue.Endpoint))
	}
	telemetry.Fail(&t.span, ue.Reason, ue.Detail)
	t.span.End()
}
