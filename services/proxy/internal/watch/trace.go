package watch

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/telemetry"
)

// batch is the [telemetry.SpanNodeApply] span of one batch of changes; nil
// when tracing is off (its methods then do nothing).
type batch struct {
	w    *Watcher
	span trace.Span
	keys []string
	// first is whether the span still waits for its parent's change.
	first bool
}

// startBatch starts the span of the batch that e opens, as a child of the
// trace context in e's message headers.
func (w *Watcher) startBatch(ctx context.Context, e jetstream.KeyValueEntry) *batch {
	if w.opts.Tracing.Tracer == nil {
		return nil
	}
	parent := w.traceContext(ctx, e)
	_, span := w.opts.Tracing.Tracer.Start(parent, telemetry.SpanNodeApply,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			telemetry.AttrMessagingSystem.String("nats"),
			telemetry.AttrMessagingDestination.String(e.Bucket()),
		))
	return &batch{w: w, span: span, first: true}
}

// traceContext is ctx with the remote span context the writer put in e's
// message headers, if any; the node's own context otherwise.
func (w *Watcher) traceContext(ctx context.Context, e jetstream.KeyValueEntry) context.Context {
	if h := headerOf(e); h != nil {
		return w.opts.Tracing.ExtractNATS(context.WithoutCancel(ctx), h)
	}
	if w.opts.Headers == nil {
		return context.WithoutCancel(ctx)
	}
	h, err := w.opts.Headers(ctx, e.Revision())
	if err != nil {
		// Superseded already (the bucket keeps few revisions), or NATS
		// is away: trace it without its writer.
		w.log.Debug("no trace context for a change", "key", e.Key(), "revision", e.Revision(), "error", err)
		return context.WithoutCancel(ctx)
	}
	return w.opts.Tracing.ExtractNATS(context.WithoutCancel(ctx), h)
}

// add records e, applied in this batch: an event with its key, revision
// and outcome, and a link to its writer's span when that is not the parent.
func (b *batch) add(ctx context.Context, e jetstream.KeyValueEntry) {
	if b == nil {
		return
	}
	key, rev := e.Key(), e.Revision()
	b.keys = append(b.keys, key)
	op := "put"
	if e.Operation() != jetstream.KeyValuePut {
		op = "delete"
	}
	attrs := []attribute.KeyValue{
		telemetry.AttrConfigKey.String(key),
		telemetry.AttrConfigRevision.Int64(int64(rev)),
		telemetry.AttrConfigOperation.String(op),
	}
	if sk := b.w.skipped[key]; sk != nil && sk.Revision == rev {
		attrs = append(attrs, telemetry.AttrConfigError.String(sk.Err.Error()))
		b.span.SetStatus(codes.Error, "refused "+key+" at revision "+strconv.FormatUint(rev, 10))
	}
	b.span.AddEvent(telemetry.EventConfigEntry, trace.WithAttributes(attrs...))
	if b.first {
		b.first = false
		return
	}
	if sc := trace.SpanContextFromContext(b.w.traceContext(ctx, e)); sc.IsValid() && sc.TraceID() != b.span.SpanContext().TraceID() {
		b.span.AddLink(trace.Link{SpanContext: sc})
	}
}

// end closes the span once the batch's snapshot is published; built are
// the Services whose Upstream it rebuilt.
func (b *batch) end(built []string) {
	if b == nil {
		return
	}
	s := b.w.Snapshot()
	b.span.SetAttributes(
		telemetry.AttrConfigRevision.Int64(int64(s.Revision)),
		telemetry.AttrConfigKeys.StringSlice(b.keys),
		telemetry.AttrUpstreamsRebuilt.StringSlice(built),
	)
	if len(b.keys) == 1 {
		b.span.SetAttributes(telemetry.AttrConfigKey.String(b.keys[0]))
	}
	var skipped []string
	for _, sk := range s.Skipped {
		if slices.Contains(b.keys, sk.Key) {
			skipped = append(skipped, sk.Key)
		}
	}
	if len(skipped) > 0 {
		b.span.SetAttributes(telemetry.AttrConfigSkipped.StringSlice(skipped))
		b.span.SetStatus(codes.Error, "refused: "+strings.Join(skipped, ", "))
	}
	b.span.End()
}
