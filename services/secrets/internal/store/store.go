// Package store is the secrets service's core: an in-memory view of every
// alias and truststore over a [Backend], kept current by polling the
// backend's versions, with certificates issued from Vault PKI and renewed
// before they expire, and a [SecretVersion] published for every change.
//
// Certificates issued from Vault PKI are stored in the backend with their
// binding, and every replica serves what the backend holds: only the
// leader (Config.Leader) issues for a binding that has none and renews,
// a put is issued by the replica that takes it, and the others load the
// stored certificate, so all publish the same version (its serial).
//
// Reads are served from the view, so a backend that goes away leaves the
// service serving the material it last fetched; writes go to the backend
// and then into the view.
//
// A value the backend holds is held to the rules of a put (package
// validate) before it is served: one written straight into Vault that
// breaks them (a key that does not match, an expired certificate, a weak
// key, PEM that does not parse) is rejected. The last good version stays
// served and published, and the rejection (which version, why) is kept
// with the secret for the API and the metrics until the backend holds a
// good version again.
package store

import (
	"cmp"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/secretref"
	"keyway.dev/secrets/internal/pki"
	"keyway.dev/secrets/internal/secret"
	"keyway.dev/secrets/internal/validate"
)

// Backend stores aliases and truststores. Implementations are safe for
// concurrent use and return [secret.ErrNotFound] for what does not exist;
// any other error means the backend could not answer.
type Backend interface {
	// Kind says which backend this is, for the API.
	Kind() secretsv1.Backend
	// Describe names the backend for logs ("vault http://…, KV v2 secret/keyway").
	Describe() string
	// List returns the revision of every alias and truststore (see
	// secret.AliasRecord.Revision). It reads metadata only and is called
	// at every poll.
	List(ctx context.Context) (map[secretref.Ref]string, error)
	GetAlias(ctx context.Context, keystore, alias string) (*secret.AliasRecord, error)
	GetTruststore(ctx context.Context, name string) (*secret.TruststoreRecord, error)
	// PutAlias and PutTruststore store a new version and say which.
	PutAlias(ctx context.Context, rec *secret.AliasRecord) (secret.Stamp, error)
	PutTruststore(ctx context.Context, rec *secret.TruststoreRecord) (secret.Stamp, error)
	DeleteAlias(ctx context.Context, keystore, alias string) error
	DeleteTruststore(ctx context.Context, name string) error
	// Fields names where the backend keeps each part of a secret, for
	// messages about the values it holds.
	Fields() secret.Fields
}

// Issuer issues certificates from Vault PKI roles. Safe for concurrent use.
type Issuer interface {
	// Issue returns a new chain (leaf first, PEM) and its key.
	Issue(ctx context.Context, b *secret.PKIBinding) (string, secret.PrivateKey, error)
	// CheckRole returns secret.ErrNotFound for a role that does not exist.
	CheckRole(ctx context.Context, role string) error
	// Mount is the PKI mount, for messages.
	Mount() string
}

// Publisher writes bucket values. Safe for concurrent use.
type Publisher interface {
	// Put stores value under key (a no-op when it is there already).
	Put(ctx context.Context, key string, value []byte) error
	// Delete puts a delete marker on key.
	Delete(ctx context.Context, key string) error
	// Keys lists the bucket's live keys.
	Keys(ctx context.Context) ([]string, error)
}

// Observer is told what the store does: the service's metrics. Safe for
// concurrent use.
type Observer interface {
	BackendUp(up bool)
	Published(ok bool)
	Renewed(ok bool)
	// Rejected is told once per backend version refused: kind is "alias"
	// or "truststore".
	Rejected(kind string, reason validate.Reason)
}

type discard struct{}

func (discard) BackendUp(bool)                   {}
func (discard) Published(bool)                   {}
func (discard) Renewed(bool)                     {}
func (discard) Rejected(string, validate.Reason) {}

// Errors the API maps to codes.
var (
	// ErrNotFound: no such alias or truststore.
	ErrNotFound = errors.New("store: not found")
	// ErrUnavailable: the backend (or Vault PKI) could not answer.
	ErrUnavailable = errors.New("store: backend unavailable")
	// ErrInvalid: the backend holds a value the service cannot use, or
	// PKI refused to issue.
	ErrInvalid = errors.New("store: unusable secret")
)

// Config tunes the store.
type Config struct {
	// PollInterval is how often the backend's versions are read.
	PollInterval time.Duration
	// RenewFraction of a PKI certificate's lifetime after which a new one
	// is issued (pki.DefaultRenewFraction when zero).
	RenewFraction float64
	// Leader reports whether this replica issues and renews PKI
	// certificates; nil means it always does (a single replica).
	Leader func() bool
}

// Store is the view. Safe for concurrent use.
type Store struct {
	backend Backend
	issuer  Issuer // nil without Vault
	pub     Publisher
	obs     Observer
	log     *slog.Logger
	cfg     Config
	now     func() time.Time

	// writes serialises everything that changes the view: polls, puts,
	// deletes, renewals. Reads take only mu.
	writes sync.Mutex

	mu          sync.RWMutex
	aliases     map[secretref.Ref]*Alias
	truststores map[secretref.Ref]*Truststore
	backendErr  error
	// rejected holds, per secret, the backend's current version when the
	// service refused to serve it; polls do not read it again until its
	// revision changes (except a certificate not valid yet, which time
	// may make good).
	rejected map[secretref.Ref]*Rejection
	// unpublished holds bucket writes that failed, by key: the value, or
	// nil for a delete marker. Each poll retries them.
	unpublished map[string][]byte
	// reconciled is set once stale bucket keys have been deleted. Guarded
	// by writes.
	reconciled bool
	// awaiting holds, per PKI alias whose backend version carries no
	// usable certificate, that version's revision: a follower waits for
	// the leader to issue and store one, and does not read it again until
	// the revision changes. Guarded by mu.
	awaiting map[secretref.Ref]string
	// wake runs a pass of Run at once (leadership gained).
	wake chan struct{}
}

// Alias is an alias as the service holds it. Immutable once in the view.
type Alias struct {
	Record *secret.AliasRecord
	// ChainPEM is the chain, leaf first; for a PKI alias, the issued one.
	ChainPEM string
	Key      secret.PrivateKey
	Chain    []*x509.Certificate
	// Version is what the API and the bucket show: the backend's version,
	// or for a PKI alias the serial of the certificate held.
	Version string
	// RenewAt is when a PKI alias is issued anew.
	RenewAt time.Time
	// IssuedAt is when a PKI certificate was issued (else the record's
	// update time).
	IssuedAt time.Time
}

// Truststore is a truststore as the service holds it. Immutable.
type Truststore struct {
	Record *secret.TruststoreRecord
	Certs  []*x509.Certificate
}

// Rejection is a version the backend holds that the service refused to
// serve. Immutable.
type Rejection struct {
	// Version is the backend's version refused; empty when its answer
	// carried none.
	Version string
	// Revision is the revision List reported for it.
	Revision string
	// Reason classes the first problem; Message lists them all, each
	// with its fix.
	Reason  validate.Reason
	Message string
	// Time is when the service first refused this version.
	Time time.Time
}

// New returns a store; call [Store.Run] to load and follow the backend.
// issuer is nil when there is no Vault; obs may be nil.
func New(b Backend, issuer Issuer, pub Publisher, obs Observer, log *slog.Logger, cfg Config) *Store {
	if obs == nil {
		obs = discard{}
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 5 * time.Second
	}
	if cfg.RenewFraction <= 0 || cfg.RenewFraction >= 1 {
		cfg.RenewFraction = pki.DefaultRenewFraction
	}
	return &Store{
		backend: b, issuer: issuer, pub: pub, obs: obs, log: log, cfg: cfg, now: time.Now,
		aliases:     make(map[secretref.Ref]*Alias),
		truststores: make(map[secretref.Ref]*Truststore),
		rejected:    make(map[secretref.Ref]*Rejection),
		unpublished: make(map[string][]byte),
		awaiting:    make(map[secretref.Ref]string),
		wake:        make(chan struct{}, 1),
	}
}

// leader reports whether this replica issues and renews.
func (s *Store) leader() bool { return s.cfg.Leader == nil || s.cfg.Leader() }

// Wake makes [Store.Run] poll (and renew, when leader) at once: call it
// when this replica becomes the PKI leader, so that what waits for a
// certificate gets one without waiting for the next poll.
func (s *Store) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Kind is the backend's kind.
func (s *Store) Kind() secretsv1.Backend { return s.backend.Kind() }

// PKIMount is the Vault PKI mount, for messages; empty without Vault.
func (s *Store) PKIMount() string {
	if s.issuer == nil {
		return ""
	}
	return s.issuer.Mount()
}

// PKIAvailable reports whether aliases can be issued from Vault PKI.
func (s *Store) PKIAvailable() bool { return s.issuer != nil }

// Load reads everything the backend holds into the view, issues the PKI
// aliases, and makes the bucket match: every secret published, and keys of
// secrets that no longer exist deleted. A backend that cannot be reached is
// an error; a bucket that cannot be written is retried by [Store.Run].
func (s *Store) Load(ctx context.Context) error {
	s.writes.Lock()
	defer s.writes.Unlock()
	if err := s.poll(ctx); err != nil {
		return err
	}
	s.reconcile(ctx)
	return nil
}

// reconcile deletes the bucket's keys of secrets the view does not hold
// (deleted while no service ran). Callers hold writes, after a poll that
// reached the backend.
func (s *Store) reconcile(ctx context.Context) {
	keys, err := s.pub.Keys(ctx)
	if err != nil {
		s.log.Warn("cannot list the versions bucket; stale keys stay until the next start", "error", err)
		s.reconciled = true
		return
	}
	s.reconciled = true
	s.mu.RLock()
	var stale []string
	for _, k := range keys {
		ref, err := secretref.ParseKey(k)
		if err != nil {
			continue
		}
		_, isAlias := s.aliases[ref]
		_, isTS := s.truststores[ref]
		// A secret whose only version is rejected still exists: its key
		// keeps announcing what was served before.
		_, isRejected := s.rejected[ref]
		// A PKI alias waiting for the leader keeps its key too.
		_, isAwaiting := s.awaiting[ref]
		if !isAlias && !isTS && !isRejected && !isAwaiting {
			stale = append(stale, k)
		}
	}
	s.mu.RUnlock()
	for _, k := range stale {
		s.publish(ctx, k, nil)
	}
}

// Run follows the backend until ctx is done: a poll every PollInterval,
// and PKI renewals when they are due.
func (s *Store) Run(ctx context.Context) {
	for {
		wait := s.cfg.PollInterval
		if next := s.nextRenewal(); !next.IsZero() {
			wait = min(wait, max(next.Sub(s.now()), 10*time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.wake:
			t.Stop()
		}
		s.writes.Lock()
		s.renewDue(ctx)
		if err := s.poll(ctx); err == nil && !s.reconciled {
			// The backend was away at start: the bucket is made
			// complete at the first poll that reaches it.
			s.reconcile(ctx)
		}
		s.flush(ctx)
		s.writes.Unlock()
	}
}

func (s *Store) nextRenewal() time.Time {
	if !s.leader() {
		return time.Time{} // followers load renewals from the backend
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var next time.Time
	for _, a := range s.aliases {
		if !a.RenewAt.IsZero() && (next.IsZero() || a.RenewAt.Before(next)) {
			next = a.RenewAt
		}
	}
	return next
}

// setBackend records whether the backend answered, logging transitions.
func (s *Store) setBackend(err error) {
	s.mu.Lock()
	was := s.backendErr
	s.backendErr = err
	s.mu.Unlock()
	switch {
	case err != nil && was == nil:
		s.log.Warn("secrets backend unavailable; serving the last fetched material", "backend", s.backend.Describe(), "error", err)
	case err == nil && was != nil:
		s.log.Info("secrets backend reachable again; catching up", "backend", s.backend.Describe())
	}
	s.obs.BackendUp(err == nil)
}

// BackendError is nil while the backend answers, otherwise why it did not
// at the last attempt.
func (s *Store) BackendError() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.backendErr
}

// poll reads the backend's versions and loads what changed. Callers hold
// writes.
func (s *Store) poll(ctx context.Context) error {
	versions, err := s.backend.List(ctx)
	if err != nil {
		s.setBackend(err)
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.setBackend(nil)
	leader := s.leader()
	s.mu.RLock()
	var changed []secretref.Ref
	for ref, v := range versions {
		if r := s.rejected[ref]; r != nil && r.Revision == v && r.Reason != validate.ReasonNotYetValid {
			continue
		}
		if r, ok := s.awaiting[ref]; ok && r == v && !leader {
			continue
		}
		if ref.Truststore != "" {
			if t := s.truststores[ref]; t == nil || t.Record.Revision != v {
				changed = append(changed, ref)
			}
		} else if a := s.aliases[ref]; a == nil || a.Record.Revision != v {
			changed = append(changed, ref)
		}
	}
	var gone []secretref.Ref
	for ref := range s.aliases {
		if _, ok := versions[ref]; !ok {
			gone = append(gone, ref)
		}
	}
	for ref := range s.truststores {
		if _, ok := versions[ref]; !ok {
			gone = append(gone, ref)
		}
	}
	for ref := range s.rejected {
		_, held := s.aliases[ref]
		_, heldTS := s.truststores[ref]
		if _, ok := versions[ref]; !ok && !held && !heldTS {
			gone = append(gone, ref)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(changed, func(a, b secretref.Ref) int { return compareKeys(a.Key(), b.Key()) })
	for _, ref := range changed {
		if err := s.load(ctx, ref, versions[ref]); err != nil {
			if errors.Is(err, ErrUnavailable) {
				s.setBackend(err)
				return err
			}
			continue
		}
	}
	for _, ref := range gone {
		s.forget(ctx, ref, "deleted in the backend")
	}
	return nil
}

func compareKeys(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// load reads one secret from the backend, checks it with the rules of a
// put, and puts it into the view and publishes it, or records why it was
// rejected. listed is the revision List reported ("" when the secret is
// read on demand).
func (s *Store) load(ctx context.Context, ref secretref.Ref, listed string) error {
	now := s.now()
	fields := s.backend.Fields()
	if ref.Truststore != "" {
		rec, err := s.backend.GetTruststore(ctx, ref.Truststore)
		if err != nil {
			return s.loadError(ref, listed, err)
		}
		r := validate.Bundle(fields.Bundle, rec.CertificatesPEM, now)
		if !r.OK() {
			err := s.reject(ref, cmp.Or(listed, rec.Revision), rec.Version, r.Reason(), violations(r))
			s.serveEarlier(ctx, ref, rec.Version)
			return err
		}
		s.installTruststore(ctx, ref, &Truststore{Record: rec, Certs: r.Chain}, "backend", true)
		return nil
	}
	rec, err := s.backend.GetAlias(ctx, ref.Keystore, ref.Alias)
	if err != nil {
		return s.loadError(ref, listed, err)
	}
	listed = cmp.Or(listed, rec.Revision)
	var a *Alias
	if rec.PKI != nil {
		if a, err = s.loadPKI(ctx, ref, rec, listed); err != nil {
			if errors.Is(err, ErrInvalid) {
				return s.reject(ref, listed, rec.Version, validate.ReasonPKI, strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
			}
			return err
		}
	} else {
		r := validate.KeyPair(fields, rec.CertificatePEM, string(rec.Key.PEM()), rec.Usage, now)
		if !r.OK() {
			err := s.reject(ref, listed, rec.Version, r.Reason(), violations(r))
			s.serveEarlier(ctx, ref, rec.Version)
			return err
		}
		if a, err = newAlias(rec, rec.CertificatePEM, rec.Key, rec.UpdateTime); err != nil {
			return s.reject(ref, listed, rec.Version, validate.ReasonUnparsable, err.Error())
		}
	}
	s.installAlias(ctx, ref, a, "backend", true)
	return nil
}

// History is a backend that keeps earlier versions of a secret (Vault KV
// v2). Safe for concurrent use; a version deleted, destroyed or never
// written is secret.ErrNotFound.
type History interface {
	GetAliasVersion(ctx context.Context, keystore, alias string, version int) (*secret.AliasRecord, error)
	GetTruststoreVersion(ctx context.Context, name string, version int) (*secret.TruststoreRecord, error)
}

// maxLookback bounds how many earlier versions serveEarlier reads.
const maxLookback = 10

// serveEarlier serves the newest good earlier version of ref when its
// current version (current) was rejected and the service holds none: a
// service that starts after a bad value was written keeps serving the
// last good one, as one that was running does. It reads at most
// maxLookback versions; PKI bindings are not looked back on.
func (s *Store) serveEarlier(ctx context.Context, ref secretref.Ref, current string) {
	h, ok := s.backend.(History)
	if !ok {
		return
	}
	s.mu.RLock()
	_, held := s.aliases[ref]
	_, heldTS := s.truststores[ref]
	s.mu.RUnlock()
	cur, err := strconv.Atoi(current)
	if held || heldTS || err != nil {
		return
	}
	now, fields := s.now(), s.backend.Fields()
	for v := cur - 1; v >= 1 && v >= cur-maxLookback; v-- {
		var err error
		if ref.Truststore != "" {
			var rec *secret.TruststoreRecord
			if rec, err = h.GetTruststoreVersion(ctx, ref.Truststore, v); err == nil {
				if r := validate.Bundle(fields.Bundle, rec.CertificatesPEM, now); r.OK() {
					s.installTruststore(ctx, ref, &Truststore{Record: rec, Certs: r.Chain}, "earlier version", false)
					s.log.Warn("serving an earlier good version: the current one is rejected", "truststore", ref.Truststore, "version", rec.Version, "rejected_version", current)
					return
				}
			}
		} else {
			var rec *secret.AliasRecord
			if rec, err = h.GetAliasVersion(ctx, ref.Keystore, ref.Alias, v); err == nil && rec.PKI == nil {
				if r := validate.KeyPair(fields, rec.CertificatePEM, string(rec.Key.PEM()), rec.Usage, now); r.OK() {
					if a, aerr := newAlias(rec, rec.CertificatePEM, rec.Key, rec.UpdateTime); aerr == nil {
						s.installAlias(ctx, ref, a, "earlier version", false)
						s.log.Warn("serving an earlier good version: the current one is rejected", "keystore", ref.Keystore, "alias", ref.Alias, "version", rec.Version, "rejected_version", current)
						return
					}
				}
			}
		}
		if err != nil && !errors.Is(err, secret.ErrNotFound) {
			return // the backend stopped answering: the next change retries
		}
	}
}

// violations joins a report's errors into one message.
func violations(r *validate.Report) string {
	msgs := make([]string, len(r.Errors))
	for i, v := range r.Errors {
		msgs[i] = v.Message
	}
	return strings.Join(msgs, "; ")
}

// loadError sorts an error of a backend read: a secret gone meanwhile, a
// backend that did not answer, or a value it holds that cannot be used
// (rejected).
func (s *Store) loadError(ref secretref.Ref, listed string, err error) error {
	switch {
	case errors.Is(err, secret.ErrNotFound):
		return err // deleted between List and Get: the next poll forgets it
	case errors.Is(err, secret.ErrInvalidValue):
		version, _, _ := strings.Cut(listed, "@") // a revision starts with its version
		return s.reject(ref, listed, version, validate.ReasonInvalid, err.Error())
	case errors.Is(err, ErrUnavailable):
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// reject records that the backend's version of ref cannot be served, logs
// and counts it once per version and reason, and returns ErrInvalid with
// the reason. The view keeps what it served.
func (s *Store) reject(ref secretref.Ref, revision, version string, reason validate.Reason, msg string) error {
	r := &Rejection{Version: version, Revision: revision, Reason: reason, Message: msg, Time: s.now()}
	s.mu.Lock()
	old := s.rejected[ref]
	again := old != nil && old.Version == version && old.Reason == reason
	if again {
		r.Time = old.Time
	}
	s.rejected[ref] = r
	var serving string
	if a := s.aliases[ref]; a != nil {
		serving = a.Version
	} else if t := s.truststores[ref]; t != nil {
		serving = t.Record.Version
	}
	s.mu.Unlock()
	kind := "alias"
	attrs := []any{"keystore", ref.Keystore, "alias", ref.Alias}
	if ref.Truststore != "" {
		kind, attrs = "truststore", []any{"truststore", ref.Truststore}
	}
	if !again {
		s.obs.Rejected(kind, reason)
		attrs = append(attrs, "version", version, "reason", string(reason), "serving_version", serving, "error", msg)
		if serving == "" {
			s.log.Error("secret rejected: the backend's version breaks the rules of a put, and the service held no version of it yet", attrs...)
		} else {
			s.log.Error("secret rejected: the backend's version breaks the rules of a put; keeping the last good version", attrs...)
		}
	}
	return fmt.Errorf("%w: %s version %s was rejected (%s): %s", ErrInvalid, describeRef(ref), cmp.Or(version, "?"), reason, msg)
}

// describeRef names a secret in messages: "alias edge/gw", "truststore cas".
func describeRef(ref secretref.Ref) string {
	return ref.Kind() + " " + ref.Name()
}

// errAwaitingLeader: a follower holds a PKI binding whose backend version
// carries no usable certificate, and waits for the leader to store one.
var errAwaitingLeader = errors.New("store: waiting for the PKI leader")

// loadPKI makes the alias of a PKI binding read from the backend: the
// certificate stored with it when there is a usable one for the binding;
// otherwise, on the leader, a new one issued and stored, and on a follower
// errAwaitingLeader.
func (s *Store) loadPKI(ctx context.Context, ref secretref.Ref, rec *secret.AliasRecord, listed string) (*Alias, error) {
	why := "no certificate has been issued for it yet"
	if rec.CertificatePEM != "" || len(rec.Key.PEM()) > 0 {
		a, err := s.pkiAlias(rec)
		if err == nil {
			return a, nil
		}
		why = err.Error()
	}
	if !s.leader() {
		s.mu.Lock()
		_, known := s.awaiting[ref]
		s.awaiting[ref] = listed
		s.mu.Unlock()
		if !known {
			s.log.Info("PKI alias waits for the leader to issue its certificate", "keystore", ref.Keystore, "alias", ref.Alias, "version", rec.Version, "reason", why)
		}
		return nil, fmt.Errorf("%w: alias %s is bound to PKI role %q and %s; the PKI leader issues it", errAwaitingLeader, ref, rec.PKI.Role, why)
	}
	s.log.Info("issuing a PKI certificate for a binding without a usable one", "keystore", ref.Keystore, "alias", ref.Alias, "role", rec.PKI.Role, "version", rec.Version, "reason", why)
	issued, err := s.issue(ctx, rec)
	if err != nil {
		return nil, err
	}
	return s.storeIssued(ctx, issued, rec.Version)
}

// pkiAlias is the alias of a PKI record with the certificate stored with
// it, held to the rules of a put and to the binding's names. Its version
// is the certificate's serial and its renewal time derives from the
// certificate, so every replica that loads it publishes the same version.
func (s *Store) pkiAlias(rec *secret.AliasRecord) (*Alias, error) {
	r := validate.KeyPair(s.backend.Fields(), rec.CertificatePEM, string(rec.Key.PEM()), rec.Usage, s.now())
	if !r.OK() {
		return nil, errors.New("the stored certificate is unusable: " + violations(r))
	}
	leaf := r.Chain[0]
	if err := matchesBinding(leaf, rec.PKI); err != nil {
		return nil, err
	}
	a, err := newAlias(rec, rec.CertificatePEM, rec.Key, rec.UpdateTime)
	if err != nil {
		return nil, err
	}
	a.Version = serialOf(leaf)
	// Vault back-dates NotBefore (the role's not_before_duration), so
	// the lifetime counted is a little longer than the TTL asked for and
	// the renewal a little earlier.
	a.RenewAt = pki.RenewAt(leaf, leaf.NotBefore, s.cfg.RenewFraction)
	return a, nil
}

// matchesBinding says why leaf was not issued for b (another common name,
// an alt name missing), or nil when it was.
func matchesBinding(leaf *x509.Certificate, b *secret.PKIBinding) error {
	if leaf.Subject.CommonName != b.CommonName {
		return fmt.Errorf("the stored certificate is for %q, and the binding asks for %q", leaf.Subject.CommonName, b.CommonName)
	}
	names := slices.Concat(leaf.DNSNames, leaf.EmailAddresses)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	for _, u := range leaf.URIs {
		names = append(names, u.String())
	}
	for _, n := range b.AltNames {
		if !slices.Contains(names, n) {
			return fmt.Errorf("the stored certificate lacks the alt name %q the binding asks for", n)
		}
	}
	return nil
}

// issue obtains a certificate for a PKI binding and holds it to the rules
// of a put. It returns rec with the issued chain and key.
func (s *Store) issue(ctx context.Context, rec *secret.AliasRecord) (*secret.AliasRecord, error) {
	if s.issuer == nil {
		return nil, fmt.Errorf("%w: alias %s/%s is bound to PKI role %q, but this service runs without Vault", ErrInvalid, rec.Keystore, rec.Alias, rec.PKI.Role)
	}
	chainPEM, key, err := s.issuer.Issue(ctx, rec.PKI)
	if err != nil {
		s.obs.Renewed(false)
		if errors.Is(err, secret.ErrInvalidValue) {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	r := validate.KeyPair(secret.Fields{Certificate: "the issued certificate", Key: "the issued private key"}, chainPEM, string(key.PEM()), rec.Usage, s.now())
	if !r.OK() {
		s.obs.Renewed(false)
		return nil, fmt.Errorf("%w: Vault PKI role %q issued a certificate for %q that breaks the rules of a put: %s", ErrInvalid, rec.PKI.Role, rec.PKI.CommonName, violations(r))
	}
	s.obs.Renewed(true)
	issued := *rec
	issued.CertificatePEM, issued.Key = chainPEM, key
	return &issued, nil
}

// storeIssued writes a record with a newly issued certificate as the
// alias's next version, if the backend still holds version (a binding
// changed meanwhile wins), and returns the alias to serve. Nothing is
// served that the backend does not hold: a key rests in the backend only.
func (s *Store) storeIssued(ctx context.Context, rec *secret.AliasRecord, version string) (*Alias, error) {
	var (
		st  secret.Stamp
		err error
	)
	if c, ok := s.backend.(Conditional); ok {
		st, err = c.PutAliasAt(ctx, rec, version)
	} else {
		st, err = s.backend.PutAlias(ctx, rec)
	}
	if errors.Is(err, secret.ErrVersionChanged) {
		return nil, fmt.Errorf("storing the certificate issued for alias %s/%s: %w; the next poll loads the new version", rec.Keystore, rec.Alias, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: storing the certificate issued for alias %s/%s: %w", ErrUnavailable, rec.Keystore, rec.Alias, err)
	}
	stored := *rec
	stored.Version, stored.Revision, stored.UpdateTime = st.Version, st.Revision, st.UpdateTime
	return s.pkiAlias(&stored)
}

// Conditional is a backend that writes an alias only if it is still at
// the version read (Vault KV's check-and-set), so that a certificate
// issued for a binding never overwrites a binding changed meanwhile.
// Safe for concurrent use.
type Conditional interface {
	// PutAliasAt stores rec as a new version if the current one is
	// version, else returns secret.ErrVersionChanged.
	PutAliasAt(ctx context.Context, rec *secret.AliasRecord, version string) (secret.Stamp, error)
}

func serialOf(cert *x509.Certificate) string {
	return fmt.Sprintf("%x", cert.SerialNumber)
}

// renewDue issues anew every PKI alias whose renewal time has come, and
// stores it in the backend, when this replica is the leader. Callers hold
// writes.
func (s *Store) renewDue(ctx context.Context) {
	if !s.leader() {
		return
	}
	now := s.now()
	s.mu.RLock()
	var due []*Alias
	for _, a := range s.aliases {
		if !a.RenewAt.IsZero() && !now.Before(a.RenewAt) {
			due = append(due, a)
		}
	}
	s.mu.RUnlock()
	for _, old := range due {
		ref := secretref.Ref{Keystore: old.Record.Keystore, Alias: old.Record.Alias}
		issued, err := s.issue(ctx, old.Record)
		var a *Alias
		if err == nil {
			a, err = s.storeIssued(ctx, issued, old.Record.Version)
		}
		if err != nil {
			s.log.Warn("renewing a PKI certificate failed; keeping the current one and retrying", "keystore", ref.Keystore, "alias", ref.Alias,
				"role", old.Record.PKI.Role, "not_after", old.Chain[0].NotAfter, "error", err)
			// Retry at the next poll rather than at once.
			retry := *old
			retry.RenewAt = now.Add(s.cfg.PollInterval)
			s.mu.Lock()
			s.aliases[ref] = &retry
			s.mu.Unlock()
			continue
		}
		// A renewal is the backend's version that this replica wrote.
		s.installAlias(ctx, ref, a, "pki renewal", true)
	}
}

func newAlias(rec *secret.AliasRecord, chainPEM string, key secret.PrivateKey, issuedAt time.Time) (*Alias, error) {
	chain, err := certs.ParsePEMCertificates(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: the certificate of alias %s/%s %w", ErrInvalid, rec.Keystore, rec.Alias, err)
	}
	k, err := certs.ParsePEMKey(string(key.PEM()))
	if err != nil {
		return nil, fmt.Errorf("%w: the private key of alias %s/%s %w", ErrInvalid, rec.Keystore, rec.Alias, err)
	}
	if pub, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, fmt.Errorf("%w: the private key of alias %s/%s does not match its certificate", ErrInvalid, rec.Keystore, rec.Alias)
	}
	return &Alias{Record: rec, ChainPEM: chainPEM, Key: key, Chain: chain, Version: rec.Version, IssuedAt: issuedAt}, nil
}

func newTruststore(rec *secret.TruststoreRecord) (*Truststore, error) {
	certs, err := certs.ParsePEMCertificates(rec.CertificatesPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: truststore %s %w", ErrInvalid, rec.Name, err)
	}
	return &Truststore{Record: rec, Certs: certs}, nil
}

// installAlias puts a into the view and publishes its version. current
// says that a is the backend's current version, which ends a rejection.
func (s *Store) installAlias(ctx context.Context, ref secretref.Ref, a *Alias, why string, current bool) {
	s.mu.Lock()
	old := s.aliases[ref]
	s.aliases[ref] = a
	var cleared *Rejection
	if current {
		cleared = s.rejected[ref]
		delete(s.rejected, ref)
		delete(s.awaiting, ref)
	}
	s.mu.Unlock()
	if cleared != nil {
		s.log.Info("secret no longer rejected: the backend holds a good version", "keystore", ref.Keystore, "alias", ref.Alias, "version", a.Version, "rejected_version", cleared.Version)
	}
	leaf := a.Chain[0]
	if old == nil || old.Version != a.Version {
		s.log.Info("alias loaded", "keystore", ref.Keystore, "alias", ref.Alias, "version", a.Version,
			"fingerprint", certs.Fingerprint(leaf), "not_after", leaf.NotAfter.UTC(), "source", why)
	}
	v := &secretsv1.SecretVersion{
		Keystore: ref.Keystore, Alias: ref.Alias, Version: a.Version,
		Sha256Fingerprint: certs.Fingerprint(leaf),
		NotAfter:          timestamppb.New(leaf.NotAfter),
		UpdateTime:        timestamppb.New(a.IssuedAt),
	}
	s.publishVersion(ctx, v)
}

func (s *Store) installTruststore(ctx context.Context, ref secretref.Ref, t *Truststore, why string, current bool) {
	s.mu.Lock()
	old := s.truststores[ref]
	s.truststores[ref] = t
	var cleared *Rejection
	if current {
		cleared = s.rejected[ref]
		delete(s.rejected, ref)
	}
	s.mu.Unlock()
	if cleared != nil {
		s.log.Info("secret no longer rejected: the backend holds a good version", "truststore", ref.Truststore, "version", t.Record.Version, "rejected_version", cleared.Version)
	}
	first := t.Certs[0]
	if old == nil || old.Record.Version != t.Record.Version {
		s.log.Info("truststore loaded", "truststore", ref.Truststore, "version", t.Record.Version,
			"certificates", len(t.Certs), "fingerprint", certs.Fingerprint(first), "source", why)
	}
	s.publishVersion(ctx, &secretsv1.SecretVersion{
		Truststore: ref.Truststore, Version: t.Record.Version,
		Sha256Fingerprint: certs.Fingerprint(first),
		NotAfter:          timestamppb.New(first.NotAfter),
		UpdateTime:        timestamppb.New(t.Record.UpdateTime),
	})
}

// forget removes a secret from the view and puts a delete marker in the
// bucket.
func (s *Store) forget(ctx context.Context, ref secretref.Ref, why string) {
	s.mu.Lock()
	_, held := s.aliases[ref]
	_, heldTS := s.truststores[ref]
	delete(s.aliases, ref)
	delete(s.truststores, ref)
	delete(s.rejected, ref)
	delete(s.awaiting, ref)
	s.mu.Unlock()
	s.log.Info("secret removed", "ref", ref.String(), "reason", why)
	if held || heldTS {
		s.publish(ctx, ref.Key(), nil)
	}
}

func (s *Store) publishVersion(ctx context.Context, v *secretsv1.SecretVersion) {
	b, err := secretref.EncodeVersion(v)
	if err != nil {
		s.log.Error("encoding a secret version", "error", err)
		return
	}
	s.publish(ctx, secretref.Of(v).Key(), b)
}

// publishTimeout bounds one bucket write, so that a NATS outage slows
// neither puts nor polls for long.
const publishTimeout = 3 * time.Second

// publish writes value (nil: a delete marker) under key, or remembers it
// for the next poll when NATS cannot take it. It reports whether the write
// landed.
func (s *Store) publish(ctx context.Context, key string, value []byte) bool {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	var err error
	if value == nil {
		err = s.pub.Delete(ctx, key)
	} else {
		err = s.pub.Put(ctx, key, value)
	}
	s.obs.Published(err == nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if _, known := s.unpublished[key]; !known {
			s.log.Warn("cannot publish a secret version; retrying at the next poll", "key", key, "error", err)
		}
		s.unpublished[key] = value
		return false
	}
	delete(s.unpublished, key)
	return true
}

// flush retries failed bucket writes. Callers hold writes.
func (s *Store) flush(ctx context.Context) {
	s.mu.RLock()
	pending := make(map[string][]byte, len(s.unpublished))
	for k, v := range s.unpublished {
		pending[k] = v
	}
	s.mu.RUnlock()
	for k, v := range pending {
		if !s.publish(ctx, k, v) {
			return // NATS is still away: the next poll tries again
		}
	}
}
