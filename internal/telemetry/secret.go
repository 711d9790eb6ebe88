package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// StartSecretFetch starts the [SpanSecretFetch] span of fetching ref
// ("keystore/edge#gw") from the secrets service, as a client span, child of
// ctx's. The caller sets [AttrSecretVersion] on success, calls [Fail] on
// failure, and ends the span. With tracing off it returns ctx and a
// non-recording span, allocating nothing.
func (t Tracing) StartSecretFetch(ctx context.Context, ref string) (context.Context, trace.Span) {
	if t.Tracer == nil {
		return ctx, noop.Span{} // not ctx's span: the caller ends it
	}
	return t.Tracer.Start(ctx, SpanSecretFetch, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(AttrSecretRef.String(ref)))
}
