package watch

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/proxy/internal/publish"
	"keyway.dev/proxy/internal/upstream"
)

// nopRecorder is an upstream.Recorder that keeps nothing.
type nopRecorder struct{}

func (nopRecorder) Request(int, failure.Reason, time.Duration) {}
func (nopRecorder) Release()                                   {}

// A panic while building one Service's Upstream (here from a test hook:
// the Recorder callback upstream.New calls) refuses that Service's value,
// keeps its previous Upstream, counts the panic, and leaves the other
// Services built.
func TestPanicBuildingAnUpstreamIsRefused(t *testing.T) {
	t.Parallel()
	kv := startBucket(t)
	put(t, kv, service("orders"))
	put(t, kv, service("billing"))
	var panicking atomic.Bool
	var mu sync.Mutex
	var stages []string
	w := New(Options{
		Upstream: upstream.Options{Recorder: func(name string) upstream.Recorder {
			if name == "billing" && panicking.Load() {
				var r upstream.Recorder
				r.Request(0, "", 0) // a nil interface call: a real runtime panic
			}
			return nopRecorder{}
		}},
		Panicked: func(stage string) { mu.Lock(); stages = append(stages, stage); mu.Unlock() },
	})
	run(t, w, kv)
	if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
		t.Fatal(err)
	}
	before := w.Snapshot().Upstreams.Get("billing")
	panicking.Store(true)

	changed := service("billing")
	changed.GetService().Spec.Endpoints = []string{"127.0.0.1:2"}
	rev := put(t, kv, changed)
	err := waitRevision(t, w, rev)
	var sk *publish.SkippedError
	if !errors.As(err, &sk) || sk.Key != "service.billing" || sk.Revision != rev || !errors.Is(err, publish.ErrPanic) {
		t.Fatalf("WaitRevision(%d) = %v, want service.billing refused for a panic", rev, err)
	}
	if got := w.Snapshot().Upstreams.Get("billing"); got != before {
		t.Error("the billing upstream was replaced")
	}

	// Another Service still builds after the panic.
	orders := service("orders")
	orders.GetService().Spec.Endpoints = []string{"127.0.0.1:3"}
	rev = put(t, kv, orders)
	if err := waitRevision(t, w, rev); !errors.As(err, &sk) || sk.Key != "service.billing" {
		t.Fatalf("WaitRevision(%d) = %v, want only the billing refusal", rev, err)
	}
	if u := w.Snapshot().Upstreams.Get("orders"); u == nil || u.Endpoints()[0] != "127.0.0.1:3" {
		t.Errorf("orders not rebuilt after the panic: %v", u)
	}
	mu.Lock()
	defer mu.Unlock()
	if s := w.Stats(); s.Panics != 1 || len(stages) != 1 || stages[0] != "upstream" {
		t.Errorf("panics counted %d, stages %v; want 1, [upstream]", s.Panics, stages)
	}
}
