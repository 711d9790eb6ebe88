package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/telemetry"
	"keyway.dev/policy/internal/app"
)

// An Apply is traced down to each key written, and each key's message
// carries its span's context in its headers, for the proxy nodes.
func TestApplyIsTracedIntoTheMessageHeaders(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	s := startStackWith(t, func(c *app.Config) { c.Tracing = telemetry.New(tp) })
	ctx := context.Background()
	resp, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9"), route("orders", "/orders/", "orders"))
	if err != nil {
		t.Fatal(err)
	}

	spans := rec.Ended()
	find := func(name string, parent trace.SpanContext) []sdktrace.ReadOnlySpan {
		var out []sdktrace.ReadOnlySpan
		for _, sp := range spans {
			if sp.Name() == name && (!parent.IsValid() || sp.Parent().SpanID() == parent.SpanID()) {
				out = append(out, sp)
			}
		}
		return out
	}
	rpc := find(telemetry.SpanPolicyApply, trace.SpanContext{})
	if len(rpc) != 1 || rpc[0].SpanKind() != trace.SpanKindServer {
		t.Fatalf("Apply RPC spans %v", spans)
	}
	write := find(telemetry.SpanStoreWrite, rpc[0].SpanContext())
	if len(write) != 1 {
		t.Fatalf("store.write under the RPC: %d", len(write))
	}
	puts := find(telemetry.SpanStorePut, write[0].SpanContext())
	if len(puts) != 2 {
		t.Fatalf("store.put under the write: %d", len(puts))
	}

	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "KV_"+configkv.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]uint64{}
	for _, r := range resp.Results {
		byKey[strings.ToLower(r.Kind)+"."+r.Name] = r.Revision
	}
	for _, put := range puts {
		attrs := map[string]string{}
		for _, a := range put.Attributes() {
			attrs[string(a.Key)] = a.Value.String()
		}
		key := attrs["keyway.config.key"]
		rev, ok := byKey[key]
		if !ok || attrs["keyway.config.revision"] != fmt.Sprint(rev) || attrs["keyway.config.operation"] != "put" || put.SpanKind() != trace.SpanKindProducer {
			t.Errorf("store.put attributes %v, kind %v; applied %v", attrs, put.SpanKind(), byKey)
			continue
		}
		msg, err := stream.GetMsg(ctx, rev)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("00-%s-%s-01", put.SpanContext().TraceID(), put.SpanContext().SpanID())
		if got := msg.Header.Get("traceparent"); got != want {
			t.Errorf("%s at revision %d: traceparent %q, want %q", key, rev, got, want)
		}
	}
}
