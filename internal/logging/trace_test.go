package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/logging"
)

func TestLogLinesCarryTheirTrace(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := logging.New(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	log.With("upstream", "orders").WarnContext(ctx, "upstream request failed")
	log.Info("no trace here")

	dec := json.NewDecoder(&buf)
	var traced, plain map[string]any
	if err := dec.Decode(&traced); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&plain); err != nil {
		t.Fatal(err)
	}
	if traced[logging.KeyTraceID] != "4bf92f3577b34da6a3ce929d0e0e4736" || traced[logging.KeySpanID] != "00f067aa0ba902b7" || traced["upstream"] != "orders" {
		t.Errorf("traced line = %v, want trace_id, span_id and the logger's attributes", traced)
	}
	if _, ok := plain[logging.KeyTraceID]; ok {
		t.Errorf("a line logged without a span has trace_id: %v", plain)
	}
}
