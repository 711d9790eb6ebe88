package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing is what instrumented code needs. The zero value is tracing off.
type Tracing struct {
	// Provider is nil when tracing is off.
	Provider trace.TracerProvider
	// Tracer is Provider's tracer for [InstrumentationName]; nil when
	// tracing is off.
	Tracer trace.Tracer
	// Propagator reads and writes trace context in headers; the W3C
	// trace-context and baggage propagator unless OTEL_PROPAGATORS says
	// otherwise. Never nil from [New] or [Setup].
	Propagator propagation.TextMapPropagator
}

// On reports whether spans are recorded.
func (t Tracing) On() bool { return t.Tracer != nil }

// New is tracing through tp (nil: off), with the default propagator. Tests
// pass an SDK provider over a tracetest.SpanRecorder.
func New(tp trace.TracerProvider) Tracing {
	t := Tracing{Propagator: DefaultPropagator()}
	if tp != nil {
		t.Provider = tp
		t.Tracer = tp.Tracer(InstrumentationName)
	}
	return t
}

// DefaultPropagator is W3C trace context and baggage.
func DefaultPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Setup configures tracing for service (the default service.name) from the
// environment, and makes it the OpenTelemetry global too (for libraries
// that use it). The variables are the standard ones:
//
//   - OTEL_TRACES_EXPORTER: otlp, console or none. Unset or none: tracing
//     is off (the returned Tracing's Tracer is nil). OTEL_SDK_DISABLED=true
//     turns it off as well.
//   - OTEL_EXPORTER_OTLP_ENDPOINT (and _TRACES_ENDPOINT),
//     OTEL_EXPORTER_OTLP_PROTOCOL (grpc or http/protobuf, the default),
//     OTEL_EXPORTER_OTLP_HEADERS, ... : read by the OTLP exporter.
//   - OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: the resource.
//   - OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG: the sampler (default
//     parentbased_always_on).
//   - OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_EXPORT_TIMEOUT (milliseconds),
//     OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE: the
//     [Batcher]'s [BatchOptions].
//   - OTEL_PROPAGATORS: default tracecontext,baggage.
//
// shutdown flushes the spans still buffered and stops the exporter; call it
// once, at exit, with a deadline. A bad value is an error naming the
// variable.
func Setup(ctx context.Context, service string) (t Tracing, shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	prop, err := propagatorFromEnv()
	if err != nil {
		return Tracing{}, noop, err
	}
	otel.SetTextMapPropagator(prop)
	off := Tracing{Propagator: prop}
	exporter := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER"))
	if exporter == "" || exporter == "none" || strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return off, noop, nil
	}
	batch, err := batchOptionsFromEnv()
	if err != nil {
		return Tracing{}, noop, err
	}
	var exp sdktrace.SpanExporter
	if exporter == "otlp" {
		exp, err = NewOTLPExporter(ctx)
	} else {
		exp, err = autoexport.NewSpanExporter(ctx)
	}
	if err != nil {
		return Tracing{}, noop, fmt.Errorf("telemetry: OTEL_TRACES_EXPORTER=%q (use otlp, console or none): %w", exporter, err)
	}
	if autoexport.IsNoneSpanExporter(exp) {
		return off, noop, nil
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service)),
		// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the default.
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx) // nothing was exported yet
		return Tracing{}, noop, fmt.Errorf("telemetry: reading OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	// The SDK reads OTEL_TRACES_SAMPLER(_ARG) itself; OTEL_BSP_* are the
	// Batcher's (the SDK's batch span processor wakes its exporting
	// goroutine once per span).
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(NewBatcher(exp, batch)), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	t = Tracing{Provider: tp, Tracer: tp.Tracer(InstrumentationName), Propagator: prop}
	return t, tp.Shutdown, nil
}

// propagatorFromEnv is OTEL_PROPAGATORS' propagator, W3C trace context and
// baggage when unset.
func propagatorFromEnv() (propagation.TextMapPropagator, error) {
	v := strings.TrimSpace(os.Getenv("OTEL_PROPAGATORS"))
	if v == "" {
		return DefaultPropagator(), nil
	}
	var names []string
	for n := range strings.SplitSeq(v, ",") {
		names = append(names, strings.TrimSpace(n))
	}
	p, err := autoprop.TextMapPropagator(names...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTEL_PROPAGATORS=%q (use a list of tracecontext, baggage, b3, b3multi, jaeger, xray, ottrace, none): %w", v, err)
	}
	return p, nil
}
