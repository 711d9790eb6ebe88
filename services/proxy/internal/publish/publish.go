package publish

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/proxy/internal/router"
	"keyway.dev/proxy/internal/translate"
	"keyway.dev/proxy/internal/upstream"
)

// Options configure a [Publisher].
type Options struct {
	// Upstream options for every Upstream built.
	Upstream upstream.Options
	// Panicked, if set, is called with the stage ("decode", "upstream",
	// "router", "listener", ...) of every panic recovered while handling a
	// stored value. Called from the publishing goroutine only.
	Panicked func(stage string)
	// DrainTimeout bounds how long a replaced Upstream waits for its
	// requests before its idle connections close anyway. Default 5m.
	DrainTimeout time.Duration
	Logger       *slog.Logger
	// Listeners, if set, is called on every publish, before the snapshot
	// is swapped in, with the snapshot's Listeners; it returns, by
	// Listener name, those it could not serve, which are then reported as
	// refused values of their keys. inbound.Manager.Apply in production.
	// Called from the publishing goroutine only.
	Listeners func([]*model.Listener) map[string]error
	// Secrets resolves references to the secrets service in bindings and
	// Listener hosts; nil refuses every value that has one.
	Secrets Resolver
}

// Publisher builds snapshots from what package translate gives, one at a
// time, and serves the last one. Snapshot, Ready, Changed and WaitRevision
// are safe for concurrent use; Publish is called from one goroutine, then
// Drain once.
type Publisher struct {
	opts Options
	log  *slog.Logger

	current atomic.Pointer[Snapshot]
	ready   chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every publish

	// Owned by the publishing goroutine.
	inputs map[string]upstreamInput
	// buildErrs, by Service name, are the values an Upstream could not be
	// built from.
	buildErrs map[string][]*SkippedError
	// listenerErrs are the Listeners Options.Listeners last refused;
	// inboundErrs, the tls-inbound bindings left out of their Listener.
	listenerErrs []*SkippedError
	inboundErrs  []*SkippedError
	// resolved are the Listeners as last served, with their references
	// resolved, by name; secretErrs the Listeners whose references could
	// not be resolved.
	resolved   map[string]resolvedListener
	secretErrs []*SkippedError
	// outbound shares resolved tls-outbound contexts between the
	// Upstreams whose bindings name the same material.
	outbound resolvedOutbound
	// routePanics are the routes left out of the table because building
	// them panicked; listenerPanics, the Listeners kept as they were
	// because resolving them panicked.
	routePanics, listenerPanics []*SkippedError
	stats                       stats

	// drainCtx is the parent of every drain; Drain cancels it when its
	// ctx ends.
	drainCtx    context.Context
	drainCancel context.CancelFunc
	drains      sync.WaitGroup
}

// stats count work done, for [Publisher.Stats].
type stats struct {
	upstreamBuilds, routerBuilds, publishes, panics atomic.Uint64
}

// Stats counts the work a [Publisher] has done since it was created.
type Stats struct {
	// UpstreamBuilds is the number of Upstreams built.
	UpstreamBuilds uint64
	// RouterBuilds is the number of routing tables built.
	RouterBuilds uint64
	// Publishes is the number of snapshots published.
	Publishes uint64
	// Panics is the number of panics recovered while decoding or building
	// a stored value (each value is then refused).
	Panics uint64
}

// upstreamInput is what an Upstream was built from, to tell whether a
// change needs a new one.
type upstreamInput struct {
	svc *model.Service
	tls *model.OutboundTLS
}

// New returns a publisher serving an empty, not ready snapshot.
func New(opts Options) *Publisher {
	opts.DrainTimeout = cmp.Or(opts.DrainTimeout, 5*time.Minute)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{
		opts: opts, log: opts.Logger,
		ready:     make(chan struct{}),
		changed:   make(chan struct{}),
		inputs:    make(map[string]upstreamInput),
		buildErrs: make(map[string][]*SkippedError),
		resolved:  make(map[string]resolvedListener),
		outbound:  resolvedOutbound{m: make(map[resolvedKey]weak.Pointer[model.OutboundTLS])},
	}
	p.drainCtx, p.drainCancel = context.WithCancel(context.Background())
	empty, _ := router.Build(nil)
	p.current.Store(&Snapshot{Router: empty, Upstreams: &Upstreams{}})
	return p
}

// UseSecrets sets the resolver of references (Options.Secrets) on a
// publisher built without one. Call it before the first Publish.
func (p *Publisher) UseSecrets(r Resolver) { p.opts.Secrets = r }

// Stats returns the counters; safe for concurrent use.
func (p *Publisher) Stats() Stats {
	return Stats{
		UpstreamBuilds: p.stats.upstreamBuilds.Load(), RouterBuilds: p.stats.routerBuilds.Load(),
		Publishes: p.stats.publishes.Load(), Panics: p.stats.panics.Load(),
	}
}

// Snapshot returns the current snapshot: one atomic load, never nil.
func (p *Publisher) Snapshot() *Snapshot { return p.current.Load() }

// Ready is closed at the first publish of a ready snapshot.
func (p *Publisher) Ready() <-chan struct{} { return p.ready }

// Changed returns a channel closed at the next publish of a snapshot; call
// it again for the one after. Safe for concurrent use.
func (p *Publisher) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// WaitRevision returns once a ready snapshot at revision rev or a later
// one is published, or when ctx ends; with the refusals of values at rev
// or earlier that the snapshot still lists (see Watcher.WaitRevision of
// package watch).
func (p *Publisher) WaitRevision(ctx context.Context, rev uint64) error {
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if s := p.Snapshot(); s.Ready && s.Revision >= rev {
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
			return fmt.Errorf("config: waiting for revision %d (at %d): %w", rev, p.Snapshot().Revision, ctx.Err())
		}
	}
}

// Change is what one publish is asked to do.
type Change struct {
	// Revision is the store revision of the last change applied.
	Revision uint64
	// Ready: the bucket's contents at start are all applied.
	Ready bool
	// Dirty is what the changes since the last publish invalidated.
	Dirty *translate.Dirty
	// Refused are the stored values refused before translation (they do
	// not decode), listed in the snapshot with the publisher's own.
	Refused []*SkippedError
	// Swapped, if set, is called once the snapshot is swapped in and its
	// readers told, before the Upstreams it replaced start draining.
	Swapped func()
}

// Publish rebuilds what c.Dirty says from what store translates to, and
// swaps the new snapshot in, then drains the Upstreams it replaced. It
// returns the Services whose Upstream it built.
func (p *Publisher) Publish(store *translate.Store, c Change) (built []string) {
	d := c.Dirty
	rev := c.Revision
	prev := p.Snapshot()
	next := &Snapshot{Revision: rev, Ready: c.Ready, Router: prev.Router, Upstreams: prev.Upstreams, UpstreamNames: prev.UpstreamNames, RouteErrors: prev.RouteErrors, Listeners: prev.Listeners}
	var replaced []*upstream.Upstream
	// Before the bucket is loaded, each Upstream built is logged at debug
	// level: "configuration loaded" counts them, and 10,000 lines at
	// start took a tenth of a node's bootstrap.
	builtLevel := slog.LevelInfo
	if !prev.Ready {
		builtLevel = slog.LevelDebug
	}
	if len(d.Services) > 0 {
		edit := prev.Upstreams.edit()
		// An Upstream that comes or goes changes UpstreamNames.
		namesChanged := false
		for name := range d.Services {
			old := prev.Upstreams.Get(name)
			want := store.Upstream(name)
			if want.Service == nil {
				delete(p.buildErrs, name)
				if old != nil {
					edit.delete(name)
					delete(p.inputs, name)
					replaced = append(replaced, old)
					namesChanged = true
				}
				continue
			}
			if want.Bindings > 1 {
				p.log.Warn("several tls-outbound bindings target one service; using the first by name", "upstream", name, "binding", want.BindingName)
			}
			tlsCtx, cause := want.TLS, want.Binding
			if tlsCtx != nil && tlsCtx.References() {
				var resolved *model.OutboundTLS
				err := p.guard("references", cause.Key, cause.Rev, func() (err error) {
					resolved, err = p.resolveOutbound(tlsCtx)
					return err
				})
				if err != nil {
					p.buildErrs[name] = []*SkippedError{{Key: cause.Key, Revision: cause.Rev, Err: err}}
					p.log.Error("cannot resolve the binding's references; keeping the previous upstream", "upstream", name, "binding", cause.Key, "error", err)
					continue
				}
				tlsCtx = resolved
			}
			in := upstreamInput{svc: want.Service, tls: tlsCtx}
			if old != nil && sameInput(p.inputs[name], in) {
				delete(p.buildErrs, name) // back to what is built
				continue                  // same endpoints and TLS context: keep the pool
			}
			p.stats.upstreamBuilds.Add(1)
			svcKey := configkv.Key(model.Ref{Kind: model.KindService, Name: name})
			var u *upstream.Upstream
			err := p.guard("upstream", svcKey, want.ServiceRev, func() (err error) {
				u, err = upstream.New(in.svc, in.tls, p.opts.Upstream)
				return err
			})
			if err != nil {
				// Refused: the binding value the Upstream still served
				// was not built from, and the Service's.
				built := p.inputs[name]
				var errs []*SkippedError
				if in.tls != nil && cause.Key != "" && (old == nil || built.tls != in.tls) {
					errs = append(errs, &SkippedError{Key: cause.Key, Revision: cause.Rev, Err: err, Time: time.Now()})
				}
				if old == nil || built.svc != in.svc || len(errs) == 0 {
					errs = append(errs, &SkippedError{Key: svcKey, Revision: want.ServiceRev, Err: err, Time: time.Now()})
				}
				p.buildErrs[name] = errs
				p.log.Error("cannot build upstream; keeping the previous one", "upstream", name, "revision", rev, "error", err)
				continue
			}
			delete(p.buildErrs, name)
			built = append(built, name)
			edit.set(name, u)
			p.inputs[name] = in
			fp := ""
			if in.tls != nil {
				fp = in.tls.Fingerprint
			}
			p.log.Log(context.Background(), builtLevel, "upstream built", "upstream", name, "fingerprint", fp, "endpoints", in.svc.Endpoints, "revision", rev)
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
	if d.Routes {
		p.stats.routerBuilds.Add(1)
		if table, ok := p.updateRouter(store, prev.Router, d.RouteNames, rev); ok {
			next.Router, next.RouteErrors = table, nil
		} else if table, errs, ok := p.buildRouter(store, store.Routes(), rev); ok {
			for _, err := range errs {
				p.log.Error("route left out of the routing table", "error", err, "revision", rev)
			}
			next.Router, next.RouteErrors = table, errs
		}
	}
	if d.Listeners {
		var listeners []*model.Listener
		err := p.guard("listener", "", rev, func() error {
			listeners = p.resolveListeners(store, p.listeners(store))
			return nil
		})
		if err != nil {
			// Not attributable to one key: every Listener keeps what it
			// served, and is reported.
			p.listenerPanics = p.listenerPanics[:0]
			for _, l := range prev.Listeners {
				key := configkv.Key(model.Ref{Kind: model.KindListener, Name: l.Name})
				p.listenerPanics = append(p.listenerPanics, &SkippedError{Key: key, Revision: store.Rev(key), Err: err, Time: time.Now()})
			}
		} else {
			p.listenerPanics = nil
			next.Listeners = listeners
		}
	}
	if p.opts.Listeners != nil {
		// Every publish, not only when a Listener changed: one refused
		// because its address was taken is tried again.
		p.listenerErrs = p.listenerErrs[:0]
		var refused map[string]error
		if err := p.guard("inbound", "", rev, func() error {
			refused = p.opts.Listeners(next.Listeners)
			return nil
		}); err != nil {
			refused = make(map[string]error, len(next.Listeners))
			for _, l := range next.Listeners {
				refused[l.Name] = err
			}
		}
		for name, err := range refused {
			key := configkv.Key(model.Ref{Kind: model.KindListener, Name: name})
			p.listenerErrs = append(p.listenerErrs, &SkippedError{Key: key, Revision: store.Rev(key), Err: err, Time: time.Now()})
		}
	}
	next.route(prev, d.Services)
	next.Skipped = slices.Clone(c.Refused)
	for _, errs := range p.buildErrs {
		next.Skipped = append(next.Skipped, errs...)
	}
	next.Skipped = append(next.Skipped, p.listenerErrs...)
	next.Skipped = append(next.Skipped, p.secretErrs...)
	next.Skipped = append(next.Skipped, p.inboundErrs...)
	next.Skipped = append(next.Skipped, p.routePanics...)
	next.Skipped = append(next.Skipped, p.listenerPanics...)
	slices.SortFunc(next.Skipped, func(a, b *SkippedError) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Revision, b.Revision))
	})
	p.stats.publishes.Add(1)
	p.current.Store(next)
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	if c.Swapped != nil {
		c.Swapped()
	}
	if c.Ready {
		select {
		case <-p.ready:
		default:
			close(p.ready)
			p.log.Info("configuration loaded", "revision", rev, "upstreams", next.Upstreams.Len(), "routes", next.Router.Count(), "listeners", len(next.Listeners), "skipped", len(next.Skipped))
		}
	}
	for _, old := range replaced {
		p.drain(old)
	}
	return built
}

// listeners are the stored Listeners as translated, with the tls-inbound
// bindings left out of them logged and kept refused.
func (p *Publisher) listeners(store *translate.Store) []*model.Listener {
	p.inboundErrs = p.inboundErrs[:0]
	out, refused := store.Listeners()
	for _, r := range refused {
		p.inboundErrs = append(p.inboundErrs, &SkippedError{Key: r.Key, Revision: r.Rev, Err: r.Err, Time: time.Now()})
		p.log.Error("tls-inbound binding left out of its listener", "listener", r.Listener, "key", r.Key, "error", r.Err)
	}
	return out
}

// Drain drains every Upstream: those replaced and still draining, and those
// of the current snapshot, whose idle connections it closes. Call it once
// nothing publishes or forwards requests any more. When ctx ends, the
// drains still waiting for requests stop waiting (their idle connections
// are closed all the same, and each logs what it left).
func (p *Publisher) Drain(ctx context.Context) {
	stop := context.AfterFunc(ctx, p.drainCancel)
	defer stop()
	for _, u := range p.Snapshot().Upstreams.All() {
		p.drain(u)
	}
	p.drains.Wait()
	p.drainCancel()
}

// drain drains u in the background, for at most DrainTimeout or until
// [Publisher.Drain] gives up.
func (p *Publisher) drain(u *upstream.Upstream) {
	p.drains.Go(func() {
		// Not the watch's ctx: draining finishes requests even while the
		// node stops; Drain bounds it.
		dctx, cancel := context.WithTimeout(p.drainCtx, p.opts.DrainTimeout)
		defer cancel()
		if err := u.Drain(dctx); err != nil {
			p.log.Warn("upstream drain cut short", "upstream", u.Name(), "fingerprint", u.Fingerprint(), "error", err)
		}
	})
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
