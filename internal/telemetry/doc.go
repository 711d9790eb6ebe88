// Package telemetry is Keyway's OpenTelemetry tracing: set-up from the
// standard OTEL_* environment variables ([Setup]), the W3C trace-context and
// baggage propagator, the names of every span Keyway starts and of the
// attributes it sets (OpenTelemetry semantic conventions where they exist,
// keyway.* for the rest), and the carriers that move a trace context through
// NATS message headers.
//
// Tracing is off unless OTEL_TRACES_EXPORTER names an exporter. Off means a
// nil [Tracing.Tracer]: instrumented code checks [Tracing.On] (or
// trace.Span.IsRecording) before it builds a single attribute, so that the
// request path allocates nothing more than without tracing.
package telemetry
