// Package watch is the first step of a proxy node's configuration pipeline
// (watch → translate → publish): it keeps the node in step with the store
// of record, the JetStream KV bucket keyway-config. A [Watcher] watches
// every key, resumes after the last revision applied when the watch breaks
// or NATS reconnects, decodes each value into its model and keeps the last
// good one per key (package translate's Store), then has package publish
// rebuild what the change invalidated and swap one immutable snapshot in.
//
// Listeners are kept per key like the other kinds and listed in every
// snapshot; [Options.Listeners], when set, is given them on each publish
// (the node's inbound servers) and reports the ones it cannot serve.
//
// A stored value the node cannot use (it does not decode, its Upstream
// cannot be built, or its Listener cannot be served) is refused: the key keeps its last good model, the
// node's revision still advances past it, and the refusal is listed in
// [publish.Snapshot.Skipped] until the key gets a good value or is deleted. A panic
// while decoding or building a value refuses it the same way ([publish.ErrPanic]):
// one stored value cannot crash the node.
//
// The entries of one JetStream atomic batch (an apply of several
// resources) are published as one snapshot: no snapshot holds part of an
// apply.
package watch

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/retry"
	"keyway.dev/internal/telemetry"
	"keyway.dev/proxy/internal/publish"
	"keyway.dev/proxy/internal/translate"
	"keyway.dev/proxy/internal/upstream"
)

// RetryCeiling bounds the growth of retry waits: at most this many times
// the first one.
const RetryCeiling = 30

// Decoder turns a stored resource into its validated model;
// [model.Decode] in production.
type Decoder func(*policyv1.Resource) (model.Object, error)

// Options configure a [Watcher].
type Options struct {
	// Upstream options for every Upstream built.
	Upstream upstream.Options
	// Decode defaults to model.Decode, sharing equal tls-outbound
	// contexts (model.WithOutboundCache). Tests set it to make a stored
	// value fail (or panic) in ways no real value does.
	Decode Decoder
	// Panicked, if set, is called with the stage ("decode", "upstream",
	// "router", "listener", ...) of every panic the watcher recovers while
	// handling a stored value; the node counts them in a metric. Called
	// from Run's goroutine only.
	Panicked func(stage string)
	// DrainTimeout bounds how long a replaced Upstream waits for its
	// requests before its idle connections close anyway. Default 5m.
	DrainTimeout time.Duration
	// RetryInterval is the first wait before a broken watch is
	// restarted; the next ones double up to RetryCeiling times it, each
	// jittered ±50% (package retry). Default 1s.
	RetryInterval time.Duration
	Logger        *slog.Logger
	// ApplyLatency, if set, is called for every change received after the
	// bucket's contents at the start of a watch, once the snapshot holding
	// it is published, with the time since the store created the entry
	// (jetstream.KeyValueEntry.Created; 0 when the clocks disagree). The
	// contents read at the start are not reported: they may be days old.
	ApplyLatency func(time.Duration)
	// Listeners, if set, is called on every publish, before the snapshot
	// is swapped in, with the snapshot's Listeners; it returns, by
	// Listener name, those it could not serve, which are then reported as
	// refused values of their keys. inbound.Manager.Apply in production.
	// Called from Run's goroutine only.
	Listeners func([]*model.Listener) map[string]error
	// Secrets resolves references to the secrets service in bindings and
	// Listener hosts; nil refuses every value that has one. Report its
	// changes with [Watcher.SecretsChanged].
	Secrets publish.Resolver
	// Tracing, when on, records each batch of changes applied after the
	// initial load as a [telemetry.SpanNodeApply] span, child of the
	// trace context the writer put in the first change's message headers
	// (read with Headers), linked to the others'.
	Tracing telemetry.Tracing
	// Headers reads the headers of the bucket's message at a revision:
	// jetstream.KeyValueEntry does not carry them. Only called when
	// tracing is on; nil: changes are traced without a parent.
	Headers func(ctx context.Context, rev uint64) (nats.Header, error)
}

// Watcher follows the bucket. Snapshot, Ready, Revision and WaitRevision are
// safe for concurrent use; Run is called once, then Drain.
type Watcher struct {
	kv   jetstream.KeyValue // set by Run
	js   jetstream.JetStream
	opts Options
	log  *slog.Logger
	pub  *publish.Publisher

	// resume asks Run's goroutine to restart the watch now (see Resume).
	resume chan struct{}

	mu sync.Mutex
	// secretKeys are the secrets reported changed and not yet handled;
	// secretKick wakes Run's goroutine for them.
	secretKeys map[string]bool
	secretKick chan struct{}

	// Owned by Run's goroutine.
	revision uint64
	// store holds the last good model of every key, and the dependency
	// indexes.
	store *translate.Store
	// skipped are the values refused while decoding, by key.
	skipped map[string]*publish.SkippedError
	// dirty is what changed since the last publish. It outlives a watch
	// session: a session that breaks before publishing leaves its changes
	// for the next one.
	dirty *translate.Dirty
	// created are the store's creation times of the changes applied since
	// the last publish, for Options.ApplyLatency.
	created []time.Time
	// loaded is set once a session has read the bucket's contents: later
	// sessions resume after w.revision instead of reading everything again.
	loaded bool
	// openBatch is the JetStream atomic batch whose entries are applied
	// but whose commit marker has not been read yet: nothing is published
	// until it has, so no snapshot holds part of an apply. It outlives a
	// session that breaks in the middle of a batch.
	openBatch string
	stats     stats
	// breakBefore, set by tests only, ends the session as if the watch
	// broke just before e (nil: the initial-values marker) is handled.
	breakBefore func(e jetstream.KeyValueEntry) bool
}

// stats count work done in this package, for [Watcher.Stats]; package
// publish counts the rest.
type stats struct {
	sessions, entries atomic.Uint64
}

// Stats counts the work a [Watcher] has done since it was created.
type Stats struct {
	// Sessions is the number of watches started (1 plus restarts).
	Sessions uint64 `json:"sessions"`
	// Entries is the number of bucket entries read, over all sessions.
	Entries uint64 `json:"entries"`
	// UpstreamBuilds is the number of Upstreams built.
	UpstreamBuilds uint64 `json:"upstreamBuilds"`
	// RouterBuilds is the number of routing tables built.
	RouterBuilds uint64 `json:"routerBuilds"`
	// Publishes is the number of snapshots published.
	Publishes uint64 `json:"publishes"`
	// Panics is the number of panics recovered while decoding or building
	// a stored value (each value is then refused).
	Panics uint64 `json:"panics"`
}

// Stats returns the counters; safe for concurrent use.
func (w *Watcher) Stats() Stats {
	p := w.pub.Stats()
	return Stats{
		Sessions: w.stats.sessions.Load(), Entries: w.stats.entries.Load(),
		UpstreamBuilds: p.UpstreamBuilds, RouterBuilds: p.RouterBuilds,
		Publishes: p.Publishes, Panics: p.Panics,
	}
}

// Changed returns a channel closed at the next publish of a snapshot; call
// it again for the one after. Safe for concurrent use.
func (w *Watcher) Changed() <-chan struct{} { return w.pub.Changed() }

// New returns a watcher, serving an empty, not ready snapshot until Run
// has read the bucket.
func New(opts Options) *Watcher {
	if opts.Decode == nil {
		// Bindings with equal tls-outbound configs share one parsed
		// context: 10,000 Services bound to one CA and client
		// certificate parse it once.
		cache := model.NewOutboundCache()
		opts.Decode = func(res *policyv1.Resource) (model.Object, error) {
			return model.Decode(res, model.WithOutboundCache(cache))
		}
	}
	opts.RetryInterval = cmp.Or(opts.RetryInterval, time.Second)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{
		opts: opts, log: opts.Logger,
		pub: publish.New(publish.Options{
			Upstream: opts.Upstream, Panicked: opts.Panicked, DrainTimeout: opts.DrainTimeout,
			Logger: opts.Logger, Listeners: opts.Listeners, Secrets: opts.Secrets,
		}),
		resume:  make(chan struct{}, 1),
		store:   translate.NewStore(),
		skipped: make(map[string]*publish.SkippedError),
		dirty:   translate.NewDirty(),

		secretKeys: make(map[string]bool),
		secretKick: make(chan struct{}, 1),
	}
}

// UseSecrets sets the resolver of references (Options.Secrets) on a
// watcher built without one. Call it before Run.
func (w *Watcher) UseSecrets(r publish.Resolver) { w.pub.UseSecrets(r) }

// Snapshot returns the current snapshot: one atomic load, never nil.
func (w *Watcher) Snapshot() *publish.Snapshot { return w.pub.Snapshot() }

// Ready is closed once the bucket's contents at start are applied.
func (w *Watcher) Ready() <-chan struct{} { return w.pub.Ready() }

// Revision is the revision of the current snapshot.
func (w *Watcher) Revision() uint64 { return w.Snapshot().Revision }

// WaitRevision returns once the node is ready and has applied revision rev
// or a later one, or when ctx ends.
//
// Applied is not the same as served: when a value the node refused at rev
// or earlier is still in [publish.Snapshot.Skipped] (no later good value or delete
// of its key has superseded it), WaitRevision returns those refusals, each a
// [*publish.SkippedError] (joined when there are several; errors.As finds the
// first). The node then serves revision rev except for those keys, which
// keep their last good value.
func (w *Watcher) WaitRevision(ctx context.Context, rev uint64) error {
	return w.pub.WaitRevision(ctx, rev)
}

// Run watches kv, through js, until ctx ends, restarting the watch when it
// breaks (the node keeps serving its last snapshot meanwhile). Upstreams it
// replaces are drained in the background, each for at most
// Options.DrainTimeout; Run does not wait for them: call [Watcher.Drain]
// once Run has returned. Call Run once.
//
// The watch reads the bucket's stream with the ordered consumer
// kv.WatchAll would create (the same NATS permissions), keeping the
// messages' headers: the entries of one JetStream atomic batch (one apply
// of several resources) are published as one snapshot, once the batch's
// commit marker is read.
func (w *Watcher) Run(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) error {
	w.js, w.kv = js, kv
	ceiling := RetryCeiling * w.opts.RetryInterval
	b := retry.New(w.opts.RetryInterval, ceiling)
	for {
		started := time.Now()
		err := w.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errResume) {
			continue
		}
		if time.Since(started) > ceiling {
			// The watch had been working: retry soon.
			b.Reset()
		}
		d := b.Next()
		w.log.Warn("config watch broke; serving the last good configuration and retrying", "revision", w.revision, "error", err, "retry_in", d)
		if !retry.Sleep(ctx, d) {
			return nil
		}
	}
}

// errResume ends a session that [Watcher.Resume] interrupted.
var errResume = errors.New("config: watch restarted on request")

// Resume restarts the watch at once, after the last revision applied. The
// node calls it when its NATS connection comes back: the KV watcher would
// notice the server's restart only after missing heartbeats (seconds), and a
// resumed watch reads only what changed meanwhile. Safe for concurrent use;
// calls while one is pending coalesce.
func (w *Watcher) Resume() {
	select {
	case w.resume <- struct{}{}:
	default:
	}
}

// Drain drains every Upstream: those replaced and still draining, and those
// of the current snapshot, whose idle connections it closes. Call it once
// Run has returned and nothing forwards requests any more. When ctx ends,
// the drains still waiting for requests stop waiting (their idle
// connections are closed all the same, and each logs what it left).
func (w *Watcher) Drain(ctx context.Context) { w.pub.Drain(ctx) }

// publish has the changes applied since the last publish built and swapped
// in, and returns the Services whose Upstream was built.
func (w *Watcher) publish(ready bool) []string {
	d := w.dirty
	w.dirty = translate.NewDirty()
	return w.pub.Publish(w.store, publish.Change{
		Revision: w.revision, Ready: ready, Dirty: d,
		Refused: slices.Collect(maps.Values(w.skipped)),
		Swapped: w.reportLatency,
	})
}

// reportLatency gives Options.ApplyLatency the changes just published.
func (w *Watcher) reportLatency() {
	if len(w.created) > 0 {
		now := time.Now()
		for _, c := range w.created {
			w.opts.ApplyLatency(max(0, now.Sub(c)))
		}
		w.created = w.created[:0]
	}
}

// session is one watch. The first reads the current value of every key, a
// nil marker, then changes. A session after one that read the bucket
// resumes: it reads every entry after w.revision (puts and delete markers,
// in order) instead of the whole bucket, so a node that lost NATS for a
// while catches up with what changed, not with everything. Changes applied
// but not yet published stay in w.dirty when the session breaks.
//
// (The KV watcher itself survives a NATS reconnect: it is an ordered
// consumer that restarts after the last sequence it delivered. A session
// ends only when that fails, e.g. the bucket was recreated.)
// maxSizeHint bounds the size hint taken from the server's count of values
// pending: a larger bucket is read all the same, its maps growing past it.
const maxSizeHint = 1 << 16

func (w *Watcher) session(ctx context.Context) error {
	w.stats.sessions.Add(1)
	resume := w.loaded && w.revision > 0
	var from uint64
	if resume {
		from = w.revision + 1
	} else {
		w.openBatch = "" // what a batch left open is read again
	}
	kw, err := watchBucket(ctx, w.js, w.kv, from)
	if err != nil {
		return err
	}
	defer func() { _ = kw.Stop() }() // the watch is abandoned; its error says it is gone already
	if resume {
		w.log.Info("config watch resumed", "after_revision", w.revision)
	}
	updates := kw.Updates()
	seen := make(map[string]bool)
	// A resumed session has no initial values: what it reads are changes.
	initial := !resume
	// next returns the next update, waiting for one if wait is set; ok is
	// false when there is none queued (wait unset), err when the session
	// is over.
	next := func(wait bool) (e jetstream.KeyValueEntry, ok bool, err error) {
		if wait {
		waiting:
			for {
				select {
				case <-ctx.Done():
					return nil, false, ctx.Err()
				case <-w.resume:
					return nil, false, errResume
				case <-w.secretKick:
					// Before the initial marker, the marks wait for its
					// publish; inside a batch, for the batch's.
					if w.markSecretUsers() && !initial && w.openBatch == "" {
						w.publish(true)
					}
				case e, ok = <-updates:
					break waiting
				}
			}
		} else {
			select {
			case e, ok = <-updates:
			default:
				return nil, false, nil
			}
		}
		if !ok {
			return nil, false, errors.New("config: watch closed")
		}
		if w.breakBefore != nil && w.breakBefore(e) {
			return nil, false, errors.New("config: watch broken by a test")
		}
		return e, true, nil
	}
	for {
		e, _, err := next(true)
		if err != nil {
			return err
		}
		if e == nil {
			if initial {
				initial = false
				for key := range w.store.Keys() {
					if !seen[key] {
						w.remove(key)
					}
				}
				for key := range w.skipped {
					if !seen[key] {
						delete(w.skipped, key) // deleted while the watch was down
					}
				}
				seen = nil
				w.loaded = true
				if w.openBatch != "" {
					// The newest value read belongs to a batch still
					// being stored: the first publish waits for the rest.
					w.log.Info("configuration read in the middle of an apply; waiting for the rest of it", "batch", w.openBatch, "revision", w.revision)
					continue
				}
				w.publish(true)
			}
			continue
		}
		if initial {
			if len(seen) == 0 {
				// The first value says how many follow: sized for them, the
				// maps are not grown and rehashed ten times over while a
				// large bucket is read.
				hint := int(min(e.Delta(), maxSizeHint)) + 1
				seen = make(map[string]bool, hint)
				w.store.Reserve(hint)
			}
			seen[e.Key()] = true
			w.apply(e)
			// Only the newest value read tells whether a batch is
			// still being stored: an older one without its commit marker
			// lost that key to a later write.
			w.openBatch = ""
			if id, commit := batchOf(e); id != "" && !commit {
				w.openBatch = id
			}
			continue
		}
		b := w.startBatch(ctx, e)
		w.take(e)
		b.add(ctx, e)
		// Apply what else is already queued, and the rest of an atomic
		// batch, waiting for it, before rebuilding once.
		for {
			e, ok, err := next(w.openBatch != "")
			if err != nil {
				if w.openBatch == "" {
					b.end(w.publish(true))
				} else {
					b.end(nil) // the next session finishes the batch
				}
				return err
			}
			if !ok || e == nil {
				break
			}
			w.take(e)
			b.add(ctx, e)
		}
		b.end(w.publish(true))
	}
}

// take applies a change read after the initial values and follows the
// atomic batch it belongs to.
func (w *Watcher) take(e jetstream.KeyValueEntry) {
	w.apply(e)
	w.noteCreated(e)
	id, commit := batchOf(e)
	if w.openBatch != "" && id != w.openBatch {
		// The server stores a batch whole or not at all and in one run of
		// revisions; a batch left without its commit marker is a stored
		// prefix of one that failed. What is stored is served.
		w.log.Warn("an atomic batch ended without its commit marker; serving what it stored", "batch", w.openBatch, "revision", e.Revision())
		w.openBatch = ""
	}
	switch {
	case id != "" && !commit:
		w.openBatch = id
	case id != "" && commit:
		w.openBatch = ""
	}
}

func (w *Watcher) noteCreated(e jetstream.KeyValueEntry) {
	if w.opts.ApplyLatency != nil {
		w.created = append(w.created, e.Created())
	}
}

// apply records one entry. A value that does not decode is logged and
// refused: the key keeps its last good model, and the refusal is kept in
// w.skipped until the key gets a good value or is deleted.
func (w *Watcher) apply(e jetstream.KeyValueEntry) {
	w.stats.entries.Add(1)
	key, rev := e.Key(), e.Revision()
	if rev <= w.revision && w.loaded {
		// Already applied: a resumed watch may deliver it again.
		return
	}
	// The node has seen rev even if it refuses it: the refusal is
	// reported in the snapshot, not by holding the revision back.
	w.revision = max(w.revision, rev)
	if e.Operation() != jetstream.KeyValuePut {
		w.remove(key)
		return
	}
	obj, msg, err := w.decode(key, e.Value(), rev)
	if err != nil {
		w.log.Error(msg, "key", key, "revision", rev, "error", err)
		w.skipped[key] = &publish.SkippedError{Key: key, Revision: rev, Err: err, Time: time.Now()}
		return
	}
	delete(w.skipped, key)
	w.store.Put(key, obj, rev, w.dirty)
}

// decode turns the value of key into its model, recovering a panic in any
// step as an error wrapping [publish.ErrPanic]; msg says what is done with a value
// refused.
func (w *Watcher) decode(key string, value []byte, rev uint64) (obj model.Object, msg string, err error) {
	defer func() {
		if r := recover(); r != nil {
			obj, msg, err = model.Object{}, "ignoring a value whose decoding panicked; keeping the last good one", w.pub.Recovered("decode", key, rev, r)
		}
	}()
	return decodeValue(key, value, rev, w.opts.Decode)
}

func (w *Watcher) remove(key string) {
	delete(w.skipped, key)
	w.store.Delete(key, w.dirty)
}

// SecretsChanged tells the watcher that the material behind these secret
// keys (secrets.AliasKey, secrets.TruststoreKey) was replaced: the Upstreams
// and Listeners that use them are rebuilt, and nothing else. Safe for
// concurrent use; it does not wait for the rebuild.
func (w *Watcher) SecretsChanged(keys []string) {
	w.mu.Lock()
	for _, k := range keys {
		w.secretKeys[k] = true
	}
	w.mu.Unlock()
	select {
	case w.secretKick <- struct{}{}:
	default:
	}
}

// markSecretUsers marks dirty what depends on the secrets reported changed,
// by the dependency index, and reports whether anything was.
func (w *Watcher) markSecretUsers() bool {
	w.mu.Lock()
	keys := w.secretKeys
	w.secretKeys = make(map[string]bool)
	w.mu.Unlock()
	marked := false
	for key := range keys {
		for user := range w.store.Users(key) {
			if o, ok := w.store.Get(user); ok {
				w.dirty.Touch(o.Obj)
				marked = true
				w.log.Info("rebuilding for new secret material", "secret", key, "key", user)
			}
		}
	}
	return marked
}
