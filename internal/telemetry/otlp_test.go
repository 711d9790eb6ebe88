package telemetry

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// capturingClient is a fake OTLP client (no collector is needed to compare
// two encodings): it keeps what it is asked to upload, marshalled as the
// real clients marshal it.
type capturingClient struct{ sent [][]byte }

func (*capturingClient) Start(context.Context) error { return nil }
func (*capturingClient) Stop(context.Context) error  { return nil }
func (c *capturingClient) UploadTraces(_ context.Context, rss []*tracepb.ResourceSpans) error {
	for _, rs := range rss {
		b, err := proto.Marshal(rs)
		if err != nil {
			return err
		}
		c.sent = append(c.sent, b)
	}
	return nil
}

// decoded is what c was sent, decoded again.
func (c *capturingClient) decoded(t *testing.T) []*tracepb.ResourceSpans {
	t.Helper()
	var out []*tracepb.ResourceSpans
	for _, b := range c.sent {
		rs := &tracepb.ResourceSpans{}
		if err := proto.Unmarshal(b, rs); err != nil {
			t.Fatalf("decoding a ResourceSpans: %v", err)
		}
		if len(rs.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("fields the schema does not know: %x", rs.ProtoReflect().GetUnknown())
		}
		out = append(out, rs)
	}
	return out
}

// The encoding sends what the SDK's exporter sends for the same spans:
// every attribute type, events, links, status, remote parents, trace
// state, dropped counts, lengths over one byte, two resources and scopes.
func TestOTLPEncodingMatchesSDK(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	long := strings.Repeat("x", 20_000) // a length of three bytes
	res1 := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "keyway-proxy"), attribute.Int("n", 1))
	res2 := resource.NewSchemaless(attribute.String("service.name", "keyway-policy"))
	limits := sdktrace.NewSpanLimits()
	limits.AttributeCountLimit = 20
	limits.EventCountLimit = 2
	limits.LinkCountLimit = 1
	tp1 := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res1), sdktrace.WithRawSpanLimits(limits))
	tp2 := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res2))
	tr1 := tp1.Tracer(InstrumentationName)
	tr1b := tp1.Tracer("other", trace.WithInstrumentationVersion("v1.2.3"), trace.WithSchemaURL("https://example.com/s"), trace.WithInstrumentationAttributes(attribute.Bool("b", true)))
	tr2 := tp2.Tracer(InstrumentationName)

	ts, _ := trace.ParseTraceState("k=v,a=b")
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true,
	})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), remote)
	ctx, root := tr1.Start(ctx, SpanRequest, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithLinks(trace.Link{SpanContext: remote, Attributes: []attribute.KeyValue{attribute.String("l", "v")}}, trace.Link{SpanContext: remote}))
	root.SetAttributes(
		attribute.Bool("bool", false), attribute.Bool("bool2", true), attribute.Int64("int", -7), attribute.Int("zero", 0),
		attribute.Float64("float", 0.25), attribute.String("string", "s"), attribute.String("empty", ""), attribute.String("long", long),
		attribute.BoolSlice("bools", []bool{true, false}), attribute.Int64Slice("ints", []int64{1, -2}),
		attribute.Float64Slice("floats", []float64{1.5}), attribute.StringSlice("strings", []string{"a", "", long}),
		attribute.KeyValue{Key: "bytes", Value: attribute.ByteSliceValue([]byte{0, 1, 2})},
		attribute.KeyValue{Key: "slice", Value: attribute.SliceValue(attribute.StringValue("a"), attribute.IntValue(3))},
		attribute.KeyValue{Key: "map", Value: attribute.MapValue(attribute.String("k", "v"), attribute.Int("i", 1))},
		attribute.KeyValue{Key: "emptyvalue"},
	)
	for i := range 22 { // beyond the limit: dropped
		root.SetAttributes(attribute.Int("extra"+strings.Repeat("i", i), i))
	}
	root.AddEvent(EventRouteMatch, trace.WithAttributes(AttrRoute.String("r"), AttrUpstream.String("u")))
	root.AddEvent("e2")
	root.AddEvent("e3") // dropped
	_, child := tr1.Start(ctx, SpanUpstreamRequest, trace.WithSpanKind(trace.SpanKindClient))
	child.SetStatus(codes.Error, "unknown_authority: "+long)
	child.End()
	_, other := tr1b.Start(context.Background(), "keyway.other", trace.WithSpanKind(trace.SpanKindProducer))
	other.SetStatus(codes.Ok, "")
	other.End()
	_, consumer := tr2.Start(context.Background(), SpanNodeApply, trace.WithSpanKind(trace.SpanKindConsumer))
	consumer.End()
	_, internal := tr2.Start(context.Background(), SpanStoreWrite)
	internal.End()
	root.End()
	spans := rec.Ended()

	sdkClient := &capturingClient{}
	sdkExp, err := otlptrace.New(context.Background(), sdkClient)
	if err != nil {
		t.Fatal(err)
	}
	if err := sdkExp.ExportSpans(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	ourClient := &capturingClient{}
	ours := &OTLPExporter{client: ourClient}
	// Twice: the second export reuses the buffers of the first.
	for range 2 {
		ourClient.sent = nil
		if err := ours.ExportSpans(context.Background(), spans); err != nil {
			t.Fatal(err)
		}
	}

	want, got := sdkClient.decoded(t), ourClient.decoded(t)
	if len(got) != len(want) || len(want) != 2 {
		t.Fatalf("%d ResourceSpans, want %d (2 resources)", len(got), len(want))
	}
	for _, g := range got {
		found := false
		for _, w := range want {
			if proto.Equal(g, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("sent\n%s\nwhich the SDK's exporter does not send; it sends\n%s\n%s", trim(g), trim(want[0]), trim(want[1]))
		}
	}
}

func trim(m proto.Message) string {
	s := protojson.Format(m)
	if len(s) > 4000 {
		return s[:4000] + "…"
	}
	return s
}

func TestOTLPExporterUnknownProtocol(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
	var e *errUnknownProtocol
	if _, err := NewOTLPExporter(context.Background()); !errors.As(err, &e) || e.name != "OTEL_EXPORTER_OTLP_PROTOCOL" {
		t.Fatalf("NewOTLPExporter: %v, want an unknown protocol error", err)
	}
}
