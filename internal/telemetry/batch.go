package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"keyway.dev/internal/limits"
)

// BatchOptions are a [Batcher]'s bounds; the zero value of a field is the
// OpenTelemetry default.
type BatchOptions struct {
	// ScheduleDelay is the longest a span waits before it is exported
	// (default 5 s).
	ScheduleDelay time.Duration
	// ExportTimeout bounds one export (default 30 s).
	ExportTimeout time.Duration
	// MaxQueueSize is how many ended spans wait at most; more are dropped,
	// never waited for (default 2048).
	MaxQueueSize int
	// MaxExportBatchSize is how many spans one export sends at most, and
	// how many waiting spans start an export before the delay is over
	// (default 512; at most MaxQueueSize).
	MaxExportBatchSize int
}

func (o BatchOptions) withDefaults() BatchOptions {
	if o.ScheduleDelay <= 0 {
		o.ScheduleDelay = 5 * time.Second
	}
	if o.ExportTimeout <= 0 {
		o.ExportTimeout = 30 * time.Second
	}
	if o.MaxQueueSize <= 0 {
		o.MaxQueueSize = 2048
	}
	if o.MaxExportBatchSize <= 0 {
		o.MaxExportBatchSize = 512
	}
	o.MaxExportBatchSize = min(o.MaxExportBatchSize, o.MaxQueueSize)
	return o
}

// batchOptionsFromEnv reads OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_EXPORT_TIMEOUT
// (milliseconds), OTEL_BSP_MAX_QUEUE_SIZE and OTEL_BSP_MAX_EXPORT_BATCH_SIZE.
func batchOptionsFromEnv() (BatchOptions, error) {
	var o BatchOptions
	var errs []error
	read := func(name string) int {
		v := strings.TrimSpace(os.Getenv(name))
		if v == "" {
			return 0
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("telemetry: %s=%s: want a positive whole number of milliseconds or spans", name, limits.Quote(v)))
			return 0
		}
		return n
	}
	o.ScheduleDelay = time.Duration(read("OTEL_BSP_SCHEDULE_DELAY")) * time.Millisecond
	o.ExportTimeout = time.Duration(read("OTEL_BSP_EXPORT_TIMEOUT")) * time.Millisecond
	o.MaxQueueSize = read("OTEL_BSP_MAX_QUEUE_SIZE")
	o.MaxExportBatchSize = read("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
	return o, errors.Join(errs...)
}

// Batcher is a span processor that exports ended spans in batches, as the
// SDK's batch span processor does, with its options and their defaults.
// It differs in how a span reaches the exporting goroutine: the SDK's
// sends each span on a channel, waking that goroutine once per span (two
// per proxied request, a goroutine switch and often a futex each); a
// Batcher appends the span to a slice under a mutex and wakes the
// exporting goroutine once per batch, or when the delay is over.
//
// Safe for concurrent use. A span ended while MaxQueueSize spans wait is
// dropped (and counted), never waited for.
type Batcher struct {
	exp sdktrace.SpanExporter
	o   BatchOptions

	mu      sync.Mutex
	queue   []sdktrace.ReadOnlySpan
	spare   []sdktrace.ReadOnlySpan // the queue exported last, for reuse
	stopped bool

	dropped atomic.Uint64
	// wake asks the exporting goroutine for an export now (a batch is
	// full); flush does too, and is answered when it is done.
	wake  chan struct{}
	flush chan chan struct{}
	stop  chan struct{}
	done  chan struct{}
	// exportMu makes one export at a time, the loop's or Shutdown's.
	exportMu sync.Mutex
}

var _ sdktrace.SpanProcessor = (*Batcher)(nil)

// NewBatcher starts a Batcher exporting to exp; Shutdown stops it.
func NewBatcher(exp sdktrace.SpanExporter, o BatchOptions) *Batcher {
	o = o.withDefaults()
	b := &Batcher{
		exp:   exp,
		o:     o,
		queue: make([]sdktrace.ReadOnlySpan, 0, o.MaxExportBatchSize),
		wake:  make(chan struct{}, 1),
		flush: make(chan chan struct{}),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go b.loop()
	return b
}

// OnStart does nothing.
func (*Batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues s for export if it is sampled.
func (b *Batcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	b.mu.Lock()
	if b.stopped || len(b.queue) >= b.o.MaxQueueSize {
		stopped := b.stopped
		b.mu.Unlock()
		if !stopped {
			b.dropped.Add(1)
		}
		return
	}
	b.queue = append(b.queue, s)
	full := len(b.queue) == b.o.MaxExportBatchSize
	b.mu.Unlock()
	if full {
		select {
		case b.wake <- struct{}{}:
		default: // an export is already asked for
		}
	}
}

// Dropped is the number of spans dropped because the queue was full.
func (b *Batcher) Dropped() uint64 { return b.dropped.Load() }

func (b *Batcher) loop() {
	defer close(b.done)
	t := time.NewTimer(b.o.ScheduleDelay)
	defer t.Stop()
	for {
		var answer chan struct{}
		select {
		case <-b.stop:
			return
		case <-t.C:
		case <-b.wake:
		case answer = <-b.flush:
		}
		// export has handed each failure to otel.Handle already.
		_ = b.exportAll(context.Background())
		if answer != nil {
			close(answer)
		}
		t.Reset(b.o.ScheduleDelay)
	}
}

// exportAll exports every span queued, in batches of MaxExportBatchSize.
func (b *Batcher) exportAll(ctx context.Context) error {
	b.exportMu.Lock()
	defer b.exportMu.Unlock()
	b.mu.Lock()
	spans := b.queue
	b.queue = b.spare[:0]
	b.spare = nil
	b.mu.Unlock()
	var errs []error
	for rest := spans; len(rest) > 0; {
		n := min(len(rest), b.o.MaxExportBatchSize)
		if err := b.export(ctx, rest[:n]); err != nil {
			errs = append(errs, err)
		}
		rest = rest[n:]
	}
	clear(spans) // the spans go to the collector, not kept here
	b.mu.Lock()
	if b.spare == nil && cap(spans) <= 2*b.o.MaxQueueSize {
		b.spare = spans[:0]
	}
	b.mu.Unlock()
	return errors.Join(errs...)
}

func (b *Batcher) export(ctx context.Context, batch []sdktrace.ReadOnlySpan) error {
	ctx, cancel := context.WithTimeout(ctx, b.o.ExportTimeout)
	defer cancel()
	if err := b.exp.ExportSpans(ctx, batch); err != nil {
		otel.Handle(err)
		return err
	}
	return nil
}

// ForceFlush exports every span queued, returning when done or when ctx
// ends.
func (b *Batcher) ForceFlush(ctx context.Context) error {
	answer := make(chan struct{})
	select {
	case b.flush <- answer:
	case <-b.done: // shut down: nothing is queued any more
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-answer:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops taking spans, exports those queued and shuts the exporter
// down. Only the first call does anything.
func (b *Batcher) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return nil
	}
	b.stopped = true
	b.mu.Unlock()
	close(b.stop)
	<-b.done
	err := b.exportAll(ctx)
	return errors.Join(err, b.exp.Shutdown(ctx))
}
