package telemetry

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// SpanBuffer is a span whose attributes are kept until End and set on it
// in one call. The SDK's span grows (copies) its attribute slice at each
// SetAttributes and copies the start options' attributes twice; a request
// span set in four steps paid that four times. Safe for concurrent use, as
// a span is.
//
// Everything but SetAttributes and End goes to the span as is. When the
// buffer is full, what it holds goes to the span and it starts again.
type SpanBuffer struct {
	trace.Span
	mu    sync.Mutex
	n     int
	attrs [bufferedAttrs]attribute.KeyValue
}

// bufferedAttrs is room for the attributes of a request span (12) and of
// an upstream span (11, 12 when it fails) that succeed; a failure's few
// more take a second call.
const bufferedAttrs = 12

// Reset makes b the buffer of s, with nothing kept.
func (b *SpanBuffer) Reset(s trace.Span) {
	b.mu.Lock()
	b.Span, b.n = s, 0
	b.mu.Unlock()
}

// SetAttributes keeps kv for End. kv is copied, never handed on (a
// buffer that fills is set on the span first), so that callers' arrays of
// attributes stay on their stacks.
func (b *SpanBuffer) SetAttributes(kv ...attribute.KeyValue) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(kv) > 0 {
		if b.n == len(b.attrs) {
			b.flush()
		}
		n := copy(b.attrs[b.n:], kv)
		b.n += n
		kv = kv[n:]
	}
}

func (b *SpanBuffer) flush() {
	if b.n > 0 {
		b.Span.SetAttributes(b.attrs[:b.n]...)
		clear(b.attrs[:b.n])
		b.n = 0
	}
}

// End sets the attributes kept and ends the span.
func (b *SpanBuffer) End(opts ...trace.SpanEndOption) {
	b.mu.Lock()
	b.flush()
	b.mu.Unlock()
	b.Span.End(opts...)
}
