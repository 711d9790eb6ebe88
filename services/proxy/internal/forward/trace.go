package forward

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/telemetry"
	"keyway.dev/proxy/internal/inbound"
	"keyway.dev/proxy/internal/router"
)

// requestSpanKey finds the request's span in the contexts below it (the
// upstream's hooks see the upstream span as the current one).
type requestSpanKey struct{}

// requestSpan is the request's span, nil when tracing is off.
func requestSpan(ctx context.Context) trace.Span {
	s, _ := ctx.Value(requestSpanKey{}).(trace.Span)
	return s
}

// serveTraced is serve inside the request's [telemetry.SpanRequest] span: a
// server span whose parent is the client's traceparent, if any, linked to
// the TLS handshake of the connection when it arrived on a Listener.
func (h *Handler) serveTraced(w http.ResponseWriter, r *http.Request, id string) {
	ctx := h.tr.ExtractHTTP(r.Context(), r.Header)
	// No attributes or links at the start (the samplers Keyway offers read
	// neither): the options are one slice made once, the link is added to
	// the span, and the attributes go in one call at its end
	// (telemetry.SpanBuffer).
	ctx, sdkSpan := h.tr.Tracer.Start(ctx, telemetry.SpanRequest, serverStart...)
	span := spanBuffers.Get().(*telemetry.SpanBuffer)
	span.Reset(sdkSpan)
	defer func() {
		span.End()
		span.Reset(nil)
		spanBuffers.Put(span)
	}()
	if sdkSpan.IsRecording() {
		if hs := inbound.HandshakeSpan(r); hs.IsValid() {
			sdkSpan.AddLink(trace.Link{SpanContext: hs})
		}
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		var attrs [8]attribute.KeyValue
		a := append(attrs[:0],
			telemetry.AttrHTTPRequestMethod.String(r.Method),
			telemetry.AttrURLPath.String(r.URL.Path),
			telemetry.AttrRequestID.String(id),
			telemetry.AttrNetworkProtocolVer.String(protocolVersion(r)),
			telemetry.AttrURLScheme.String(scheme),
		)
		if host, port, err := net.SplitHostPort(r.Host); err == nil {
			a = append(a, telemetry.AttrServerAddress.String(host))
			if p, err := strconv.Atoi(port); err == nil {
				a = append(a, telemetry.AttrServerPort.Int(p))
			}
		} else if r.Host != "" {
			a = append(a, telemetry.AttrServerAddress.String(r.Host))
		}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			a = append(a, telemetry.AttrClientAddress.String(host))
		}
		span.SetAttributes(a...)
	}
	ctx = context.WithValue(ctx, requestSpanKey{}, trace.Span(span))
	h.serve(w, r.WithContext(ctx), id, span)
}

// spanBuffers are the request spans' buffers (800 bytes each), reused: a
// buffer is only used by the request's own goroutine, in serve and the
// upstream's hooks it calls (requestSpan), all done when serveTraced
// returns.
var spanBuffers = sync.Pool{New: func() any { return new(telemetry.SpanBuffer) }}

// serverStart are the request span's start options, made once (a
// variadic argument to an interface method is a new slice per call).
var serverStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// routeMatched records the route found for the request: one call, so that
// the span's attributes grow once.
func routeMatched(span trace.Span, t *router.Target) {
	if !span.IsRecording() {
		return // not sampled
	}
	attrs, event := t.SpanAttributes()
	span.SetAttributes(attrs...)
	span.AddEvent(telemetry.EventRouteMatch, event...)
}

// failSpan records a request answered with a failure body. span may be nil
// (tracing off).
func failSpan(span trace.Span, reason failure.Reason, detail string, status int) {
	if span == nil || !span.IsRecording() {
		return
	}
	span.SetAttributes(telemetry.AttrHTTPResponseStatus.Int(status))
	if status >= 500 {
		telemetry.Fail(span, reason, detail)
		return
	}
	// A server span's 4xx is the client's doing, not an error of the
	// server (semantic conventions): the reason without the Error status.
	span.SetAttributes(telemetry.AttrFailureReason.String(string(reason)), telemetry.AttrErrorType.String(string(reason)))
}

func protocolVersion(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "2"
	case 3:
		return "3"
	}
	if r.ProtoMinor == 0 {
		return "1.0"
	}
	return "1.1"
}
