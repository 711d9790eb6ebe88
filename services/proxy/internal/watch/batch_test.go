package watch

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
)

var batchIDs atomic.Uint64

// publishBatch writes resources as one JetStream atomic batch, as the
// policy service does an apply (the wire protocol: Nats-Batch-Id and
// Nats-Batch-Sequence on every message, Nats-Batch-Commit on the last), and
// returns the revision of the last.
func publishBatch(t *testing.T, kv jetstream.KeyValue, resources ...*policyv1.Resource) uint64 {
	t.Helper()
	nc := kvJS(kv).Conn()
	id := fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), batchIDs.Add(1))
	for i, r := range resources {
		value, err := configkv.Encode(r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg("$KV." + kv.Bucket() + "." + configkv.Key(configkv.RefOf(r)))
		m.Data = value
		m.Header.Set(headerBatchID, id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		last := i == len(resources)-1
		if last {
			m.Header.Set(headerBatchCommit, "1")
		}
		if !last && i > 0 {
			if err := nc.PublishMsg(m); err != nil {
				t.Fatal(err)
			}
			continue
		}
		resp, err := nc.RequestMsg(m, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var ack struct {
			Seq   uint64 `json:"seq"`
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if len(resp.Data) > 0 {
			if err := json.Unmarshal(resp.Data, &ack); err != nil {
				t.Fatal(err)
			}
		}
		if ack.Error != nil {
			t.Fatalf("batch message %d: %s", i+1, ack.Error.Description)
		}
		if last {
			return ack.Seq
		}
	}
	return 0
}

// observer reads every snapshot the watcher publishes, as a request would,
// and records any that holds a route whose Service has no Upstream.
type observer struct {
	mu     sync.Mutex
	broken []string
	stop   chan struct{}
	done   chan struct{}
}

func observe(w *Watcher) *observer {
	o := &observer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for {
			ch := w.Changed()
			s := w.Snapshot()
			for _, r := range s.Router.Routes() {
				if s.Upstreams.Get(r.Service) == nil {
					o.mu.Lock()
					o.broken = append(o.broken, fmt.Sprintf("revision %d serves route %s without its service %s", s.Revision, r.Name, r.Service))
					o.mu.Unlock()
				}
			}
			select {
			case <-ch:
			case <-o.stop:
				return
			}
		}
	}()
	return o
}

func (o *observer) finish() []string {
	close(o.stop)
	<-o.done
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.broken
}

// An apply of a Route, its Service and a binding is one change for a node:
// one snapshot published, in which all three are; no reader ever sees the
// Route without its Service. Even when the watch breaks in the middle of
// the batch: the resumed watch publishes it once it has the rest.
func TestAtomicApplyIsOneChange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// breakAt is the key before whose entry the watch breaks once.
		breakAt string
	}{
		{name: "straight"},
		{name: "watch broken mid-batch", breakAt: "service.orders"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kv := startBucket(t)
			put(t, kv, service("other"))
			w := New(Options{RetryInterval: time.Millisecond})
			var broke atomic.Bool
			if tc.breakAt != "" {
				w.breakBefore = func(e jetstream.KeyValueEntry) bool {
					return e != nil && e.Key() == tc.breakAt && !broke.Swap(true)
				}
			}
			run(t, w, kv)
			if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
				t.Fatal(err)
			}
			o := observe(w)
			before := w.Stats().Publishes

			// The Route first: a node that published part of the batch
			// would route to a Service it does not have.
			rev := publishBatch(t, kv, route("orders", "orders"), service("orders"), insecureBinding(t, "orders", "orders"))
			if err := waitRevision(t, w, rev); err != nil {
				t.Fatal(err)
			}
			if broken := o.finish(); len(broken) > 0 {
				t.Errorf("a reader saw part of the apply: %v", broken)
			}
			if tc.breakAt != "" && !broke.Load() {
				t.Fatal("the watch did not break mid-batch")
			}
			if got := w.Stats().Publishes - before; got != 1 {
				t.Errorf("the apply was published in %d snapshots, want 1", got)
			}
			s := w.Snapshot()
			if s.Upstreams.Get("orders") == nil || len(s.Router.Routes()) != 1 || len(s.Skipped) != 0 {
				t.Errorf("after the apply: upstream %v, routes %v, skipped %v", s.Upstreams.Get("orders") != nil, s.Router.Routes(), s.Skipped)
			}
		})
	}
}
