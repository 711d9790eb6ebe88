package publish

import (
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/proxy/internal/router"
	"keyway.dev/proxy/internal/translate"
)

// ErrPanic is wrapped by the error of a value refused because decoding or
// building it panicked: the node recovered, reports the value as refused
// like any other, and keeps serving the last good state of its key.
var ErrPanic = errors.New("config: panic recovered")

// Bounds of what a recovered panic puts in logs and errors: a panic value
// may quote the stored value, which is client input.
const (
	maxPanicValue = 200
	maxPanicStack = 8 << 10
)

// Recovered records a panic recovered while handling key at revision rev
// in stage ("decode", "upstream", "router", ...): it counts it, logs it
// (the stack at debug level), and returns the error to refuse the value
// with. Called from the publishing goroutine only (the watch decodes there
// too).
func (p *Publisher) Recovered(stage, key string, rev uint64, r any) error {
	p.stats.panics.Add(1)
	if p.opts.Panicked != nil {
		p.opts.Panicked(stage)
	}
	v := bounded(fmt.Sprint(r), maxPanicValue)
	p.log.Error("recovered a panic; the value is refused and the last good one kept", "stage", stage, "key", key, "revision", rev, "panic", v)
	p.log.Debug("stack of the recovered panic", "stage", stage, "key", key, "revision", rev, "stack", bounded(string(debug.Stack()), maxPanicStack))
	return fmt.Errorf("%w in %s: %s", ErrPanic, stage, v)
}

// bounded is s cut to at most n bytes, marked when cut.
func bounded(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// guard runs f, one step of building what the value of key at revision rev
// leads to, turning a panic into an error wrapping [ErrPanic].
func (p *Publisher) guard(stage, key string, rev uint64, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = p.Recovered(stage, key, rev, r)
		}
	}()
	return f()
}

// updateRouter applies the changes of the routes names to table
// ([router.Table.Update]), rebuilding only what they change; ok is false
// when it cannot, and the caller builds the table anew: also when a route
// was left out of the table because building it panicked, or when
// updating panics.
func (p *Publisher) updateRouter(store *translate.Store, table *router.Table, names map[string]bool, revision uint64) (next *router.Table, ok bool) {
	if len(p.routePanics) > 0 || len(names) == 0 {
		return nil, false
	}
	changes := make(map[string]*model.Route, len(names))
	for name := range names {
		changes[name] = store.Route(name)
	}
	err := p.guard("router", "", revision, func() error {
		next, ok = table.Update(changes)
		return nil
	})
	return next, err == nil && ok
}

// buildRouter builds the routing table, recovering a panic: the routes
// whose build panics on their own are left out of the table and refused
// (p.routePanics), and the table is built from the others. ok is false when
// even that panics: the previous table is then kept.
func (p *Publisher) buildRouter(store *translate.Store, routes []model.Route, revision uint64) (table *router.Table, errs []error, ok bool) {
	build := func(rs []model.Route, key string, rev uint64) error {
		return p.guard("router", key, rev, func() error {
			table, errs = router.Build(rs)
			return nil
		})
	}
	if build(routes, "", revision) == nil {
		p.routePanics = nil
		return table, errs, true
	}
	// Find the routes that panic alone; keep the others.
	p.routePanics = p.routePanics[:0]
	var good []model.Route
	for _, r := range routes {
		key := configkv.Key(model.Ref{Kind: model.KindRoute, Name: r.Name})
		rev := store.Rev(key)
		if err := build([]model.Route{r}, key, rev); err != nil {
			p.routePanics = append(p.routePanics, &SkippedError{Key: key, Revision: rev, Err: err, Time: time.Now()})
			continue
		}
		good = append(good, r)
	}
	if build(good, "", revision) != nil {
		return nil, nil, false
	}
	return table, errs, true
}
