// Package config keeps a proxy node's configuration in step with the store of
// record, the JetStream KV bucket: it watches every key, keeps the last good
// model of each, and on each change rebuilds only what depends on it (a
// binding or Service change: that Service's Upstream; a route change: the
// routing table), then publishes one immutable [Snapshot] behind an
// atomic.Pointer. Upstreams that are replaced are drained in the background.
//
// Listeners are kept per key like the other kinds and listed in every
// snapshot; [Options.Listeners], when set, is given them on each publish
// (the node's inbound servers) and reports the ones it cannot serve.
//
// A stored value the node cannot use (it does not decode, its Upstream
// cannot be built, or its Listener cannot be served) is refused: the key keeps its last good model, the
// node's revision still advances past it, and the refusal is listed in
// [Snapshot.Skipped] until the key gets a good value or is deleted. A panic
// while decoding or building a value refuses it the same way ([ErrPanic]):
// one stored value cannot crash the node.
//
// The entries of one JetStream atomic batch (an apply of several
// resources) are published as one snapshot: no snapshot holds part of an
// apply.
package config

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/limits"
	"keyway.dev/internal/material"
	"keyway.dev/internal/model"
	"keyway.dev/internal/retry"
	"keyway.dev/internal/telemetry"
	"keyway.dev/proxy/internal/router"
	"keyway.dev/proxy/internal/upstream"
)

// Snapshot is the configuration a node serves at one revision. Immutable:
// nothing in it is modified after it is published.
type Snapshot struct {
	// Revision is the store revision of the last change applied.
	Revision uint64
	// Ready is set once the bucket's contents at start were all read.
	Ready  bool
	Router *router.Table
	// Upstreams by Service name.
	Upstreams *Upstreams
	// UpstreamNames are the keys of Upstreams in order, sorted again only
	// when an Upstream comes or goes (not when one is rebuilt).
	UpstreamNames []string
	// RouteErrors are the routes left out of the table (conflicts).
	RouteErrors []error
	// Listeners are every stored Listener, by name, including those
	// Options.Listeners could not serve (those are in Skipped too).
	Listeners []*model.Listener
	// Skipped are the stored values refused and not yet superseded, by
	// key then revision.
	Skipped []*SkippedError

	// routed is each route's Upstream, by [router.Target.Index] (nil for
	// a route to a Service that has none): resolved when the snapshot is
	// built, so that a request does not look its Upstream up by name.
	routed []*upstream.Upstream
}

// Upstream is the Upstream of a route of s.Router, nil when its Service
// has none. One slice index: the request path calls it.
func (s *Snapshot) Upstream(t *router.Target) *upstream.Upstream {
	if i := t.Index(); i < len(s.routed) {
		return s.routed[i]
	}
	return nil
}

// route resolves the Upstream of every route of s.Router: all of them
// when the table is not prev's, else those to the Services in changed,
// the others' being prev's.
func (s *Snapshot) route(prev *Snapshot, changed map[string]bool) {
	if s.Router != prev.Router || len(prev.routed) != s.Router.Len() {
		s.routed = make([]*upstream.Upstream, s.Router.Len())
		for i := range s.routed {
			s.routed[i] = s.Upstreams.Get(s.Router.ServiceAt(i))
		}
		return
	}
	s.routed = prev.routed
	copied := false
	for name := range changed {
		for _, i := range s.Router.RoutesTo(name) {
			if !copied {
				// One copy of a slice of pointers: 80 KB at 10,000 routes.
				s.routed, copied = slices.Clone(prev.routed), true
			}
			s.routed[i] = s.Upstreams.Get(name)
		}
	}
}

// SkippedError is a stored value the node refused: it does not decode, the
// Upstream it leads to cannot be built, or its Listener cannot be served. The node keeps serving the
// last good value of Key (if it had one).
type SkippedError struct {
	// Key is the bucket key, e.g. "policybinding.orders-mtls".
	Key string
	// Revision is the store revision of the refused value.
	Revision uint64
	Err      error
	// Time is when the node refused it.
	Time time.Time
}

func (e *SkippedError) Error() string {
	return fmt.Sprintf("config: refused %s at revision %d: %v", e.Key, e.Revision, e.Err)
}

func (e *SkippedError) Unwrap() error { return e.Err }

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
	// Decode defaults to model.Decode. Tests set it to make a stored
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
	Secrets Resolver
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

// Resolver hands over the material behind references: the secrets package's
// Source in production, which caches by version. Safe for concurrent use.
type Resolver interface {
	Alias(ctx context.Context, ref model.SecretRef) (*material.Alias, error)
	Truststore(ctx context.Context, name string) (*material.Truststore, error)
}

// errNoSecrets refuses a reference on a node started without the secrets
// service.
var errNoSecrets = errors.New("config: the value references the secrets service, and this node has no secrets service configured (--secrets-internal-url, --secrets-cert, --secrets-key, --secrets-ca)")

// Watcher follows the bucket. Snapshot, Ready, Revision and WaitRevision are
// safe for concurrent use; Run is called once, then Drain.
type Watcher struct {
	kv   jetstream.KeyValue // set by Run
	js   jetstream.JetStream
	opts Options
	log  *slog.Logger

	current atomic.Pointer[Snapshot]
	ready   chan struct{}
	// resume asks Run's goroutine to restart the watch now (see Resume).
	resume chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every publish
	// secretKeys are the secrets reported changed and not yet handled;
	// secretKick wakes Run's goroutine for them.
	secretKeys map[string]bool
	secretKick chan struct{}

	// Owned by Run's goroutine.
	revision uint64
	objects  map[string]stored // by bucket key: the last good model
	inputs   map[string]upstreamInput
	// skipped are the refused values by key; buildErrs, by Service name,
	// the values an Upstream could not be built from.
	skipped   map[string]*SkippedError
	buildErrs map[string][]*SkippedError
	// listenerErrs are the Listeners Options.Listeners last refused;
	// inboundErrs, the tls-inbound bindings left out of their Listener.
	listenerErrs []*SkippedError
	// users is the dependency index of references: secret bucket key
	// (secrets.AliasKey, secrets.TruststoreKey form) → config bucket keys
	// whose value names it.
	users map[string]map[string]bool
	// resolved are the Listeners as last served, with their references
	// resolved, by name; secretErrs the Listeners whose references could
	// not be resolved.
	resolved    map[string]resolvedListener
	secretErrs  []*SkippedError
	inboundErrs []*SkippedError
	// routePanics are the routes left out of the table because building
	// them panicked; listenerPanics, the Listeners kept as they were
	// because resolving them panicked.
	routePanics, listenerPanics []*SkippedError
	// dirty is what changed since the last publish. It outlives a watch
	// session: a session that breaks before publishing leaves its changes
	// for the next one.
	dirty *dirty
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
	// byTarget indexes tls-outbound bindings by the Service they target
	// (bucket keys), so a change costs the same with 10 or 10,000 Services.
	byTarget map[string]map[string]bool
	stats    stats
	// breakBefore, set by tests only, ends the session as if the watch
	// broke just before e (nil: the initial-values marker) is handled.
	breakBefore func(e jetstream.KeyValueEntry) bool

	// drainCtx is the parent of every drain; Drain cancels it when its
	// ctx ends.
	drainCtx    context.Context
	drainCancel context.CancelFunc
	drains      sync.WaitGroup
}

// stats count work done, for [Watcher.Stats].
type stats struct {
	sessions, entries, upstreamBuilds, routerBuilds, publishes, panics atomic.Uint64
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
	return Stats{
		Sessions: w.stats.sessions.Load(), Entries: w.stats.entries.Load(),
		UpstreamBuilds: w.stats.upstreamBuilds.Load(), RouterBuilds: w.stats.routerBuilds.Load(),
		Publishes: w.stats.publishes.Load(), Panics: w.stats.panics.Load(),
	}
}

// Changed returns a channel closed at the next publish of a snapshot; call
// it again for the one after. Safe for concurrent use.
func (w *Watcher) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// stored is a key's last good model and the revision it was read at.
type stored struct {
	obj model.Object
	rev uint64
}

// upstreamInput is what an Upstream was built from, to tell whether a
// change needs a new one.
type upstreamInput struct {
	svc *model.Service
	tls *model.OutboundTLS
}

// New returns a watcher, serving an empty, not ready snapshot until Run
// has read the bucket.
func New(opts Options) *Watcher {
	if opts.Decode == nil {
		opts.Decode = func(res *policyv1.Resource) (model.Object, error) { return model.Decode(res) }
	}
	opts.DrainTimeout = cmp.Or(opts.DrainTimeout, 5*time.Minute)
	opts.RetryInterval = cmp.Or(opts.RetryInterval, time.Second)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{
		opts: opts, log: opts.Logger,
		ready:     make(chan struct{}),
		resume:    make(chan struct{}, 1),
		changed:   make(chan struct{}),
		objects:   make(map[string]stored),
		inputs:    make(map[string]upstreamInput),
		skipped:   make(map[string]*SkippedError),
		buildErrs: make(map[string][]*SkippedError),
		byTarget:  make(map[string]map[string]bool),
		dirty:     newDirty(),

		secretKeys: make(map[string]bool),
		secretKick: make(chan struct{}, 1),
		users:      make(map[string]map[string]bool),
		resolved:   make(map[string]resolvedListener),
	}
	w.drainCtx, w.drainCancel = context.WithCancel(context.Background())
	empty, _ := router.Build(nil)
	w.current.Store(&Snapshot{Router: empty, Upstreams: &Upstreams{}})
	return w
}

// Snapshot returns the current snapshot: one atomic load, never nil.
func (w *Watcher) Snapshot() *Snapshot { return w.current.Load() }

// Ready is closed once the bucket's contents at start are applied.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Revision is the revision of the current snapshot.
func (w *Watcher) Revision() uint64 { return w.Snapshot().Revision }

// WaitRevision returns once the node is ready and has applied revision rev
// or a later one, or when ctx ends.
//
// Applied is not the same as served: when a value the node refused at rev
// or earlier is still in [Snapshot.Skipped] (no later good value or delete
// of its key has superseded it), WaitRevision returns those refusals, each a
// [*SkippedError] (joined when there are several; errors.As finds the
// first). The node then serves revision rev except for those keys, which
// keep their last good value.
func (w *Watcher) WaitRevision(ctx context.Context, rev uint64) error {
	for {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		if s := w.Snapshot(); s.Ready && s.Revision >= rev {
			var errs []error
			for _, sk := range s.Skipped {
				if sk.Revision <= rev {
					errs = append(errs, sk)
				}
			}
			if len(errs) == 1 {
				return errs[0]
			}
			return errors.Join(errs...)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("config: waiting for revision %d (at %d): %w", rev, w.Revision(), ctx.Err())
		}
	}
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
func (w *Watcher) Drain(ctx context.Context) {
	stop := context.AfterFunc(ctx, w.drainCancel)
	defer stop()
	for _, u := range w.Snapshot().Upstreams.All() {
		w.drain(u)
	}
	w.drains.Wait()
	w.drainCancel()
}

// drain drains u in the background, for at most DrainTimeout or until
// [Watcher.Drain] gives up.
func (w *Watcher) drain(u *upstream.Upstream) {
	w.drains.Go(func() {
		// Not Run's ctx: draining finishes requests even while the node
		// stops; Drain bounds it.
		dctx, cancel := context.WithTimeout(w.drainCtx, w.opts.DrainTimeout)
		defer cancel()
		if err := u.Drain(dctx); err != nil {
			w.log.Warn("upstream drain cut short", "upstream", u.Name(), "fingerprint", u.Fingerprint(), "error", err)
		}
	})
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
				for key := range w.objects {
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

// dirty is what a batch of changes invalidated.
type dirty struct {
	services  map[string]bool
	routes    bool
	listeners bool
}

func newDirty() *dirty { return &dirty{services: make(map[string]bool)} }

func (d *dirty) touch(obj model.Object) {
	switch {
	case obj.Service != nil:
		d.services[obj.Service.Name] = true
	case obj.Route != nil:
		d.routes = true
	case obj.Listener != nil:
		d.listeners = true
	case obj.Binding != nil && obj.Binding.Target.Kind == model.KindService:
		d.services[obj.Binding.Target.Name] = true
	case obj.Binding != nil && obj.Binding.Target.Kind == model.KindListener:
		d.listeners = true
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
		w.skipped[key] = &SkippedError{Key: key, Revision: rev, Err: err, Time: time.Now()}
		return
	}
	delete(w.skipped, key)
	if old, ok := w.objects[key]; ok {
		w.dirty.touch(old.obj) // a binding may have changed its target
		w.index(key, old.obj, false)
		w.unindexBinding(key, old.obj)
	}
	w.objects[key] = stored{obj: obj, rev: rev}
	w.index(key, obj, true)
	w.indexBinding(key, obj)
	w.dirty.touch(obj)
}

// decode turns the value of key into its model, recovering a panic in any
// step as an error wrapping [ErrPanic]; msg says what is done with a value
// refused.
func (w *Watcher) decode(key string, value []byte, rev uint64) (obj model.Object, msg string, err error) {
	defer func() {
		if r := recover(); r != nil {
			obj, msg, err = model.Object{}, "ignoring a value whose decoding panicked; keeping the last good one", w.recovered("decode", key, rev, r)
		}
	}()
	return decodeValue(key, value, rev, w.opts.Decode)
}

// decodeValue is the decoding of a stored value, in the steps a refusal
// names.
func decodeValue(key string, value []byte, rev uint64, decode Decoder) (model.Object, string, error) {
	ref, err := configkv.ParseKey(key)
	if err != nil {
		return model.Object{}, "ignoring a key that is not a resource", err
	}
	res, err := configkv.Decode(value, rev)
	if err != nil {
		return model.Object{}, "ignoring an unreadable value; keeping the last good one", err
	}
	obj, err := decode(res)
	if err != nil {
		return model.Object{}, "ignoring an invalid resource; keeping the last good one", err
	}
	if got := obj.Ref(); got != ref {
		return model.Object{}, "ignoring a resource stored under another resource's key", fmt.Errorf("config: key %s holds %s", limits.Quote(key), got)
	}
	return obj, "", nil
}

func (w *Watcher) remove(key string) {
	delete(w.skipped, key)
	if old, ok := w.objects[key]; ok {
		delete(w.objects, key)
		w.index(key, old.obj, false)
		w.unindexBinding(key, old.obj)
		w.dirty.touch(old.obj)
	}
}

// indexBinding records a binding under the Service it targets.
func (w *Watcher) indexBinding(key string, obj model.Object) {
	b := obj.Binding
	if b == nil || b.Target.Kind != model.KindService {
		return
	}
	m := w.byTarget[b.Target.Name]
	if m == nil {
		m = make(map[string]bool)
		w.byTarget[b.Target.Name] = m
	}
	m[key] = true
}

func (w *Watcher) unindexBinding(key string, obj model.Object) {
	b := obj.Binding
	if b == nil || b.Target.Kind != model.KindService {
		return
	}
	if m := w.byTarget[b.Target.Name]; m != nil {
		delete(m, key)
		if len(m) == 0 {
			delete(w.byTarget, b.Target.Name)
		}
	}
}

// publish rebuilds what w.dirty says and swaps the new snapshot in, then
// drains the Upstreams it replaced. It returns the Services whose Upstream
// it built.
func (w *Watcher) publish(ready bool) (built []string) {
	d := w.dirty
	w.dirty = newDirty()
	prev := w.Snapshot()
	next := &Snapshot{Revision: w.revision, Ready: ready, Router: prev.Router, Upstreams: prev.Upstreams, UpstreamNames: prev.UpstreamNames, RouteErrors: prev.RouteErrors, Listeners: prev.Listeners}
	var replaced []*upstream.Upstream
	if len(d.services) > 0 {
		edit := prev.Upstreams.edit()
		// An Upstream that comes or goes changes UpstreamNames.
		namesChanged := false
		for name := range d.services {
			old := prev.Upstreams.Get(name)
			svc := w.service(name)
			if svc == nil {
				delete(w.buildErrs, name)
				if old != nil {
					edit.delete(name)
					delete(w.inputs, name)
					replaced = append(replaced, old)
					namesChanged = true
				}
				continue
			}
			tlsCtx, cause := w.outboundFor(name)
			if tlsCtx == nil {
				// An https:// Service that no binding targets: TLS
				// verified against the system's trusted roots.
				tlsCtx = svc.obj.Service.DefaultTLS
			}
			if tlsCtx != nil && tlsCtx.References() {
				var resolved *model.OutboundTLS
				err := w.guard("references", cause.key, cause.rev, func() (err error) {
					resolved, err = w.resolveOutbound(tlsCtx)
					return err
				})
				if err != nil {
					w.buildErrs[name] = []*SkippedError{{Key: cause.key, Revision: cause.rev, Err: err}}
					w.log.Error("cannot resolve the binding's references; keeping the previous upstream", "upstream", name, "binding", cause.key, "error", err)
					continue
				}
				tlsCtx = resolved
			}
			in := upstreamInput{svc: svc.obj.Service, tls: tlsCtx}
			if old != nil && sameInput(w.inputs[name], in) {
				delete(w.buildErrs, name) // back to what is built
				continue                  // same endpoints and TLS context: keep the pool
			}
			w.stats.upstreamBuilds.Add(1)
			var u *upstream.Upstream
			err := w.guard("upstream", configkv.Key(model.Ref{Kind: model.KindService, Name: name}), svc.rev, func() (err error) {
				u, err = upstream.New(in.svc, in.tls, w.opts.Upstream)
				return err
			})
			if err != nil {
				// Refused: the binding value the Upstream still served
				// was not built from, and the Service's.
				built := w.inputs[name]
				var errs []*SkippedError
				if in.tls != nil && cause.key != "" && (old == nil || built.tls != in.tls) {
					errs = append(errs, &SkippedError{Key: cause.key, Revision: cause.rev, Err: err, Time: time.Now()})
				}
				if old == nil || built.svc != in.svc || len(errs) == 0 {
					errs = append(errs, &SkippedError{Key: configkv.Key(model.Ref{Kind: model.KindService, Name: name}), Revision: svc.rev, Err: err, Time: time.Now()})
				}
				w.buildErrs[name] = errs
				w.log.Error("cannot build upstream; keeping the previous one", "upstream", name, "revision", w.revision, "error", err)
				continue
			}
			delete(w.buildErrs, name)
			built = append(built, name)
			edit.set(name, u)
			w.inputs[name] = in
			fp := ""
			if in.tls != nil {
				fp = in.tls.Fingerprint
			}
			w.log.Info("upstream built", "upstream", name, "fingerprint", fp, "endpoints", in.svc.Endpoints, "revision", w.revision)
			if old != nil {
				replaced = append(replaced, old)
			} else {
				namesChanged = true
			}
		}
		next.Upstreams = edit.next
		if namesChanged {
			next.UpstreamNames = next.Upstreams.names()
		}
	}
	if d.routes {
		var routes []model.Route
		for _, o := range w.objects {
			if o.obj.Route != nil {
				routes = append(routes, *o.obj.Route)
			}
		}
		w.stats.routerBuilds.Add(1)
		if table, errs, ok := w.buildRouter(routes); ok {
			for _, err := range errs {
				w.log.Error("route left out of the routing table", "error", err, "revision", w.revision)
			}
			next.Router, next.RouteErrors = table, errs
		}
	}
	if d.listeners {
		var listeners []*model.Listener
		err := w.guard("listener", "", w.revision, func() error {
			listeners = w.resolveListeners(w.listeners())
			return nil
		})
		if err != nil {
			// Not attributable to one key: every Listener keeps what it
			// served, and is reported.
			w.listenerPanics = w.listenerPanics[:0]
			for _, l := range prev.Listeners {
				key := configkv.Key(model.Ref{Kind: model.KindListener, Name: l.Name})
				w.listenerPanics = append(w.listenerPanics, &SkippedError{Key: key, Revision: w.objects[key].rev, Err: err, Time: time.Now()})
			}
		} else {
			w.listenerPanics = nil
			next.Listeners = listeners
		}
	}
	if w.opts.Listeners != nil {
		// Every publish, not only when a Listener changed: one refused
		// because its address was taken is tried again.
		w.listenerErrs = w.listenerErrs[:0]
		var refused map[string]error
		if err := w.guard("inbound", "", w.revision, func() error {
			refused = w.opts.Listeners(next.Listeners)
			return nil
		}); err != nil {
			refused = make(map[string]error, len(next.Listeners))
			for _, l := range next.Listeners {
				refused[l.Name] = err
			}
		}
		for name, err := range refused {
			key := configkv.Key(model.Ref{Kind: model.KindListener, Name: name})
			w.listenerErrs = append(w.listenerErrs, &SkippedError{Key: key, Revision: w.objects[key].rev, Err: err, Time: time.Now()})
		}
	}
	next.route(prev, d.services)
	next.Skipped = slices.Collect(maps.Values(w.skipped))
	for _, errs := range w.buildErrs {
		next.Skipped = append(next.Skipped, errs...)
	}
	next.Skipped = append(next.Skipped, w.listenerErrs...)
	next.Skipped = append(next.Skipped, w.secretErrs...)
	next.Skipped = append(next.Skipped, w.inboundErrs...)
	next.Skipped = append(next.Skipped, w.routePanics...)
	next.Skipped = append(next.Skipped, w.listenerPanics...)
	slices.SortFunc(next.Skipped, func(a, b *SkippedError) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Revision, b.Revision))
	})
	w.stats.publishes.Add(1)
	w.current.Store(next)
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	if len(w.created) > 0 {
		now := time.Now()
		for _, c := range w.created {
			w.opts.ApplyLatency(max(0, now.Sub(c)))
		}
		w.created = w.created[:0]
	}
	if ready {
		select {
		case <-w.ready:
		default:
			close(w.ready)
			w.log.Info("configuration loaded", "revision", w.revision, "upstreams", next.Upstreams.Len(), "routes", len(next.Router.Routes()), "listeners", len(next.Listeners), "skipped", len(next.Skipped))
		}
	}
	for _, old := range replaced {
		w.drain(old)
	}
	return built
}

// listeners are the stored Listeners as served, by name: each with the
// hosts of the tls-inbound bindings that target it. A binding that cannot
// join its Listener (a hostname or the default already taken) is refused.
func (w *Watcher) listeners() []*model.Listener {
	var out []*model.Listener
	var inbound []*model.Binding
	for _, o := range w.objects {
		switch {
		case o.obj.Listener != nil:
			out = append(out, o.obj.Listener)
		case o.obj.Binding != nil && o.obj.Binding.Inbound != nil:
			inbound = append(inbound, o.obj.Binding)
		}
	}
	slices.SortFunc(out, func(a, b *model.Listener) int { return cmp.Compare(a.Name, b.Name) })
	w.inboundErrs = w.inboundErrs[:0]
	for i, l := range out {
		served, errs := l.WithInbound(inbound)
		out[i] = served
		for name, err := range errs {
			key := configkv.Key(model.Ref{Kind: model.KindPolicyBinding, Name: name})
			w.inboundErrs = append(w.inboundErrs, &SkippedError{Key: key, Revision: w.objects[key].rev, Err: err, Time: time.Now()})
			w.log.Error("tls-inbound binding left out of its listener", "listener", l.Name, "key", key, "error", err)
		}
	}
	return out
}

func (w *Watcher) service(name string) *stored {
	o, ok := w.objects[configkv.Key(model.Ref{Kind: model.KindService, Name: name})]
	if !ok || o.obj.Service == nil {
		return nil
	}
	return &o
}

// binding names the binding a TLS context came from.
type binding struct {
	key string
	rev uint64
}

// outboundFor is the TLS context of the tls-outbound binding that targets
// the Service, and that binding. With several (which validation refuses),
// the first by name wins.
func (w *Watcher) outboundFor(service string) (*model.OutboundTLS, binding) {
	var found []*model.Binding
	for key := range w.byTarget[service] {
		b := w.objects[key].obj.Binding
		if b != nil && b.Target.Kind == model.KindService && b.Target.Name == service && b.Policy == model.PolicyTLSOutbound && b.Outbound != nil {
			found = append(found, b)
		}
	}
	if len(found) == 0 {
		return nil, binding{}
	}
	slices.SortFunc(found, func(a, b *model.Binding) int { return cmp.Compare(a.Name, b.Name) })
	if len(found) > 1 {
		w.log.Warn("several tls-outbound bindings target one service; using the first by name", "upstream", service, "binding", found[0].Name)
	}
	key := configkv.Key(model.Ref{Kind: model.KindPolicyBinding, Name: found[0].Name})
	return found[0].Outbound, binding{key: key, rev: w.objects[key].rev}
}

func sameInput(a, b upstreamInput) bool {
	if a.svc == nil || b.svc == nil {
		return false
	}
	if !slices.Equal(a.svc.Endpoints, b.svc.Endpoints) || a.svc.Protocol != b.svc.Protocol {
		return false
	}
	if (a.tls == nil) != (b.tls == nil) {
		return false
	}
	return a.tls == nil || (a.tls.Fingerprint != "" && a.tls.Fingerprint == b.tls.Fingerprint)
}
