package telemetry

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
)

// NATSHeader carries a trace context in NATS message headers. Keys are
// written as the propagator gives them (lower case: "traceparent"); NATS
// headers are case-sensitive, so Get falls back to a case-insensitive match
// for headers written by other libraries.
type NATSHeader nats.Header

var _ propagation.TextMapCarrier = NATSHeader(nil)

// Get returns the first value of key.
func (h NATSHeader) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set replaces the values of key.
func (h NATSHeader) Set(key, value string) { h[key] = []string{value} }

// Keys lists the header names.
func (h NATSHeader) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// InjectNATS writes ctx's trace context (and baggage) into msg's headers,
// creating them if needed. Nothing is written when ctx has no span context.
func (t Tracing) InjectNATS(ctx context.Context, msg *nats.Msg) {
	if t.Propagator == nil {
		return
	}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	t.Propagator.Inject(ctx, NATSHeader(msg.Header))
}

// ExtractNATS returns ctx with the trace context found in h, if any.
func (t Tracing) ExtractNATS(ctx context.Context, h nats.Header) context.Context {
	if t.Propagator == nil || len(h) == 0 {
		return ctx
	}
	return t.Propagator.Extract(ctx, NATSHeader(h))
}
