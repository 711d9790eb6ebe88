// Package nodes is the policy service's view of the proxy nodes: it follows
// the node bucket (see [nodekv]), where each live node keeps its status, and
// answers which nodes serve a configuration revision. A node's certificates,
// kept under a key of their own, are merged into its status.
//
// A node is live while its key is younger than the bucket's TTL: the bucket
// drops the key after that (and writes a marker the watch sees), and the
// view also leaves out an entry older than the TTL, so that a node that died
// is gone from listings at the TTL even between the bucket's expiry passes.
package nodes

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	nodev1 "keyway.dev/gen/keyway/node/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/nodekv"
)

// View follows the node bucket. Safe for concurrent use.
type View struct {
	ttl time.Duration
	log *slog.Logger
	now func() time.Time

	kv      jetstream.KeyValue
	stop    context.CancelFunc
	stopped chan struct{}
	resume  chan struct{}

	mu      sync.Mutex
	nodes   map[string]node
	certs   map[string]*nodev1.NodeStatus // each node's certificates key
	changed chan struct{}                 // closed and replaced on every change
}

type node struct {
	status  *nodev1.NodeStatus
	written time.Time // the store's time of the entry
}

// Open opens (or creates, with MaxAge ttl and that many replicas) the node
// bucket, reads it, and follows it until [View.Close]. ctx bounds the
// opening only.
func Open(ctx context.Context, js jetstream.JetStream, bucket string, ttl time.Duration, replicas int, log *slog.Logger) (*View, error) {
	kv, err := nodekv.OpenReplicas(ctx, js, bucket, ttl, replicas)
	if err != nil {
		return nil, err
	}
	if ttl, err = nodekv.TTL(ctx, kv); err != nil {
		return nil, err
	}
	v := &View{kv: kv, ttl: ttl, log: log, now: time.Now, nodes: make(map[string]node), certs: make(map[string]*nodev1.NodeStatus), changed: make(chan struct{}), resume: make(chan struct{}, 1)}
	wctx, stop := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx)
	if err != nil {
		stop()
		return nil, fmt.Errorf("nodes: watching bucket %q: %w", kv.Bucket(), err)
	}
	v.stop, v.stopped = stop, make(chan struct{})
	ready := make(chan struct{})
	go v.watch(wctx, w, ready)
	select {
	case <-ready:
		return v, nil
	case <-ctx.Done():
		v.Close()
		return nil, fmt.Errorf("nodes: reading bucket %q: %w", kv.Bucket(), ctx.Err())
	}
}

// Close stops following the bucket.
func (v *View) Close() {
	v.stop()
	<-v.stopped
}

// TTL is how long a node stays listed after its last heartbeat.
func (v *View) TTL() time.Duration { return v.ttl }

// Resume reads the bucket again at once: the service calls it when its
// NATS connection comes back, rather than wait for the KV watcher to miss
// the restarted server's heartbeats.
func (v *View) Resume() {
	select {
	case v.resume <- struct{}{}:
	default:
	}
}

func (v *View) watch(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}) {
	defer close(v.stopped)
	defer func() { w.Stop() }()
	var once sync.Once
	// seen collects the keys of a re-read until its end marker: the nodes
	// not in it left while the watch was down.
	var seen map[string]bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.resume:
			nw, err := v.kv.WatchAll(ctx)
			if err != nil {
				v.log.Warn("cannot restart the node watch; the current one goes on", "error", err)
				continue
			}
			w.Stop()
			w, seen = nw, make(map[string]bool)
		case e, ok := <-w.Updates():
			if !ok {
				v.log.Error("node watch ended; node listings are no longer current")
				return
			}
			if e == nil {
				once.Do(func() { close(ready) })
				if seen != nil {
					v.forgetExcept(seen)
					seen = nil
				}
				continue
			}
			if seen != nil {
				seen[e.Key()] = true
			}
			v.observe(e)
		}
	}
}

// forgetExcept drops the nodes and certificates whose keys are not in keep.
func (v *View) forgetExcept(keep map[string]bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for id := range v.nodes {
		if !keep[nodekv.Key(id)] {
			delete(v.nodes, id)
		}
	}
	for id := range v.certs {
		if !keep[nodekv.CertsKey(id)] {
			delete(v.certs, id)
		}
	}
	close(v.changed)
	v.changed = make(chan struct{})
}

func (v *View) observe(e jetstream.KeyValueEntry) {
	id, ok := nodekv.ID(e.Key())
	certs := false
	if !ok {
		if id, certs = nodekv.CertsID(e.Key()); !certs {
			return
		}
	}
	var st *nodev1.NodeStatus
	if e.Operation() == jetstream.KeyValuePut {
		var err error
		if st, err = nodekv.Decode(e.Value()); err != nil {
			v.log.Warn("skipping an unreadable node status", "key", e.Key(), "error", err)
			return
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case certs && st == nil:
		delete(v.certs, id)
	case certs:
		v.certs[id] = st
	case st == nil:
		delete(v.nodes, id)
	default:
		v.nodes[id] = node{status: st, written: e.Created()}
	}
	close(v.changed)
	v.changed = make(chan struct{})
}

// Live returns the live nodes by id.
func (v *View) Live() []*nodev1.NodeStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.live()
}

func (v *View) live() []*nodev1.NodeStatus {
	cutoff := v.now().Add(-v.ttl)
	out := make([]*nodev1.NodeStatus, 0, len(v.nodes))
	for _, id := range slices.Sorted(maps.Keys(v.nodes)) {
		if n := v.nodes[id]; n.written.After(cutoff) {
			out = append(out, nodekv.Merge(n.status, v.certs[id]))
		}
	}
	return out
}

// Rollout says which live nodes serve revision rev (their revision is rev
// or later) and which do not yet. It reports no refusals: see [View.Check].
func (v *View) Rollout(rev uint64) *policyv1.Rollout {
	return v.Check(Change{Revision: rev})
}

// Change is what a rollout follows: a revision, and which configuration
// keys belong to it.
type Change struct {
	// Revision the nodes must reach.
	Revision uint64
	// Since is the first revision of the change (an apply's lowest); 0
	// means Revision.
	Since uint64
	// KeyRevision returns the revision a configuration key is stored at,
	// false when it is not stored. Nil: no refusals are reported.
	KeyRevision func(key string) (uint64, bool)
}

// Check says which live nodes serve c's revision, and which keys of the
// change (stored at a revision from Since to Revision) the nodes that
// reached it refused. Errors on older keys, and on secret references,
// belong to other changes and are not counted.
func (v *View) Check(c Change) *policyv1.Rollout {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rollout(c)
}

func (v *View) rollout(c Change) *policyv1.Rollout {
	rev := c.Revision
	since := cmp.Or(c.Since, rev)
	r := &policyv1.Rollout{Revision: rev}
	for _, st := range v.live() {
		if st.GetRevision() < rev {
			r.Pending = append(r.Pending, st)
			continue
		}
		r.Serving = append(r.Serving, st)
		if c.KeyRevision == nil {
			continue
		}
		for _, e := range st.GetErrors() {
			krev, ok := c.KeyRevision(e.GetKey())
			if !ok || krev < since || krev > rev {
				continue
			}
			r.Refusals = append(r.Refusals, &policyv1.Refusal{NodeId: st.GetId(), Key: e.GetKey(), Revision: krev, Message: e.GetMessage()})
		}
	}
	reached := len(r.Serving) > 0 && len(r.Pending) == 0
	r.Complete = reached && len(r.Refusals) == 0
	r.Failed = reached && len(r.Refusals) > 0
	return r
}

// recheck is how often a watch re-evaluates liveness when the bucket is
// quiet: a node that ages out between the bucket's expiry passes.
const recheck = time.Second

// Watch calls fn with the rollout of rev at once, then each time it
// changes (a node's status changed, a node came or went), until it is
// complete, fn returns false, or ctx ends. It returns the last rollout. It
// reports no refusals: see [View.Follow].
func (v *View) Watch(ctx context.Context, rev uint64, fn func(*policyv1.Rollout) bool) *policyv1.Rollout {
	return v.Follow(ctx, Change{Revision: rev}, fn)
}

// Follow calls fn with the rollout of c at once (see [View.Check]), then
// each time it changes, until it is complete or failed, fn returns false,
// or ctx ends. It returns the last rollout.
func (v *View) Follow(ctx context.Context, c Change, fn func(*policyv1.Rollout) bool) *policyv1.Rollout {
	t := time.NewTicker(cmp.Or(min(v.ttl/4, recheck), recheck))
	defer t.Stop()
	var last *policyv1.Rollout
	for {
		v.mu.Lock()
		r, ch := v.rollout(c), v.changed
		v.mu.Unlock()
		if last == nil || !sameRollout(last, r) {
			last = r
			if !fn(r) || r.Complete || r.Failed {
				return r
			}
		}
		select {
		case <-ctx.Done():
			return last
		case <-ch:
		case <-t.C:
		}
	}
}

// Wait returns once every live node serves rev, or when ctx ends, with the
// rollout as it then is.
func (v *View) Wait(ctx context.Context, rev uint64) *policyv1.Rollout {
	return v.Watch(ctx, rev, func(*policyv1.Rollout) bool { return true })
}

// WaitChange returns once the rollout of c is complete or failed, or when
// ctx ends, with the rollout as it then is.
func (v *View) WaitChange(ctx context.Context, c Change) *policyv1.Rollout {
	return v.Follow(ctx, c, func(*policyv1.Rollout) bool { return true })
}

// sameRollout says whether two rollouts list the same nodes at the same
// revisions with the same errors (heartbeats alone do not count).
func sameRollout(a, b *policyv1.Rollout) bool {
	key := func(sts []*nodev1.NodeStatus) []string {
		out := make([]string, len(sts))
		for i, s := range sts {
			out[i] = fmt.Sprintf("%s@%d/%d", s.GetId(), s.GetRevision(), len(s.GetErrors()))
		}
		return out
	}
	return a.GetComplete() == b.GetComplete() && a.GetFailed() == b.GetFailed() && len(a.GetRefusals()) == len(b.GetRefusals()) && slices.Equal(key(a.GetServing()), key(b.GetServing())) && slices.Equal(key(a.GetPending()), key(b.GetPending()))
}
