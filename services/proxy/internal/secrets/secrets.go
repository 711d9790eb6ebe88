// Package secrets resolves a proxy node's references to the secrets service:
// it fetches key pairs and CA bundles from MaterialService (over mTLS), keeps
// the last good version of each by reference, and follows the
// keyway-secret-versions KV bucket, where the secrets service announces each
// new version. On a new version of a reference in use it fetches the new
// material first and then tells the node which reference changed
// ([Options.Changed]), so that the node rebuilds only what depends on it.
//
// When the secrets service or the bucket cannot be reached, the node keeps
// serving with the material it has: [Source.Status] says that it is stale
// and why. Key material is never logged.
package secrets

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/material"
	"keyway.dev/internal/retry"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/telemetry"
)

// Bucket is the KV bucket where the secrets service publishes versions.
const Bucket = secretref.Bucket

// AliasKey is the bucket key of an alias: "alias.<keystore>.<alias>".
func AliasKey(ref secretref.Ref) string { return secretref.AliasKey(ref.Keystore, ref.Alias) }

// TruststoreKey is the bucket key of a truststore: "truststore.<name>".
func TruststoreKey(name string) string { return secretref.TruststoreKey(name) }

// Fetcher fetches material; [material.Client] in production. Safe for
// concurrent use.
type Fetcher interface {
	Alias(ctx context.Context, ref secretref.Ref) (*material.Alias, error)
	Truststore(ctx context.Context, name string) (*material.Truststore, error)
}

// RetryCeiling bounds the growth of retry waits: at most this many times
// Options.RetryInterval.
const RetryCeiling = 30

// Options configure a [Source].
type Options struct {
	// Changed is called, from the Source's goroutine, with the bucket keys
	// (AliasKey, TruststoreKey) whose material was replaced.
	Changed func(keys []string)
	// RetryInterval is the first wait between attempts to fetch material
	// the node is missing or behind on, and to reach the bucket; while
	// attempts keep failing each next wait doubles, up to RetryCeiling
	// times it, every wait jittered ±50% (package retry): a fleet that
	// lost the secrets service does not come back in lockstep. Default 1s.
	RetryInterval time.Duration
	Logger        *slog.Logger
	// Tracing, when on, makes each fetch a [telemetry.SpanSecretFetch]
	// span.
	Tracing telemetry.Tracing
	// Panicked, if set, is called with the stage ("decode", "fetch") of
	// every panic the Source recovers while handling one key; the node
	// counts them in a metric.
	Panicked func(stage string)
}

// Source resolves references. Alias, Truststore and Status are safe for
// concurrent use; Run is called once.
type Source struct {
	fetch Fetcher
	opts  Options
	log   *slog.Logger

	mu          sync.Mutex
	aliases     map[string]*material.Alias      // by AliasKey
	truststores map[string]*material.Truststore // by TruststoreKey
	// used are the keys the node resolved at least once: only those are
	// fetched when a new version is announced.
	used map[string]bool
	// announced is the last version the bucket gave per key.
	announced map[string]string
	// failed are the keys whose last fetch failed, with the error; they
	// are retried with backoff from RetryInterval.
	failed map[string]error
	// watchErr is why the bucket is not being followed; nil when it is.
	watchErr error
	wake     chan struct{}
}

// New returns a Source over fetch; it follows the bucket once Run is called.
// ClientCertificate is the certificate the node presents to the secrets
// service now, when the fetcher says (the MaterialService client does);
// nil otherwise.
func (s *Source) ClientCertificate() *x509.Certificate {
	if c, ok := s.fetch.(interface{ Certificate() *x509.Certificate }); ok {
		return c.Certificate()
	}
	return nil
}

func New(fetch Fetcher, opts Options) *Source {
	opts.RetryInterval = cmp.Or(opts.RetryInterval, time.Second)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Changed == nil {
		opts.Changed = func([]string) {}
	}
	return &Source{
		fetch: fetch, opts: opts, log: opts.Logger,
		aliases: map[string]*material.Alias{}, truststores: map[string]*material.Truststore{},
		used: map[string]bool{}, announced: map[string]string{}, failed: map[string]error{},
		watchErr: errors.New("the secret versions bucket is not followed yet"),
		wake:     make(chan struct{}, 1),
	}
}

// Alias returns the material of an alias: the cached version, or, the first
// time, what MaterialService answers. A failed first fetch is retried in the
// background; Options.Changed tells when it succeeds.
func (s *Source) Alias(ctx context.Context, ref secretref.Ref) (*material.Alias, error) {
	key := AliasKey(ref)
	s.mu.Lock()
	s.used[key] = true
	a := s.aliases[key]
	s.mu.Unlock()
	if a != nil {
		return a, nil
	}
	a, err := s.fetchAlias(ctx, ref)
	s.record(key, a, nil, err)
	if err != nil {
		return nil, err
	}
	return s.currentAlias(key), nil
}

// Truststore is Alias for a truststore.
func (s *Source) Truststore(ctx context.Context, name string) (*material.Truststore, error) {
	key := TruststoreKey(name)
	s.mu.Lock()
	s.used[key] = true
	t := s.truststores[key]
	s.mu.Unlock()
	if t != nil {
		return t, nil
	}
	t, err := s.fetchTruststore(ctx, name)
	s.record(key, nil, t, err)
	if err != nil {
		return nil, err
	}
	return s.currentTruststore(key), nil
}

// OnChange sets Options.Changed on a Source built without it. Call it
// before Run.
func (s *Source) OnChange(f func(keys []string)) { s.opts.Changed = f }

// OnPanic sets Options.Panicked on a Source built without it. Call it
// before Run.
func (s *Source) OnPanic(f func(stage string)) { s.opts.Panicked = f }

// Trace sets Options.Tracing. Call it before Run and before the first
// Alias or Truststore.
func (s *Source) Trace(t telemetry.Tracing) { s.opts.Tracing = t }

// fetchAlias fetches an alias in a [telemetry.SpanSecretFetch] span.
func (s *Source) fetchAlias(ctx context.Context, ref secretref.Ref) (*material.Alias, error) {
	ctx, span := s.opts.Tracing.StartSecretFetch(ctx, "keystore/"+ref.Keystore+"#"+ref.Alias)
	defer span.End()
	a, err := s.fetch.Alias(ctx, ref)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	span.SetAttributes(telemetry.AttrSecretVersion.String(a.Version))
	return a, nil
}

// fetchTruststore fetches a truststore in a [telemetry.SpanSecretFetch] span.
func (s *Source) fetchTruststore(ctx context.Context, name string) (*material.Truststore, error) {
	ctx, span := s.opts.Tracing.StartSecretFetch(ctx, "truststore/"+name)
	defer span.End()
	t, err := s.fetch.Truststore(ctx, name)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	span.SetAttributes(telemetry.AttrSecretVersion.String(t.Version))
	return t, nil
}

func (s *Source) currentAlias(key string) *material.Alias {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.aliases[key]
}

func (s *Source) currentTruststore(key string) *material.Truststore {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.truststores[key]
}

// record keeps the outcome of a fetch and reports whether the material
// changed. A failure keeps the material held.
func (s *Source) record(key string, a *material.Alias, t *material.Truststore, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if prev := s.failed[key]; prev == nil || prev.Error() != err.Error() {
			s.log.Warn("cannot fetch secret material; serving what is held, retrying", "secret", key, "error", err)
		}
		s.failed[key] = err
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return false
	}
	if s.failed[key] != nil {
		s.log.Info("secret material fetched again", "secret", key)
	}
	delete(s.failed, key)
	switch {
	case a != nil:
		prev := s.aliases[key]
		if prev != nil && prev.Version == a.Version && prev.Fingerprint == a.Fingerprint {
			return false
		}
		s.aliases[key] = a
		s.log.Info("secret material loaded", "secret", key, "version", a.Version, "fingerprint", a.Fingerprint, "not_after", a.Certificate.Leaf.NotAfter)
		return prev != nil
	case t != nil:
		prev := s.truststores[key]
		if prev != nil && prev.Version == t.Version && prev.Fingerprint == t.Fingerprint && len(prev.CAs) == len(t.CAs) {
			return false
		}
		s.truststores[key] = t
		s.log.Info("secret material loaded", "secret", key, "version", t.Version, "fingerprint", t.Fingerprint, "cas", len(t.CAs))
		return prev != nil
	}
	return false
}

// Run follows the bucket until ctx ends, fetching announced versions of the
// keys in use and retrying failed fetches. js is the node's JetStream
// context; the bucket is looked up until it exists (the secrets service
// creates it).
func (s *Source) Run(ctx context.Context, js jetstream.JetStream) {
	updates := make(chan jetstream.KeyValueEntry)
	go s.watch(ctx, js, updates)
	retries := retry.New(s.opts.RetryInterval, RetryCeiling*s.opts.RetryInterval)
	timer := time.NewTimer(retries.Next())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-updates:
			s.announce(ctx, e)
		case <-timer.C:
			s.retry(ctx)
			if !s.failing() {
				retries.Reset()
			}
			timer.Reset(retries.Next())
		case <-s.wake:
			// A first fetch failed: the timer retries it.
		}
	}
}

// watch sends the bucket's entries to updates, restarting the watch when it
// breaks; it records why it is not watching for Status.
func (s *Source) watch(ctx context.Context, js jetstream.JetStream, updates chan<- jetstream.KeyValueEntry) {
	ceiling := RetryCeiling * s.opts.RetryInterval
	b := retry.New(s.opts.RetryInterval, ceiling)
	for ctx.Err() == nil {
		started := time.Now()
		err := s.watchOnce(ctx, js, updates)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > ceiling {
			// The watch had been working: retry soon.
			b.Reset()
		}
		s.setWatchErr(err)
		d := b.Next()
		s.log.Warn("not following secret versions; serving held material and retrying", "bucket", Bucket, "error", err, "retry_in", d)
		if !retry.Sleep(ctx, d) {
			return
		}
	}
}

func (s *Source) watchOnce(ctx context.Context, js jetstream.JetStream, updates chan<- jetstream.KeyValueEntry) error {
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return fmt.Errorf("secrets: opening bucket %q: %w", Bucket, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("secrets: watching bucket %q: %w", Bucket, err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("secrets: watch of bucket %q closed", Bucket)
			}
			if e == nil {
				s.setWatchErr(nil) // the current versions are all read
				continue
			}
			select {
			case updates <- e:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

func (s *Source) setWatchErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchErr = err
}

// announce handles one bucket entry: a new version of a key in use is
// fetched, then reported.
func (s *Source) announce(ctx context.Context, e jetstream.KeyValueEntry) {
	key := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		// Deleted in the secrets service: keep serving what is held; the
		// policy service refuses new references to it.
		s.log.Warn("secret deleted in the secrets service; serving the material held", "secret", key)
		return
	}
	var v *secretsv1.SecretVersion
	err := s.guard("decode", key, func() (err error) {
		v, err = secretref.DecodeVersion(e.Value())
		return err
	})
	if err != nil {
		s.log.Warn("ignoring an unreadable secret version", "secret", key, "revision", e.Revision(), "error", err)
		return
	}
	s.mu.Lock()
	s.announced[key] = v.GetVersion()
	inUse := s.used[key]
	held := s.heldVersion(key)
	s.mu.Unlock()
	if !inUse || held == v.GetVersion() {
		return
	}
	s.log.Info("new secret version announced", "secret", key, "version", v.GetVersion(), "held", held, "fingerprint", v.GetSha256Fingerprint())
	s.refresh(ctx, []string{key})
}

// heldVersion is the version of the material held for key; s.mu is held.
func (s *Source) heldVersion(key string) string {
	if a := s.aliases[key]; a != nil {
		return a.Version
	}
	if t := s.truststores[key]; t != nil {
		return t.Version
	}
	return ""
}

// retry fetches again what failed, and what is behind the announced
// version.
// failing reports whether some key's last fetch failed.
func (s *Source) failing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.failed) > 0
}

func (s *Source) retry(ctx context.Context) {
	s.mu.Lock()
	var keys []string
	for key := range s.failed {
		keys = append(keys, key)
	}
	for key, v := range s.announced {
		if s.used[key] && s.failed[key] == nil && s.heldVersion(key) != v && s.heldVersion(key) != "" {
			keys = append(keys, key)
		}
	}
	s.mu.Unlock()
	if len(keys) > 0 {
		s.refresh(ctx, keys)
	}
}

// refresh fetches keys and reports those whose material changed (or that
// the node had none of before).
func (s *Source) refresh(ctx context.Context, keys []string) {
	var changed []string
	for _, key := range keys {
		ref, err := secretref.ParseKey(key)
		if err != nil {
			continue
		}
		var got bool
		switch {
		case ref.Truststore == "":
			had := s.currentAlias(key) != nil
			var a *material.Alias
			err := s.guard("fetch", key, func() (err error) {
				a, err = s.fetchAlias(ctx, ref)
				return err
			})
			got = s.record(key, a, nil, err) || (!had && err == nil)
		default:
			had := s.currentTruststore(key) != nil
			var t *material.Truststore
			err := s.guard("fetch", key, func() (err error) {
				t, err = s.fetchTruststore(ctx, ref.Truststore)
				return err
			})
			got = s.record(key, nil, t, err) || (!had && err == nil)
		}
		if got {
			changed = append(changed, key)
		}
	}
	if len(changed) > 0 {
		s.opts.Changed(changed)
	}
}

// Status is what a node reports about its secret material.
type Status struct {
	// Stale is set when the node may be serving material older than the
	// secrets service holds: a fetch failed, or the versions bucket is
	// not followed.
	Stale  bool   `json:"stale"`
	Reason string `json:"reason,omitempty"`
	// References are the aliases and truststores in use, by key.
	References []Reference `json:"references"`
}

// Reference is one alias or truststore in use.
type Reference struct {
	// Ref is "alias/<keystore>/<alias>" or "truststore/<name>".
	Ref         string    `json:"ref"`
	Version     string    `json:"version,omitempty"`
	Announced   string    `json:"announced,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	NotAfter    time.Time `json:"notAfter,omitzero"`
	Error       string    `json:"error,omitempty"`
}

// Status reports staleness and the references held.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st Status
	var reasons []string
	if s.watchErr != nil {
		reasons = append(reasons, s.watchErr.Error())
	}
	for _, key := range slices.Sorted(maps.Keys(s.used)) {
		r := Reference{Ref: displayRef(key), Announced: s.announced[key]}
		if a := s.aliases[key]; a != nil {
			r.Version, r.Fingerprint, r.NotAfter = a.Version, a.Fingerprint, a.Certificate.Leaf.NotAfter
		}
		if t := s.truststores[key]; t != nil {
			r.Version, r.Fingerprint = t.Version, t.Fingerprint
		}
		if err := s.failed[key]; err != nil {
			r.Error = err.Error()
			reasons = append(reasons, err.Error())
		}
		st.References = append(st.References, r)
	}
	st.Stale = len(reasons) > 0
	st.Reason = strings.Join(reasons, "; ")
	return st
}

// displayRef turns a bucket key into the form status pages use.
func displayRef(key string) string {
	ref, err := secretref.ParseKey(key)
	if err != nil {
		return key
	}
	return ref.String()
}

// guard runs f, one step of handling key, turning a panic into an error:
// the panic is counted and logged (bounded; the stack at debug level), and
// the key keeps the material held, as after any failed fetch.
func (s *Source) guard(stage, key string, f func() error) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if s.opts.Panicked != nil {
			s.opts.Panicked(stage)
		}
		v := fmt.Sprint(r)
		if len(v) > 200 {
			v = v[:200] + "…"
		}
		stack := debug.Stack()
		if len(stack) > 8<<10 {
			stack = stack[:8<<10]
		}
		s.log.Error("recovered a panic; keeping the material held", "stage", stage, "secret", key, "panic", v)
		s.log.Debug("stack of the recovered panic", "stage", stage, "secret", key, "stack", string(stack))
		err = fmt.Errorf("secrets: panic recovered in %s: %s", stage, v)
	}()
	return f()
}
