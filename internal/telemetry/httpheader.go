package telemetry

import (
	"context"
	"net/http"
)

// HTTPHeader is a propagation.TextMapCarrier over an http.Header that
// finds the W3C trace-context and baggage fields under their canonical
// keys without making them: propagation.HeaderCarrier canonicalises
// "traceparent", "tracestate" and "baggage" on every Get and Set, and
// net/textproto allocates a new string for each (they are not among its
// common headers), three or four allocations per proxied request. Any
// other key (b3, jaeger, ...) goes through http.Header as before.
type HTTPHeader http.Header

// canonicalKey is key's canonical form for the W3C fields, key otherwise.
func canonicalKey(key string) (string, bool) {
	switch key {
	case "traceparent":
		return "Traceparent", true
	case "tracestate":
		return "Tracestate", true
	case "baggage":
		return "Baggage", true
	}
	return key, false
}

// Get is the first value of key.
func (h HTTPHeader) Get(key string) string {
	if k, ok := canonicalKey(key); ok {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return http.Header(h).Get(key)
}

// Set replaces the values of key by value.
func (h HTTPHeader) Set(key, value string) {
	if k, ok := canonicalKey(key); ok {
		h[k] = []string{value}
		return
	}
	http.Header(h).Set(key, value)
}

// Keys are the header's keys.
func (h HTTPHeader) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// InjectHTTP writes ctx's trace context into h with t's propagator,
// replacing what h had under the same keys.
func (t Tracing) InjectHTTP(ctx context.Context, h http.Header) {
	t.Propagator.Inject(ctx, HTTPHeader(h))
}

// ExtractHTTP is ctx with the trace context h carries, read with t's
// propagator.
func (t Tracing) ExtractHTTP(ctx context.Context, h http.Header) context.Context {
	return t.Propagator.Extract(ctx, HTTPHeader(h))
}
