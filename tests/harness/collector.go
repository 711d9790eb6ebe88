package harness

import (
	"context"
	"encoding/hex"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Collector is an OTLP/gRPC trace receiver on a loopback port: what the
// processes under test export their spans to (OTEL_EXPORTER_OTLP_ENDPOINT).
// It keeps every span it receives. Safe for concurrent use.
type Collector struct {
	collectortrace.UnimplementedTraceServiceServer
	// Endpoint is the URL for OTEL_EXPORTER_OTLP_ENDPOINT.
	Endpoint string

	// discard keeps no span, only the count (benchmarks).
	discard bool

	mu      sync.Mutex
	spans   []Span
	count   int
	changed chan struct{}
}

// Span is one received span with its resource's service.name.
type Span struct {
	Service string
	*tracepb.Span
}

// TraceID is the span's trace id in hex.
func (s Span) TraceID() string { return hex.EncodeToString(s.Span.TraceId) }

// SpanID is the span's id in hex.
func (s Span) SpanID() string { return hex.EncodeToString(s.Span.SpanId) }

// ParentID is the parent's span id in hex, "" for a root.
func (s Span) ParentID() string { return hex.EncodeToString(s.Span.ParentSpanId) }

// Attr is the string form of attribute key, "" when absent.
func (s Span) Attr(key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return anyValue(kv.Value)
		}
	}
	return ""
}

func anyValue(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_BoolValue:
		if x.BoolValue {
			return "true"
		}
		return "false"
	}
	return v.String()
}

// StartCollector serves a Collector on a free loopback port until the test
// ends.
func StartCollector(tb testing.TB) *Collector {
	tb.Helper()
	return startCollector(tb, false)
}

// StartCountingCollector is a Collector that only counts the spans it
// receives ([Collector.Count]), for load.
func StartCountingCollector(tb testing.TB) *Collector {
	tb.Helper()
	return startCollector(tb, true)
}

func startCollector(tb testing.TB, discard bool) *Collector {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	c := &Collector{Endpoint: "http://" + ln.Addr().String(), discard: discard, changed: make(chan struct{})}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	go srv.Serve(ln)
	tb.Cleanup(srv.Stop)
	return c
}

// Export implements collectortrace.TraceServiceServer.
func (c *Collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.discard {
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				c.count += len(ss.Spans)
			}
		}
		return &collectortrace.ExportTraceServiceResponse{}, nil
	}
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = anyValue(kv.Value)
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans = append(c.spans, Span{Service: service, Span: s})
				c.count++
			}
		}
	}
	close(c.changed)
	c.changed = make(chan struct{})
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// Count is how many spans were received so far.
func (c *Collector) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// Spans are the spans received so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}

// Wait returns once found reports true for the spans received, waiting for
// each export; it fails the test after timeout.
func (c *Collector) Wait(tb testing.TB, what string, timeout time.Duration, found func([]Span) bool) []Span {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		spans, ch := append([]Span(nil), c.spans...), c.changed
		c.mu.Unlock()
		if found(spans) {
			return spans
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("harness: collector: %s: not within %s (%d spans received)", what, timeout, len(spans))
		}
	}
}
