// Package leader elects one secrets replica to issue and renew Vault PKI
// certificates, with a lease in a NATS JetStream KV bucket of its own
// (keyway-secrets-leader): one key, created by the candidate that takes
// the lease (kv.Create fails while another holds it) and refreshed by its
// holder every TTL/3 with the revision it last wrote (kv.Update), so that
// only the holder can refresh it.
//
// The bucket's maximum age is the TTL: a lease not refreshed expires on
// the server. A holder that has not refreshed for 2/3 of the TTL steps down
// on its own clock, a third of the TTL before the key can expire and
// another candidate take it, so two replicas never act as leader at once
// unless their clocks drift apart by more than that. A clean stop deletes
// the key, and the candidates, which watch it, take over at once.
package leader

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/retry"
)

// DefaultBucket is the lease's bucket.
const DefaultBucket = "keyway-secrets-leader"

// DefaultTTL is how long a lease lives without a refresh.
const DefaultTTL = 15 * time.Second

// key is the lease's one key.
const key = "pki-issuer"

// Config places and times the lease.
type Config struct {
	// Bucket is the lease's bucket (DefaultBucket when empty).
	Bucket string
	// Replicas of the bucket in a NATS cluster, as the versions bucket's.
	Replicas int
	// TTL is how long a lease lives without a refresh (DefaultTTL when
	// zero).
	TTL time.Duration
	// ID names this candidate in the lease's value and the logs; it
	// must be unique among the candidates (hostname, process id and a
	// random suffix when empty).
	ID string
	// OnChange is called with true when this candidate becomes the
	// leader and with false when it stops being one, from the
	// election's goroutine, in order; it must not block for long.
	OnChange func(leading bool)
	Log      *slog.Logger
}

// Lease is one candidate. Leader is safe for concurrent use.
type Lease struct {
	kv   jetstream.KeyValue
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	kick chan struct{}

	mu      sync.Mutex
	leading bool
	// rev is the lease's revision this candidate last wrote.
	rev uint64
	// deadline is when a holder steps down unless it refreshes: 2/3 of
	// the TTL after the start of its last successful write.
	deadline time.Time
}

// Open creates (or opens) the bucket. The candidate campaigns once
// [Lease.Start] is called.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Lease, error) {
	cfg.Bucket = cmp.Or(cfg.Bucket, DefaultBucket)
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = cmp.Or(host, "keyway-secrets") + "/" + strconv.Itoa(os.Getpid()) + "/" + rand.Text()[:8]
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	kv, err := retry.Provision(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      cfg.Bucket,
			Description: "Keyway secrets service: the lease of the replica that issues and renews Vault PKI certificates",
			History:     1,
			// The lease expires when its holder stops refreshing it; the
			// marker left by the expiry wakes the candidates' watches.
			TTL:            cfg.TTL,
			LimitMarkerTTL: cfg.TTL,
			Replicas:       cfg.Replicas,
			// A NATS restart must not forget a held lease: another
			// candidate would take it while the holder still leads.
			Storage: jetstream.FileStorage,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("leader: opening bucket %q: %w", cfg.Bucket, err)
	}
	return &Lease{kv: kv, cfg: cfg, log: cfg.Log.With("lease", cfg.Bucket+"/"+key, "candidate", cfg.ID), now: time.Now, kick: make(chan struct{}, 1)}, nil
}

// Leader reports whether this candidate holds the lease now. It turns
// false as soon as the holder's refresh is overdue, even before
// OnChange is told.
func (l *Lease) Leader() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leading && l.now().Before(l.deadline)
}

// ID is the candidate's name.
func (l *Lease) ID() string { return l.cfg.ID }

// Start campaigns until ctx is done: it tries to take the lease once
// before it returns (so that [Lease.Leader] answers at once), then, in a
// goroutine, takes the lease whenever it is free and refreshes it while
// held. When ctx is done it gives the lease up (deleting the key, so
// another candidate takes over at once) and closes the returned channel.
func (l *Lease) Start(ctx context.Context) <-chan struct{} {
	l.step(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx)
	}()
	return done
}

func (l *Lease) run(ctx context.Context) {
	go l.watch(ctx)
	period := l.cfg.TTL / 3
	for {
		wait := period
		if d, leading := l.holding(); leading {
			wait = min(wait, max(d.Sub(l.now()), 0))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			l.resign()
			return
		case <-t.C:
		case <-l.kick:
			t.Stop()
		}
		l.step(ctx)
	}
}

func (l *Lease) holding() (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline, l.leading
}

// step refreshes a held lease, steps down when the refresh is overdue,
// or tries to take a free one.
func (l *Lease) step(ctx context.Context) {
	deadline, leading := l.holding()
	start := l.now()
	if leading {
		if !start.Before(deadline) {
			l.stepDown("the lease was not refreshed for 2/3 of its TTL")
			return
		}
		// The call may not outlast the deadline: a holder steps down on
		// time even when NATS does not answer.
		cctx, cancel := context.WithDeadline(ctx, deadline)
		l.mu.Lock()
		rev := l.rev
		l.mu.Unlock()
		next, err := l.kv.Update(cctx, key, []byte(l.cfg.ID), rev)
		cancel()
		switch {
		case err == nil:
			l.mu.Lock()
			l.rev, l.deadline = next, start.Add(l.cfg.TTL*2/3)
			l.mu.Unlock()
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			// An earlier refresh may have landed without its answer
			// reaching us: the lease is still ours if it holds our
			// name, and the next refresh uses its revision. The
			// deadline stays, since when it landed is not known.
			if e, gerr := l.kv.Get(ctx, key); gerr == nil && string(e.Value()) == l.cfg.ID && e.Operation() == jetstream.KeyValuePut {
				l.mu.Lock()
				l.rev = e.Revision()
				l.mu.Unlock()
				return
			}
			l.stepDown("another candidate holds the lease")
		case ctx.Err() != nil:
		default:
			if !l.now().Before(deadline) {
				l.stepDown("the lease could not be refreshed for 2/3 of its TTL: " + err.Error())
				return
			}
			l.log.Warn("refreshing the PKI leader lease failed; retrying", "error", err, "step_down_at", deadline.UTC())
		}
		return
	}
	cctx, cancel := context.WithTimeout(ctx, l.cfg.TTL/3)
	rev, err := l.kv.Create(cctx, key, []byte(l.cfg.ID))
	cancel()
	switch {
	case err == nil:
		l.mu.Lock()
		l.leading, l.rev, l.deadline = true, rev, start.Add(l.cfg.TTL*2/3)
		l.mu.Unlock()
		l.log.Info("PKI leader: this replica now issues and renews Vault PKI certificates")
		l.notify(true)
	case errors.Is(err, jetstream.ErrKeyExists), ctx.Err() != nil:
	default:
		l.log.Debug("cannot campaign for the PKI leader lease; retrying", "error", err)
	}
}

func (l *Lease) stepDown(why string) {
	l.mu.Lock()
	was := l.leading
	l.leading = false
	l.mu.Unlock()
	if was {
		l.log.Warn("PKI leader: this replica stepped down and no longer issues or renews", "reason", why)
		l.notify(false)
	}
}

func (l *Lease) notify(leading bool) {
	if l.cfg.OnChange != nil {
		l.cfg.OnChange(leading)
	}
}

// resign gives the lease up: the key is deleted (only if it is still the
// revision this candidate wrote), so a candidate takes over at once.
func (l *Lease) resign() {
	l.mu.Lock()
	was, rev := l.leading, l.rev
	l.leading = false
	l.mu.Unlock()
	if !was {
		return
	}
	l.notify(false)
	ctx, cancel := context.WithTimeout(context.Background(), max(l.cfg.TTL/3, time.Second))
	defer cancel()
	if err := l.kv.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
		l.log.Warn("PKI leader: stepped down, but the lease could not be released; another replica takes over when it expires", "error", err)
		return
	}
	l.log.Info("PKI leader: stepped down and released the lease")
}

// watch wakes the campaign when the lease is released or expires, so that
// a candidate takes it at once rather than at its next try.
func (l *Lease) watch(ctx context.Context) {
	w, err := l.kv.Watch(ctx, key, jetstream.UpdatesOnly())
	if err != nil {
		l.log.Debug("cannot watch the PKI leader lease; candidates try at every period", "error", err)
		return
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				select {
				case l.kick <- struct{}{}:
				default:
				}
			}
		}
	}
}
