package telemetry_test

import (
	"context"
	"net/http"
	"reflect"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/telemetry"
)

// The W3C fields go into and come out of headers as
// propagation.HeaderCarrier puts them: the same header map, the same
// context read back.
func TestHTTPHeaderMatchesHeaderCarrier(t *testing.T) {
	tr := telemetry.New(nil)
	ts, err := trace.ParseTraceState("vendor=a,other=b")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
		TraceState: ts,
	})
	member, err := baggage.NewMember("tenant", "blue")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	ctx := baggage.ContextWithBaggage(trace.ContextWithSpanContext(context.Background(), sc), bag)

	want := http.Header{"Traceparent": {"stale"}, "Accept": {"*/*"}}
	tr.Propagator.Inject(ctx, propagation.HeaderCarrier(want))
	got := http.Header{"Traceparent": {"stale"}, "Accept": {"*/*"}}
	tr.InjectHTTP(ctx, got)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("InjectHTTP wrote %v, HeaderCarrier %v", got, want)
	}
	if got.Get("Traceparent") != "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01" {
		t.Fatalf("traceparent %q", got.Get("Traceparent"))
	}

	back := tr.ExtractHTTP(context.Background(), got)
	if sc2 := trace.SpanContextFromContext(back); !sc2.Equal(sc.WithRemote(true)) {
		t.Fatalf("extracted %v, want %v", sc2, sc)
	}
	if b := baggage.FromContext(back); b.Member("tenant").Value() != "blue" {
		t.Fatalf("extracted baggage %q", b.String())
	}
	// Keys other than the W3C ones are canonicalised as http.Header does.
	h := telemetry.HTTPHeader(http.Header{})
	h.Set("x-b3-traceid", "abc")
	if h.Get("X-B3-Traceid") != "abc" || http.Header(h).Get("x-b3-traceid") != "abc" {
		t.Fatalf("b3 key: %v", h)
	}
	if v := (telemetry.HTTPHeader(http.Header{})).Get("traceparent"); v != "" {
		t.Fatalf("missing traceparent read as %q", v)
	}
}
