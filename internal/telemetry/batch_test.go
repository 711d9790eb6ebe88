package telemetry_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"keyway.dev/internal/telemetry"
	"keyway.dev/internal/testwait"
)

// A full batch is exported before the delay is over, ForceFlush exports the
// rest, a full queue drops spans without blocking, and Shutdown exports
// what is left and stops taking spans.
func TestBatcher(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	b := telemetry.NewBatcher(exp, telemetry.BatchOptions{ScheduleDelay: time.Hour, MaxQueueSize: 8, MaxExportBatchSize: 4})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	tr := tp.Tracer("test")
	end := func(n int) {
		for i := range n {
			_, s := tr.Start(context.Background(), fmt.Sprint("s", i))
			s.End()
		}
	}
	end(4) // one full batch: exported without waiting for the hour
	testwait.Eventually(t, 10*time.Second, func() error {
		if n := len(exp.GetSpans()); n != 4 {
			return fmt.Errorf("a full batch not exported: %d spans", n)
		}
		return nil
	})
	end(2)
	if err := b.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(exp.GetSpans()); got != 6 {
		t.Fatalf("after ForceFlush: %d spans exported, want 6", got)
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	end(3) // after Shutdown: not taken, not counted as dropped
	if got, d := len(exp.GetSpans()), b.Dropped(); got != 0 || d != 0 {
		// The in-memory exporter forgets its spans at Shutdown.
		t.Fatalf("after Shutdown: %d spans exported, %d dropped; want none", got, d)
	}
}

func TestBatcherDropsWhenFull(t *testing.T) {
	blocked := make(chan struct{})
	exp := &blockingExporter{release: blocked}
	b := telemetry.NewBatcher(exp, telemetry.BatchOptions{ScheduleDelay: time.Hour, MaxQueueSize: 4, MaxExportBatchSize: 2})
	t.Cleanup(func() { close(blocked); b.Shutdown(context.Background()) })
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	tr := tp.Tracer("test")
	// The exporter never returns: what the exporting goroutine took (up to
	// a full queue) and a full queue are kept, the rest dropped.
	for range 20 {
		_, s := tr.Start(context.Background(), "s")
		s.End()
	}
	if d := b.Dropped(); d < 20-4-4 {
		t.Fatalf("%d spans dropped, want at least 12", d)
	}
}

type blockingExporter struct{ release chan struct{} }

func (e *blockingExporter) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	select {
	case <-e.release:
	case <-ctx.Done():
	}
	return nil
}
func (*blockingExporter) Shutdown(context.Context) error { return nil }

// A SpanBuffer's attributes reach the span, in the order set, by End: also
// those beyond its room; the later value of a key wins.
func TestSpanBuffer(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	_, s := tp.Tracer("test").Start(context.Background(), "s")
	var b telemetry.SpanBuffer
	b.Reset(s)
	b.SetAttributes(attribute.Int("k", 1))
	for i := range 20 { // more than the buffer holds
		b.SetAttributes(attribute.Int(fmt.Sprint("a", i), i))
	}
	b.SetAttributes(attribute.Int("k", 2))
	b.End()
	got := map[attribute.Key]int64{}
	for _, a := range rec.Ended()[0].Attributes() {
		got[a.Key] = a.Value.AsInt64()
	}
	if len(got) != 21 || got["k"] != 2 || got["a19"] != 19 {
		t.Fatalf("attributes %v, want k=2 and a0..a19", got)
	}
}
