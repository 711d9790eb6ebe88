package telemetry_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/telemetry"
)

func TestSetupFromEnv(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		on      bool
		wantErr bool
	}{
		{name: "unset is off", env: map[string]string{}},
		{name: "none is off", env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}},
		{name: "sdk disabled is off", env: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}},
		{name: "console is on", env: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, on: true},
		{name: "otlp grpc is on", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, on: true},
		{name: "otlp http is on", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, on: true},
		{name: "unknown exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin-ish"}, wantErr: true},
		{name: "unknown protocol", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, wantErr: true},
		{name: "unknown propagator", env: map[string]string{"OTEL_PROPAGATORS": "tracecontext,smoke-signals"}, wantErr: true},
		{name: "batch queue not a number", env: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, wantErr: true},
		{name: "batch sizes", env: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_MAX_QUEUE_SIZE": "4096", "OTEL_BSP_SCHEDULE_DELAY": "200"}, on: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_PROPAGATORS", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_SCHEDULE_DELAY"} {
				t.Setenv(k, tc.env[k])
			}
			tr, shutdown, err := telemetry.Setup(context.Background(), "keyway-test")
			if tc.wantErr {
				if err == nil {
					t.Fatal("Setup succeeded; want an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			defer shutdown(context.Background())
			if tr.On() != tc.on {
				t.Fatalf("On() = %v, want %v", tr.On(), tc.on)
			}
			if tr.Propagator == nil {
				t.Fatal("no propagator")
			}
		})
	}
}

func TestNATSHeaderRoundTrip(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr := telemetry.New(tp)
	ctx, span := tr.Tracer.Start(context.Background(), telemetry.SpanStorePut)
	msg := nats.NewMsg("$KV.keyway-config.service.orders")
	tr.InjectNATS(ctx, msg)
	span.End()
	if msg.Header.Get("traceparent") == "" {
		t.Fatalf("no traceparent header in %v", msg.Header)
	}
	got := trace.SpanContextFromContext(tr.ExtractNATS(context.Background(), msg.Header))
	if got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() || !got.IsRemote() {
		t.Fatalf("extracted %v, want the remote context of %v", got, span.SpanContext())
	}
	// A header written with another case (Go's http.Header canonical form).
	h := nats.Header{"Traceparent": msg.Header["traceparent"]}
	if got := trace.SpanContextFromContext(tr.ExtractNATS(context.Background(), h)); got.TraceID() != span.SpanContext().TraceID() {
		t.Fatalf("canonical-case header: extracted %v", got)
	}
	// No span: nothing written.
	empty := nats.NewMsg("x")
	tr.InjectNATS(context.Background(), empty)
	if len(empty.Header) != 0 {
		t.Fatalf("headers written without a span: %v", empty.Header)
	}
}

func TestFailAndSecretFetch(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr := telemetry.New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	_, span := tr.StartSecretFetch(context.Background(), "keystore/edge#gw")
	telemetry.Fail(span, failure.Unknown, "vault: permission denied")
	span.End()
	ended := rec.Ended()
	if len(ended) != 1 || ended[0].Name() != telemetry.SpanSecretFetch {
		t.Fatalf("spans %v", ended)
	}
	s := ended[0]
	if s.Status().Description != "unknown: vault: permission denied" {
		t.Fatalf("status %+v", s.Status())
	}
	attrs := map[string]string{}
	for _, a := range s.Attributes() {
		attrs[string(a.Key)] = a.Value.String()
	}
	if attrs["keyway.failure.reason"] != "unknown" || attrs["error.type"] != "unknown" || attrs["keyway.secret.ref"] != "keystore/edge#gw" {
		t.Fatalf("attributes %v", attrs)
	}
	// Off: a span that the caller may end without ending ctx's.
	off := telemetry.New(nil)
	ctx, parent := tr.Tracer.Start(context.Background(), "parent")
	_, s2 := off.StartSecretFetch(ctx, "keystore/edge#gw")
	s2.End()
	if !parent.IsRecording() {
		t.Fatal("ending the off span ended its parent")
	}
	parent.End()
}
