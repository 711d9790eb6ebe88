package watch

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// One change rebuilds what depends on it and nothing else: a binding change
// builds one Upstream and no routing table; a route change builds the
// routing table and no Upstream. The bootstrap builds each Upstream once
// and the routing table once, not once per key.
func TestOneChangeRebuildsOnlyWhatDependsOnIt(t *testing.T) {
	t.Parallel()
	kv := startBucket(t)
	const n = 50
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		put(t, kv, service(name))
		put(t, kv, route(name, name))
		put(t, kv, insecureBinding(t, name+"-tls", name))
	}
	w := New(Options{})
	run(t, w, kv)
	if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
		t.Fatal(err)
	}
	boot := w.Stats()
	if boot.UpstreamBuilds != n || boot.RouterBuilds != 1 {
		t.Fatalf("bootstrap of %d services: %d upstream builds and %d routing tables, want %d and 1", n, boot.UpstreamBuilds, boot.RouterBuilds, n)
	}

	// The binding moves to svc-8: svc-7 is rebuilt without TLS; svc-8 is
	// looked at, but the context it would get is the one it has (same
	// fingerprint), so its pool is kept.
	rev := put(t, kv, insecureBinding(t, "svc-7-tls", "svc-8"))
	if err := waitRevision(t, w, rev); err != nil {
		t.Fatal(err)
	}
	after := w.Stats()
	if got := after.UpstreamBuilds - boot.UpstreamBuilds; got != 1 {
		t.Errorf("a binding retargeted: %d upstream builds, want 1 (svc-7)", got)
	}
	if after.RouterBuilds != boot.RouterBuilds {
		t.Errorf("a binding change rebuilt the routing table")
	}

	rev = put(t, kv, route("extra", "svc-3"))
	if err := waitRevision(t, w, rev); err != nil {
		t.Fatal(err)
	}
	last := w.Stats()
	if last.UpstreamBuilds != after.UpstreamBuilds {
		t.Errorf("a route change built %d upstreams, want 0", last.UpstreamBuilds-after.UpstreamBuilds)
	}
	if last.RouterBuilds != after.RouterBuilds+1 {
		t.Errorf("a route change built %d routing tables, want 1", last.RouterBuilds-after.RouterBuilds)
	}
}

// A watch that breaks resumes after the last revision applied: it reads the
// changes made meanwhile, not the whole bucket again.
func TestBrokenWatchResumesWithoutResync(t *testing.T) {
	t.Parallel()
	kv := startBucket(t)
	const n = 40
	for i := range n {
		put(t, kv, service(fmt.Sprintf("svc-%d", i)))
	}
	w := New(Options{RetryInterval: time.Millisecond})
	var broke atomic.Bool
	w.breakBefore = func(e jetstream.KeyValueEntry) bool {
		if e != nil && e.Key() == "service.late-1" && broke.CompareAndSwap(false, true) {
			return true
		}
		return false
	}
	run(t, w, kv)
	if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
		t.Fatal(err)
	}
	before := w.Stats()
	put(t, kv, service("late-1"))
	rev := put(t, kv, service("late-2"))
	if err := kv.Delete(context.Background(), "service.svc-0"); err != nil {
		t.Fatal(err)
	}
	if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
		t.Fatal(err)
	}
	after := w.Stats()
	if !broke.Load() || after.Sessions != 2 {
		t.Fatalf("sessions: %d (broke: %t), want 2", after.Sessions, broke.Load())
	}
	// The break happened on late-1, which the first session read; the
	// second reads late-1, late-2 and the delete: 3, not n+3.
	if got := after.Entries - before.Entries; got > 4 {
		t.Errorf("the resumed watch read %d entries for 3 changes (the bucket holds %d keys): a full resync", got, n+2)
	}
	s := w.Snapshot()
	if s.Upstreams.Get("late-1") == nil || s.Upstreams.Get("late-2") == nil || s.Upstreams.Get("svc-0") != nil {
		t.Errorf("after resuming at %d (want >= %d): late-1 %v, late-2 %v, svc-0 (deleted) %v",
			s.Revision, rev, s.Upstreams.Get("late-1") != nil, s.Upstreams.Get("late-2") != nil, s.Upstreams.Get("svc-0") != nil)
	}
}
