// Package store keeps Keyway's resources in a NATS JetStream KV bucket, the
// store of record: one key per resource (see [configkv]), every write
// conditioned on the revision it was checked against.
//
// Writes are published on the bucket's subjects directly rather than through
// the KV helpers, so that one code path serves create, update and delete with
// the same "expected last revision" guard and returns the revision written.
// The wire format is NATS's documented KV format, so kv.Watch and the nats CLI
// see ordinary KV entries.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/retry"
	"keyway.dev/internal/telemetry"
)

// Errors callers map to API codes. Errors returned by the store match them
// with errors.Is and carry a message meant for the caller.
var (
	// ErrNotFound: the resource does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: the stored revision is not the one the write expected.
	ErrConflict = errors.New("store: revision conflict")
)

// callerError is an error whose message is complete for an API caller and
// that matches one of the sentinels.
type callerError struct {
	msg  string
	kind error
}

func (e *callerError) Error() string        { return e.msg }
func (e *callerError) Is(target error) bool { return target == e.kind }

func notFound(ref model.Ref) error {
	return &callerError{fmt.Sprintf("%s does not exist", ref), ErrNotFound}
}

func conflict(format string, args ...any) error {
	return &callerError{fmt.Sprintf(format, args...), ErrConflict}
}

// Store is the configuration bucket plus an in-memory view of it that a
// watcher keeps current. Reads of single resources go to the bucket; the view
// serves validation (references, route conflicts) and listings. Safe for
// concurrent use.
type Store struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	stream jetstream.Stream
	prefix string // "$KV.<bucket>."
	log    *slog.Logger
	tr     telemetry.Tracing

	journal Journal

	stop    context.CancelFunc
	stopped chan struct{}
	resume  chan struct{}

	mu       sync.RWMutex
	byKey    map[string]entry
	revision uint64 // highest revision the view has seen
	changed  chan struct{}
}

type entry struct {
	res      *policyv1.Resource
	obj      model.Object
	revision uint64
}

// Config says which bucket to use and how to create it.
type Config struct {
	Bucket string
	// Replicas of the bucket's stream in a NATS cluster; 1 on one server.
	Replicas int
	// History is how many revisions of each key the bucket keeps.
	History uint8
	// Tracing, when on, records each Write and each key written, and
	// puts the trace context in the headers of the message written, for
	// the proxy nodes to continue the trace.
	Tracing telemetry.Tracing
	// Journal, when set, is told of every write before it is made and
	// after: the audit trail.
	Journal Journal
}

// Open creates the bucket if needed, starts the watcher, and returns once the
// view holds everything in the bucket. ctx bounds the opening only; the
// watcher runs until [Store.Close].
func Open(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Store, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = configkv.Bucket
	}
	if cfg.History == 0 {
		cfg.History = 16
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("store: opening JetStream: %w", err)
	}
	kv, err := retry.Provision(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      cfg.Bucket,
			Description: "Keyway configuration: one key per resource",
			History:     cfg.History,
			Replicas:    cfg.Replicas,
			Storage:     jetstream.FileStorage,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: opening bucket %q: %w", cfg.Bucket, err)
	}
	stream, err := js.Stream(ctx, "KV_"+cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("store: opening the stream of bucket %q: %w", cfg.Bucket, err)
	}
	if err := allowAtomicPublish(ctx, js, stream); err != nil {
		return nil, err
	}
	s := &Store{
		js: js, kv: kv, stream: stream,
		prefix:  "$KV." + cfg.Bucket + ".",
		log:     log,
		tr:      cfg.Tracing,
		journal: cfg.Journal,
		byKey:   make(map[string]entry),
		changed: make(chan struct{}),
		resume:  make(chan struct{}, 1),
	}
	watchCtx, stop := context.WithCancel(context.Background())
	w, err := kv.WatchAll(watchCtx, jetstream.IncludeHistory())
	if err != nil {
		stop()
		return nil, fmt.Errorf("store: watching bucket %q: %w", cfg.Bucket, err)
	}
	s.stop, s.stopped = stop, make(chan struct{})
	ready := make(chan struct{})
	go s.watch(watchCtx, w, ready)
	select {
	case <-ready:
		return s, nil
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("store: loading bucket %q: %w", cfg.Bucket, ctx.Err())
	}
}

// Close stops the watcher.
func (s *Store) Close() {
	s.stop()
	<-s.stopped
}

// Resume restarts the view's watch at once, after the last revision seen:
// the service calls it when its NATS connection comes back, rather than
// wait for the KV watcher to miss the restarted server's heartbeats.
func (s *Store) Resume() {
	select {
	case s.resume <- struct{}{}:
	default:
	}
}

// watch applies every change of the bucket to the view. IncludeHistory makes
// the initial replay carry revisions in order, so the view's revision is the
// bucket's last sequence once the replay ends. A resumed watch starts after
// the revision the view has.
func (s *Store) watch(ctx context.Context, w jetstream.KeyWatcher, ready chan struct{}) {
	defer close(s.stopped)
	defer func() { w.Stop() }()
	var caughtUp sync.Once
	// A resume that fails (the stream has no leader yet: its server just
	// died) is tried again, with backoff, until one succeeds: the current
	// watch may follow a consumer that is gone, and would notice only
	// when its heartbeats stop.
	backoff := retry.New(250*time.Millisecond, 5*time.Second)
	var again <-chan time.Time
	for {
		resume := false
		select {
		case <-ctx.Done():
			return
		case <-s.resume:
			resume = true
		case <-again:
			resume = true
		case e, ok := <-w.Updates():
			if !ok {
				s.log.Error("configuration watch ended; the view no longer follows the bucket")
				return
			}
			if e == nil {
				caughtUp.Do(func() { close(ready) })
				continue
			}
			s.observe(e.Key(), e.Value(), e.Revision(), e.Operation() != jetstream.KeyValuePut)
		}
		if resume {
			again = nil
			// The watch lives as long as the context it is made with;
			// the client bounds its creation itself.
			nw, err := s.kv.WatchAll(ctx, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(s.Revision()+1))
			if err != nil {
				wait := backoff.Next()
				s.log.Warn("cannot resume the configuration watch yet; the current one goes on meanwhile", "error", err, "retry_in", wait)
				again = time.After(wait)
				continue
			}
			backoff.Reset()
			w.Stop()
			w = nw
		}
	}
}

func (s *Store) observe(key string, value []byte, revision uint64, deleted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if revision <= s.revision {
		return
	}
	s.revision = revision
	defer func() { close(s.changed); s.changed = make(chan struct{}) }()
	if deleted {
		delete(s.byKey, key)
		return
	}
	res, err := configkv.Decode(value, revision)
	if err != nil {
		s.log.Warn("skipping unreadable record", "key", key, "revision", revision, "error", err)
		return
	}
	obj, err := model.Decode(res)
	if err != nil {
		s.log.Warn("skipping record that does not decode", "key", key, "revision", revision, "error", err)
		return
	}
	s.byKey[key] = entry{res: res, obj: obj, revision: revision}
}

// Revision is the highest revision the view has seen: the bucket's last
// revision once the view has caught up.
func (s *Store) Revision() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revision
}

// WaitRevision blocks until the view has seen revision rev.
func (s *Store) WaitRevision(ctx context.Context, rev uint64) error {
	for {
		s.mu.RLock()
		seen, changed := s.revision, s.changed
		s.mu.RUnlock()
		if seen >= rev {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("store: waiting for revision %d (have %d): %w", rev, seen, ctx.Err())
		}
	}
}

// Get reads one resource from the bucket.
func (s *Store) Get(ctx context.Context, ref model.Ref) (*policyv1.Resource, error) {
	cur, err := s.current(ctx, ref)
	if err != nil {
		return nil, err
	}
	if cur.res == nil {
		return nil, notFound(ref)
	}
	return cur.res, nil
}

// List returns the resources of one kind (all kinds when kind is empty),
// sorted by kind and name, as of the view's latest revision.
func (s *Store) List(kind string) []*policyv1.Resource {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := make([]string, 0, len(s.byKey))
	for k, e := range s.byKey {
		if kind == "" || e.obj.Ref().Kind == kind {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([]*policyv1.Resource, len(keys))
	for i, k := range keys {
		out[i] = s.byKey[k].res
	}
	return out
}

// Catalog is the view as validation needs it.
func (s *Store) Catalog() model.Catalog { return catalog{s} }

type catalog struct{ s *Store }

func (c catalog) Exists(ref model.Ref) bool {
	c.s.mu.RLock()
	defer c.s.mu.RUnlock()
	_, ok := c.s.byKey[configkv.Key(ref)]
	return ok
}

func (c catalog) Routes() []model.Route {
	return collect(c.s, func(o model.Object) *model.Route { return o.Route })
}

// Bindings returns the stored bindings.
func (c catalog) Bindings() []model.Binding {
	return collect(c.s, func(o model.Object) *model.Binding { return o.Binding })
}

// Listeners returns the stored Listeners, for address conflicts.
func (c catalog) Listeners() []model.Listener {
	return collect(c.s, func(o model.Object) *model.Listener { return o.Listener })
}

// collect copies out of the view every object of the kind pick selects.
func collect[T any](s *Store, pick func(model.Object) *T) []T {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []T
	for _, e := range s.byKey {
		if v := pick(e.obj); v != nil {
			out = append(out, *v)
		}
	}
	return out
}

// Service returns the stored Service name from the view.
func (s *Store) Service(name string) (*model.Service, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.byKey[configkv.Key(model.Ref{Kind: model.KindService, Name: name})]
	if !ok || e.obj.Service == nil {
		return nil, false
	}
	return e.obj.Service, true
}

// Dependents lists the stored resources that name the Service or Listener
// ref: routes that forward to the Service or serve the Listener, and
// bindings that target it.
func (s *Store) Dependents(ref model.Ref) []model.Ref {
	if ref.Kind != model.KindService && ref.Kind != model.KindListener {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []model.Ref
	for _, e := range s.byKey {
		switch {
		case e.obj.Route != nil && ref.Kind == model.KindService && e.obj.Route.Service == ref.Name:
			out = append(out, e.obj.Ref())
		case e.obj.Route != nil && ref.Kind == model.KindListener && slices.Contains(e.obj.Route.Listeners, ref.Name):
			out = append(out, e.obj.Ref())
		case e.obj.Binding != nil && e.obj.Binding.Target == ref:
			out = append(out, e.obj.Ref())
		}
	}
	slices.SortFunc(out, func(a, b model.Ref) int { return cmpRef(a, b) })
	return out
}

func cmpRef(a, b model.Ref) int {
	if a.Kind != b.Kind {
		if a.Kind < b.Kind {
			return -1
		}
		return 1
	}
	switch {
	case a.Name < b.Name:
		return -1
	case a.Name > b.Name:
		return 1
	}
	return 0
}

// current reads the last message of a key: its revision (0 if the key never
// existed) and its resource (nil if deleted or never written).
func (s *Store) current(ctx context.Context, ref model.Ref) (entry, error) {
	msg, err := s.stream.GetLastMsgForSubject(ctx, s.prefix+configkv.Key(ref))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return entry{}, nil
	}
	if err != nil {
		return entry{}, fmt.Errorf("store: reading %s: %w", ref, err)
	}
	if msg.Header.Get("KV-Operation") != "" {
		return entry{revision: msg.Sequence}, nil
	}
	res, err := configkv.Decode(msg.Data, msg.Sequence)
	if err != nil {
		return entry{}, err
	}
	return entry{res: res, revision: msg.Sequence}, nil
}

// Outcome of one write.
type Outcome struct {
	Ref      model.Ref
	Created  bool
	Changed  bool // false: the stored content was the same; nothing written
	Revision uint64
}

// Write stores resources, all or nothing. Each resource's metadata.revision,
// when non-zero, must equal its stored revision. Resources whose content is
// already stored are not rewritten. The changed resources are written as one
// JetStream atomic batch: the server stores every message of it or none, and
// each message carries the revision its key was checked at
// (Nats-Expected-Last-Subject-Sequence), so a writer that got in between the
// checks and the batch makes the whole batch fail with ErrConflict and
// nothing is stored. Proxy nodes apply the messages of one batch as one
// change. With dryRun the checks run and nothing is written.
func (s *Store) Write(ctx context.Context, resources []*policyv1.Resource, dryRun bool) (outs []Outcome, err error) {
	if err := s.connected("applying"); err != nil {
		return nil, err
	}
	if s.tr.On() {
		var span trace.Span
		ctx, span = s.tr.Tracer.Start(ctx, telemetry.SpanStoreWrite, trace.WithAttributes(
			telemetry.AttrConfigResources.Int(len(resources)), telemetry.AttrDryRun.Bool(dryRun)))
		defer func() {
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}()
	}
	now := time.Now()
	outs = make([]Outcome, len(resources))
	prev := make([]entry, len(resources))
	var conflicts []error
	for i, r := range resources {
		ref := configkv.RefOf(r)
		cur, err := s.current(ctx, ref)
		if err != nil {
			return nil, err
		}
		prev[i] = cur
		outs[i] = Outcome{Ref: ref, Created: cur.res == nil, Changed: cur.res == nil || !configkv.SameContent(cur.res, r), Revision: cur.revision}
		if want := configkv.Metadata(r).GetRevision(); want != 0 && want != cur.revision {
			conflicts = append(conflicts, conflict("%s: metadata.revision is %d but the stored revision is %d: it changed since it was read; get it again and re-apply, or leave metadata.revision out to apply over it", ref, want, cur.revision))
		}
	}
	if err := errors.Join(conflicts...); err != nil || dryRun {
		return outs, err
	}
	values := make([][]byte, len(resources))
	var changes []Change
	var writes []write
	for i, r := range resources {
		if !outs[i].Changed {
			continue
		}
		if values[i], err = configkv.Encode(r, now); err != nil {
			return nil, err
		}
		changes = append(changes, Change{Ref: outs[i].Ref, Digest: Digest(values[i])})
		writes = append(writes, write{out: &outs[i], value: values[i], lastRevision: prev[i].revision, res: r})
	}
	if len(writes) == 0 {
		return outs, nil
	}
	// The audit record of the attempt is acknowledged before anything is
	// written (journal.go); the outcome follows the batch.
	if err := s.before(ctx, changes); err != nil {
		return nil, err
	}
	err = s.publishBatch(ctx, writes)
	s.after(ctx, changes, outs, err)
	if err != nil {
		return nil, err
	}
	return outs, nil
}

// Delete places a delete marker on a resource. expected, when non-zero, must
// be the stored revision.
func (s *Store) Delete(ctx context.Context, ref model.Ref, expected uint64) (uint64, error) {
	if err := s.connected("deleting"); err != nil {
		return 0, err
	}
	cur, err := s.current(ctx, ref)
	if err != nil {
		return 0, err
	}
	if cur.res == nil {
		return 0, notFound(ref)
	}
	if expected != 0 && expected != cur.revision {
		return 0, conflict("%s: expected revision %d but the stored revision is %d: it changed since it was read; get it again", ref, expected, cur.revision)
	}
	changes := []Change{{Ref: ref, Delete: true}}
	if err := s.before(ctx, changes); err != nil {
		return 0, err
	}
	rev, err := s.publish(ctx, ref, nil, cur.revision, true)
	s.after(ctx, changes, []Outcome{{Ref: ref, Changed: true, Revision: rev}}, err)
	return rev, err
}

// connected fails at once, rather than at the caller's deadline, when NATS
// is not reachable: a write could not be acknowledged, and nothing is tried.
func (s *Store) connected(what string) error {
	if nc := s.js.Conn(); !nc.IsConnected() {
		return fmt.Errorf("store: %s: NATS is not reachable (connection %s); nothing was stored: retry once it is back", what, strings.ToLower(nc.Status().String()))
	}
	return nil
}

// publish writes one KV message guarded by the key's last revision.
func (s *Store) publish(ctx context.Context, ref model.Ref, value []byte, lastRevision uint64, del bool) (rev uint64, err error) {
	msg := nats.NewMsg(s.prefix + configkv.Key(ref))
	msg.Data = value
	if del {
		msg.Header.Set("KV-Operation", "DEL")
	}
	if s.tr.On() {
		op := "put"
		if del {
			op = "delete"
		}
		var span trace.Span
		ctx, span = s.tr.Tracer.Start(ctx, telemetry.SpanStorePut, trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				telemetry.AttrConfigKey.String(configkv.Key(ref)),
				telemetry.AttrConfigOperation.String(op),
				telemetry.AttrMessagingSystem.String("nats"),
				telemetry.AttrMessagingDestination.String(msg.Subject),
			))
		// The proxy nodes continue the trace from the message's headers.
		s.tr.InjectNATS(ctx, msg)
		defer func() {
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			} else {
				span.SetAttributes(telemetry.AttrConfigRevision.Int64(int64(rev)))
			}
			span.End()
		}()
	}
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(lastRevision))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return 0, conflict("%s changed while this apply was in progress; nothing was applied: re-apply", ref)
	}
	if err != nil {
		return 0, fmt.Errorf("store: writing %s: %w", ref, err)
	}
	return ack.Sequence, nil
}
