package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"keyway.dev/internal/retry"
)

// The stream and its subjects.
const (
	// StreamName is the JetStream stream of the audit trail.
	StreamName = "keyway-audit"
	// SubjectRoot prefixes every record's subject:
	// keyway.audit.<service>.<action>, e.g. keyway.audit.policy.apply,
	// keyway.audit.secrets.secret.put.
	SubjectRoot = "keyway.audit"
)

// Default limits of the stream: records older than DefaultMaxAge, and the
// oldest records beyond DefaultMaxBytes, are removed.
const (
	DefaultMaxAge   = 90 * 24 * time.Hour
	DefaultMaxBytes = int64(1 << 30)
)

// outcomeQueue bounds the outcome records held for a retry while the stream
// does not acknowledge them.
const outcomeQueue = 4096

// Config says where records go and how long the stream keeps them.
type Config struct {
	// Service is the writing service, ServicePolicy or ServiceSecrets.
	Service string
	// Stream is the stream's name; default StreamName.
	Stream string
	// MaxAge and MaxBytes are the stream's limits; defaults DefaultMaxAge
	// and DefaultMaxBytes. Both services set them when they start: give
	// them the same values.
	MaxAge   time.Duration
	MaxBytes int64
	// Replicas of the stream in a NATS cluster; 1 on one server.
	Replicas int
}

// Writer appends records to the audit stream. Safe for concurrent use.
type Writer struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    Config
	log    *slog.Logger
	now    func() time.Time

	queue   chan Record
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once

	published prometheus.Counter
	errors    prometheus.Counter
	dropped   prometheus.Counter
	pending   prometheus.Gauge
}

// Open creates the stream, or updates its limits to cfg's, and returns a
// Writer publishing into it. [Writer.Close] stops its retries.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*Writer, error) {
	if cfg.Stream == "" {
		cfg.Stream = StreamName
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	switch {
	case cfg.Service != ServicePolicy && cfg.Service != ServiceSecrets:
		return nil, fmt.Errorf("audit: service %q: want %q or %q", cfg.Service, ServicePolicy, ServiceSecrets)
	case cfg.MaxAge < time.Minute:
		return nil, fmt.Errorf("audit: max age %s: give at least 1m (--audit-max-age)", cfg.MaxAge)
	case cfg.MaxBytes < 1<<20:
		return nil, fmt.Errorf("audit: max bytes %d: give at least 1MiB (--audit-max-bytes)", cfg.MaxBytes)
	}
	stream, err := retry.Provision(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        cfg.Stream,
			Description: "Keyway audit trail: one record per write through the policy and secrets APIs",
			Subjects:    []string{SubjectRoot + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      cfg.MaxAge,
			MaxBytes:    cfg.MaxBytes,
			Replicas:    cfg.Replicas,
			Storage:     jetstream.FileStorage,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("audit: creating or updating stream %q: %w", cfg.Stream, err)
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{
		js: js, stream: stream, cfg: cfg, log: log, now: time.Now,
		queue: make(chan Record, outcomeQueue), stop: make(chan struct{}), stopped: make(chan struct{}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyway_audit_published_total",
			Help: "Audit records the keyway-audit stream acknowledged.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyway_audit_publish_errors_total",
			Help: "Audit record publications the stream did not acknowledge (each retry counts). An attempt record that fails stops its write.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyway_audit_dropped_total",
			Help: "Outcome records given up: the retry queue was full or the service stopped before the stream took them. Their attempt records are in the stream.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyway_audit_pending",
			Help: "Outcome records waiting to be retried.",
		}),
	}
	go w.retry() //nolint:gosec // the retry loop outlives the call that made the writer; Close stops it
	return w, nil
}

// Collectors are the writer's metrics, for the service's registry.
func (w *Writer) Collectors() []prometheus.Collector {
	return []prometheus.Collector{w.published, w.errors, w.dropped, w.pending}
}

// Config is the writer's configuration, defaults filled in.
func (w *Writer) Config() Config { return w.cfg }

// Close stops retrying outcome records; those still queued are logged and
// counted as dropped.
func (w *Writer) Close() {
	w.once.Do(func() { close(w.stop) })
	<-w.stopped
}

// Attempt records writes about to be made, each as an "attempt" record,
// and returns once the stream has acknowledged them all. An error means
// some are not recorded: the caller must not make the writes, and should
// tell its caller that nothing was stored.
func (w *Writer) Attempt(ctx context.Context, recs ...Record) error {
	// Fail at once, not at the deadline, while NATS is away: the record
	// could not be acknowledged.
	if nc := w.js.Conn(); !nc.IsConnected() {
		return fmt.Errorf("audit: the audit trail (stream %s) cannot take the record of this write: NATS is not reachable (connection %s)", w.cfg.Stream, strings.ToLower(nc.Status().String()))
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	for _, r := range recs {
		r.Result = ResultAttempt
		if err := w.publish(ctx, w.fill(r)); err != nil {
			return fmt.Errorf("audit: the audit trail (stream %s) did not take the record of this write: %w", w.cfg.Stream, err)
		}
	}
	return nil
}

// Outcome records how writes ended; each record's Result should be
// ResultOK or ResultFailed. It does not fail: a record the stream does not
// acknowledge is logged, counted, and retried in the background with
// jittered backoff until it is, or until the writer closes.
func (w *Writer) Outcome(ctx context.Context, recs ...Record) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, r := range recs {
		r = w.fill(r)
		err := w.publish(ctx, r)
		if err == nil {
			continue
		}
		w.log.Warn("audit record not taken by the stream; retrying in the background",
			"stream", w.cfg.Stream, "action", r.Action, "kind", r.Kind, "name", r.Name, "id", r.ID, "error", err)
		select {
		case w.queue <- r:
			w.pending.Inc()
		default:
			w.dropped.Inc()
			w.log.Error("audit retry queue full; outcome record dropped (its attempt record is in the stream)",
				"action", r.Action, "kind", r.Kind, "name", r.Name, "id", r.ID)
		}
	}
}

func (w *Writer) fill(r Record) Record {
	r.Service = w.cfg.Service
	if r.Time.IsZero() {
		r.Time = w.now().UTC()
	}
	if r.ID == "" {
		r.ID = NewID()
	}
	return r.bounded()
}

// Subject is the subject of a record: keyway.audit.<service>.<action>.
func Subject(service, action string) string {
	return SubjectRoot + "." + token(service) + "." + token(action)
}

// token keeps a subject token to letters, digits, '-', '_' and the dots
// between them.
func token(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '_'
	}, s)
	s = strings.Trim(s, ".")
	if s == "" {
		return "_"
	}
	return s
}

func (w *Writer) publish(ctx context.Context, r Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding: %w", err)
	}
	msg := nats.NewMsg(Subject(r.Service, r.Action))
	msg.Data = data
	// The stream drops a duplicate of a record whose acknowledgement was
	// lost and that is published again within its duplicate window.
	_, err = w.js.PublishMsg(ctx, msg, jetstream.WithMsgID(r.ID+"."+r.Result+"."+r.Kind+"."+r.Name), jetstream.WithExpectStream(w.cfg.Stream))
	if err != nil {
		w.errors.Inc()
		return err
	}
	w.published.Inc()
	return nil
}

// retry publishes queued outcome records until the stream takes them.
func (w *Writer) retry() {
	defer close(w.stopped)
	for {
		var r Record
		select {
		case <-w.stop:
			w.drain()
			return
		case r = <-w.queue:
		}
		for b := retry.New(250*time.Millisecond, 30*time.Second); ; {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := w.publish(ctx, r)
			cancel()
			if err == nil {
				w.pending.Dec()
				w.log.Info("audit record taken by the stream after a retry", "action", r.Action, "kind", r.Kind, "name", r.Name, "id", r.ID)
				break
			}
			t := time.NewTimer(b.Next())
			select {
			case <-w.stop:
				t.Stop()
				w.pending.Dec()
				w.dropped.Inc()
				w.log.Error("audit outcome record dropped at shutdown (its attempt record is in the stream)", "action", r.Action, "kind", r.Kind, "name", r.Name, "id", r.ID)
				w.drain()
				return
			case <-t.C:
			}
		}
	}
}

func (w *Writer) drain() {
	for {
		select {
		case r := <-w.queue:
			w.pending.Dec()
			w.dropped.Inc()
			w.log.Error("audit outcome record dropped at shutdown (its attempt record is in the stream)", "action", r.Action, "kind", r.Kind, "name", r.Name, "id", r.ID)
		default:
			return
		}
	}
}

// Entry is a record read back from the stream.
type Entry struct {
	Sequence uint64
	Record   Record
}

// Read returns the newest records at or after since (all kept, when since
// is zero), at most limit of them, oldest first. It reads the stream
// message by message from its end: limit bounds the work.
func (w *Writer) Read(ctx context.Context, since time.Time, limit int) ([]Entry, error) {
	info, err := w.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: reading stream %s: %w", w.cfg.Stream, err)
	}
	var out []Entry
	for seq := info.State.LastSeq; seq >= info.State.FirstSeq && seq > 0 && len(out) < limit; seq-- {
		msg, err := w.stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("audit: reading record %d of stream %s: %w", seq, w.cfg.Stream, err)
		}
		var r Record
		if err := json.Unmarshal(msg.Data, &r); err != nil {
			w.log.Warn("skipping unreadable audit record", "sequence", seq, "error", err)
			continue
		}
		if !since.IsZero() && r.Time.Before(since) {
			break
		}
		out = append(out, Entry{Sequence: seq, Record: r})
	}
	slices.Reverse(out)
	return out, nil
}
