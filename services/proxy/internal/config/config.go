// Package config keeps a proxy node's configuration in step with the store of
// record, the JetStream KV bucket: it watches every key, keeps the last good
// model of each, and on each change rebuilds only what depends on it (a
// binding or Service change: that Service's Upstream; a route change: the
// routing table), then publishes one immutable [Snapshot] behind an
// atomic.Pointer. Upstreams that are replaced are drained in the background.
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

	"github.com/nats-io/nats.go/jetstream"
	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/common/configkv"
	"keyway.dev/common/model"
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
	Upstreams map[string]*upstream.Upstream
	// RouteErrors are the routes left out of the table (conflicts).
	RouteErrors []error
}

// Decoder turns a stored resource into its validated model;
// [model.Decode] in production.
type Decoder func(*policyv1.Resource) (model.Object, error)

// Options configure a [Watcher].
type Options struct {
	// Upstream options for every Upstream built.
	Upstream upstream.Options
	// Decode defaults to model.Decode.
	Decode Decoder
	// DrainTimeout bounds how long a replaced Upstream waits for its
	// requests before its idle connections close anyway. Default 5m.
	DrainTimeout time.Duration
	// RetryInterval is the wait before a broken watch is restarted.
	// Default 1s.
	RetryInterval time.Duration
	Logger        *slog.Logger
}

// Watcher follows the bucket. Snapshot, Ready, Revision and WaitRevision are
// safe for concurrent use; Run is called once.
type Watcher struct {
	kv   jetstream.KeyValue // set by Run
	opts Options
	log  *slog.Logger

	current atomic.Pointer[Snapshot]
	ready   chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every publish

	// Owned by Run's goroutine.
	revision uint64
	objects  map[string]model.Object // by bucket key: the last good model
	inputs   map[string]upstreamInput
	drains   sync.WaitGroup
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
		opts.Decode = model.Decode
	}
	opts.DrainTimeout = cmp.Or(opts.DrainTimeout, 5*time.Minute)
	opts.RetryInterval = cmp.Or(opts.RetryInterval, time.Second)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{
		opts: opts, log: opts.Logger,
		ready:   make(chan struct{}),
		changed: make(chan struct{}),
		objects: make(map[string]model.Object),
		inputs:  make(map[string]upstreamInput),
	}
	empty, _ := router.Build(nil)
	w.current.Store(&Snapshot{Router: empty, Upstreams: map[string]*upstream.Upstream{}})
	return w
}

// Snapshot returns the current snapshot: one atomic load, never nil.
func (w *Watcher) Snapshot() *Snapshot { return w.current.Load() }

// Ready is closed once the bucket's contents at start are applied.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Revision is the revision of the current snapshot.
func (w *Watcher) Revision() uint64 { return w.Snapshot().Revision }

// WaitRevision returns once the node is ready and serves revision rev or a
// later one, or when ctx ends.
func (w *Watcher) WaitRevision(ctx context.Context, rev uint64) error {
	for {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		if s := w.Snapshot(); s.Ready && s.Revision >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("config: waiting for revision %d (at %d): %w", rev, w.Revision(), ctx.Err())
		}
	}
}

// Run watches kv until ctx ends, restarting the watch when it breaks (the
// node keeps serving its last snapshot meanwhile). When it returns,
// replaced Upstreams have been drained. Call it once.
func (w *Watcher) Run(ctx context.Context, kv jetstream.KeyValue) error {
	w.kv = kv
	defer w.drains.Wait()
	for {
		err := w.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		w.log.Warn("config watch broke; serving the last good configuration and retrying", "revision", w.revision, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(w.opts.RetryInterval):
		}
	}
}

// session is one watch: the current value of every key, a nil marker, then
// changes. A session after the first is a resync: keys not seen before the
// marker were deleted while the watch was down.
func (w *Watcher) session(ctx context.Context) error {
	kw, err := w.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("config: watching bucket %q: %w", w.kv.Bucket(), err)
	}
	defer kw.Stop()
	updates := kw.Updates()
	seen := make(map[string]bool)
	initial := true
	d := newDirty()
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok = <-updates:
		}
		if !ok {
			return errors.New("config: watch closed")
		}
		if e == nil {
			if initial {
				initial = false
				for key := range w.objects {
					if !seen[key] {
						w.remove(key, d)
					}
				}
				seen = nil
				w.publish(ctx, d, true)
				d = newDirty()
			}
			continue
		}
		if initial {
			seen[e.Key()] = true
			w.apply(e, d)
			continue
		}
		w.apply(e, d)
		// Apply what else is already queued before rebuilding once.
	more:
		for {
			select {
			case e, ok = <-updates:
				if !ok || e == nil {
					break more
				}
				w.apply(e, d)
			default:
				break more
			}
		}
		w.publish(ctx, d, true)
		d = newDirty()
		if !ok {
			return errors.New("config: watch closed")
		}
	}
}

// dirty is what a batch of changes invalidated.
type dirty struct {
	services map[string]bool
	routes   bool
}

func newDirty() *dirty { return &dirty{services: make(map[string]bool)} }

func (d *dirty) touch(obj model.Object) {
	switch {
	case obj.Service != nil:
		d.services[obj.Service.Name] = true
	case obj.Route != nil:
		d.routes = true
	case obj.Binding != nil && obj.Binding.Target.Kind == model.KindService:
		d.services[obj.Binding.Target.Name] = true
	}
}

// apply records one entry. A value that does not decode is logged and
// skipped: the key keeps its last good model.
func (w *Watcher) apply(e jetstream.KeyValueEntry, d *dirty) {
	key, rev := e.Key(), e.Revision()
	w.revision = max(w.revision, rev)
	if e.Operation() != jetstream.KeyValuePut {
		w.remove(key, d)
		return
	}
	log := w.log.With("key", key, "revision", rev)
	ref, err := configkv.ParseKey(key)
	if err != nil {
		log.Warn("ignoring a key that is not a resource", "error", err)
		return
	}
	res, err := configkv.Decode(e.Value(), rev)
	if err != nil {
		log.Error("ignoring an unreadable value; keeping the last good one", "error", err)
		return
	}
	obj, err := w.opts.Decode(res)
	if err != nil {
		log.Error("ignoring an invalid resource; keeping the last good one", "error", err)
		return
	}
	if got := obj.Ref(); got != ref {
		log.Error("ignoring a resource stored under another resource's key", "resource", got.String())
		return
	}
	if old, ok := w.objects[key]; ok {
		d.touch(old) // a binding may have changed its target
	}
	w.objects[key] = obj
	d.touch(obj)
}

func (w *Watcher) remove(key string, d *dirty) {
	if old, ok := w.objects[key]; ok {
		delete(w.objects, key)
		d.touch(old)
	}
}

// publish rebuilds what d says and swaps the new snapshot in, then drains
// the Upstreams it replaced.
func (w *Watcher) publish(ctx context.Context, d *dirty, ready bool) {
	prev := w.Snapshot()
	next := &Snapshot{Revision: w.revision, Ready: ready, Router: prev.Router, Upstreams: prev.Upstreams, RouteErrors: prev.RouteErrors}
	var replaced []*upstream.Upstream
	if len(d.services) > 0 {
		next.Upstreams = maps.Clone(prev.Upstreams)
		for name := range d.services {
			old := next.Upstreams[name]
			svc := w.service(name)
			if svc == nil {
				if old != nil {
					delete(next.Upstreams, name)
					delete(w.inputs, name)
					replaced = append(replaced, old)
				}
				continue
			}
			in := upstreamInput{svc: svc, tls: w.outboundFor(name)}
			if old != nil && sameInput(w.inputs[name], in) {
				continue // same endpoints and TLS context: keep the pool
			}
			u, err := upstream.New(in.svc, in.tls, w.opts.Upstream)
			if err != nil {
				w.log.Error("cannot build upstream; keeping the previous one", "upstream", name, "error", err)
				continue
			}
			next.Upstreams[name] = u
			w.inputs[name] = in
			fp := ""
			if in.tls != nil {
				fp = in.tls.Fingerprint
			}
			w.log.Info("upstream built", "upstream", name, "fingerprint", fp, "endpoints", in.svc.Endpoints, "revision", w.revision)
			if old != nil {
				replaced = append(replaced, old)
			}
		}
	}
	if d.routes {
		var routes []model.Route
		for _, o := range w.objects {
			if o.Route != nil {
				routes = append(routes, *o.Route)
			}
		}
		table, errs := router.Build(routes)
		for _, err := range errs {
			w.log.Error("route left out of the routing table", "error", err, "revision", w.revision)
		}
		next.Router, next.RouteErrors = table, errs
	}
	w.current.Store(next)
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	if ready {
		select {
		case <-w.ready:
		default:
			close(w.ready)
			w.log.Info("configuration loaded", "revision", w.revision, "upstreams", len(next.Upstreams), "routes", len(next.Router.Routes()))
		}
	}
	for _, old := range replaced {
		w.drains.Go(func() {
			// Not ctx: draining finishes requests even while the node stops.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.opts.DrainTimeout)
			defer cancel()
			if err := old.Drain(dctx); err != nil {
				w.log.Warn("upstream drain timed out", "upstream", old.Name(), "fingerprint", old.Fingerprint(), "error", err)
			}
		})
	}
}

func (w *Watcher) service(name string) *model.Service {
	return w.objects[configkv.Key(model.Ref{Kind: model.KindService, Name: name})].Service
}

// outboundFor is the TLS context of the tls-outbound binding that targets
// the Service. With several (which validation refuses), the first by name
// wins.
func (w *Watcher) outboundFor(service string) *model.OutboundTLS {
	var found []*model.Binding
	for _, o := range w.objects {
		b := o.Binding
		if b != nil && b.Target.Kind == model.KindService && b.Target.Name == service && b.Policy == model.PolicyTLSOutbound && b.Outbound != nil {
			found = append(found, b)
		}
	}
	if len(found) == 0 {
		return nil
	}
	slices.SortFunc(found, func(a, b *model.Binding) int { return cmp.Compare(a.Name, b.Name) })
	if len(found) > 1 {
		w.log.Warn("several tls-outbound bindings target one service; using the first by name", "upstream", service, "binding", found[0].Name)
	}
	return found[0].Outbound
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
