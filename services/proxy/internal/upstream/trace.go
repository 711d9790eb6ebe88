package upstream

import (
	"context"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/telemetry"
)

// traced is the tracing state of one forwarded request; it exists only when
// tracing is on, so that the untraced path allocates nothing for it.
type traced struct {
	u    *Upstream
	ctx  context.Context // holds span
	span trace.Span
	// getConn is when the Transport started looking for a connection.
	getConn time.Time
}

// startSpan starts the request's [telemetry.SpanUpstreamRequest] span, a
// child of ctx's (the proxy's request span), and hooks connection
// acquisition into ct.
func (u *Upstream) startSpan(ctx context.Context, in *http.Request, ct *httptrace.ClientTrace) (*traced, context.Context) {
	ctx, span := u.tracing.Tracer.Start(ctx, telemetry.SpanUpstreamRequest,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			telemetry.AttrUpstream.String(u.name),
			telemetry.AttrHTTPRequestMethod.String(in.Method),
			telemetry.AttrURLScheme.String(u.scheme),
		))
	t := &traced{u: u, ctx: ctx, span: span}
	ct.GetConn = t.gotConnStart
	ct.GotConn = t.gotConn
	return t, ctx
}

// sending records where out goes and writes the span's context into its
// headers (replacing any the client sent: the upstream's parent is this
// span).
func (t *traced) sending(out *http.Request) {
	if !t.span.IsRecording() {
		// Not sampled: only the context goes on, flagged so.
		t.u.tracing.Propagator.Inject(t.ctx, propagation.HeaderCarrier(out.Header))
		return
	}
	if host, port, err := net.SplitHostPort(out.URL.Host); err == nil {
		t.span.SetAttributes(telemetry.AttrServerAddress.String(host))
		if p, err := strconv.Atoi(port); err == nil {
			t.span.SetAttributes(telemetry.AttrServerPort.Int(p))
		}
	}
	if fp := t.u.Fingerprint(); fp != "" {
		t.span.SetAttributes(telemetry.AttrTLSContextFingerprint.String(fp))
	}
	t.u.tracing.Propagator.Inject(t.ctx, propagation.HeaderCarrier(out.Header))
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
	attrs := []attribute.KeyValue{
		telemetry.AttrConnReused.Bool(info.Reused),
		telemetry.AttrConnWasIdle.Bool(info.WasIdle),
	}
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
	telemetry.Fail(t.span, ue.Reason, ue.Detail)
	t.span.End()
}
