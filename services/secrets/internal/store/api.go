package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/secretref"
	"keyway.dev/secrets/internal/secret"
)

// notFound is a caller-ready ErrNotFound.
func notFound(ref secretref.Ref) error {
	what, list := "alias "+ref.Name(), "keywayctl secrets list"
	if ref.Truststore != "" {
		what, list = "truststore "+ref.Truststore, "keywayctl secrets list --truststores"
	}
	return fmt.Errorf("%w: %s does not exist ('%s' shows what does)", ErrNotFound, what, list)
}

// backendError wraps an error of a backend read or delete for the API.
func (s *Store) backendError(what string, err error) error {
	if errors.Is(err, secret.ErrInvalidValue) {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, what, err)
	}
	s.setBackend(err)
	return fmt.Errorf("%w: %s: %s: %w", ErrUnavailable, what, s.backend.Describe(), err)
}

// backendName names the backend in a sentence: "Vault" or "the local
// directory".
func (s *Store) backendName() string {
	if s.backend.Kind() == secretsv1.Backend_BACKEND_LOCAL {
		return "the local directory"
	}
	return "Vault"
}

// writeError wraps an error of a backend write of what ("alias edge/gw")
// for the API: it says whether the value was stored, and that nothing will
// store it later. Nothing is queued: a put that fails is the caller's to
// repeat, so that a value never lands behind the caller's back.
func (s *Store) writeError(what string, err error) error {
	if errors.Is(err, secret.ErrInvalidValue) {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, what, err)
	}
	var ns *secret.NotStoredError
	if errors.As(err, &ns) {
		s.setBackend(err)
		return fmt.Errorf("%w: %w; %s was not stored, and nothing retries it: put it again once %s answers", ErrUnavailable, err, what, s.backendName())
	}
	s.setBackend(err)
	return fmt.Errorf("%w: %w; whether %s was stored is unknown, and nothing retries it: once %s answers, `keywayctl secrets get` shows the version it holds", ErrUnavailable, err, what, s.backendName())
}

// Alias returns an alias from the view; one the view does not hold yet
// (written to the backend since the last poll) is read from the backend,
// and a PKI alias without a certificate is issued now by the leader (a
// follower answers ErrUnavailable until the leader has).
func (s *Store) Alias(ctx context.Context, keystore, alias string) (*Alias, error) {
	ref := secretref.Ref{Keystore: keystore, Alias: alias}
	s.mu.RLock()
	a := s.aliases[ref]
	s.mu.RUnlock()
	if a != nil {
		return a, nil
	}
	s.writes.Lock()
	defer s.writes.Unlock()
	if a := s.aliasFromView(ref); a != nil {
		return a, nil
	}
	if err := s.rejectedError(ref); err != nil {
		// Polls read it again when it changes; do not read Vault for
		// every fetch of a secret known to be unusable.
		return nil, err
	}
	if s.BackendError() != nil {
		// Do not wait on a backend known to be away for every miss; the
		// poll finds it back.
		return nil, fmt.Errorf("%w: alias %s is not held and %s does not answer: %w", ErrUnavailable, ref.Name(), s.backend.Describe(), s.BackendError())
	}
	err := s.load(ctx, ref, "")
	switch {
	case errors.Is(err, secret.ErrNotFound):
		return nil, notFound(ref)
	case errors.Is(err, errAwaitingLeader):
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	case err != nil:
		return nil, err
	}
	return s.aliasFromView(ref), nil
}

func (s *Store) aliasFromView(ref secretref.Ref) *Alias {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.aliases[ref]
}

// Truststore returns a truststore, as [Store.Alias] does.
func (s *Store) Truststore(ctx context.Context, name string) (*Truststore, error) {
	ref := secretref.Ref{Truststore: name}
	get := func() *Truststore {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.truststores[ref]
	}
	if t := get(); t != nil {
		return t, nil
	}
	s.writes.Lock()
	defer s.writes.Unlock()
	if t := get(); t != nil {
		return t, nil
	}
	if err := s.rejectedError(ref); err != nil {
		return nil, err
	}
	if s.BackendError() != nil {
		return nil, fmt.Errorf("%w: truststore %s is not held and %s does not answer: %w", ErrUnavailable, name, s.backend.Describe(), s.BackendError())
	}
	err := s.load(ctx, ref, "")
	switch {
	case errors.Is(err, secret.ErrNotFound):
		return nil, notFound(ref)
	case err != nil:
		return nil, err
	}
	return get(), nil
}

// rejectedError is ErrInvalid saying why ref's backend version was
// rejected, or nil when it was not.
func (s *Store) rejectedError(ref secretref.Ref) error {
	r := s.Rejection(ref)
	if r == nil {
		return nil
	}
	return fmt.Errorf("%w: %s version %s in %s was rejected and no earlier version is held (%s): %s", ErrInvalid, describeRef(ref), cmp.Or(r.Version, "?"), s.backend.Describe(), r.Reason, r.Message)
}

// Rejection is why the backend's current version of ref is not served,
// or nil when it is (or ref is unknown).
func (s *Store) Rejection(ref secretref.Ref) *Rejection {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rejected[ref]
}

// AliasEntry is an alias as the API lists it: what is served, and why
// the backend's current version is not, when it is not.
type AliasEntry struct {
	Ref secretref.Ref
	// Serving is nil when the service serves no version.
	Serving *Alias
	// Rejected is nil unless the backend's current version was refused.
	Rejected *Rejection
}

// TruststoreEntry is [AliasEntry] for a truststore.
type TruststoreEntry struct {
	Ref      secretref.Ref
	Serving  *Truststore
	Rejected *Rejection
}

// AliasEntries lists every alias served or rejected, sorted by keystore
// and alias.
func (s *Store) AliasEntries() []AliasEntry {
	s.mu.RLock()
	out := make([]AliasEntry, 0, len(s.aliases))
	for ref, a := range s.aliases {
		out = append(out, AliasEntry{Ref: ref, Serving: a, Rejected: s.rejected[ref]})
	}
	for ref, r := range s.rejected {
		if _, held := s.aliases[ref]; !held && ref.Truststore == "" {
			out = append(out, AliasEntry{Ref: ref, Rejected: r})
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b AliasEntry) int {
		if c := strings.Compare(a.Ref.Keystore, b.Ref.Keystore); c != 0 {
			return c
		}
		return strings.Compare(a.Ref.Alias, b.Ref.Alias)
	})
	return out
}

// TruststoreEntries lists every truststore served or rejected, sorted by
// name.
func (s *Store) TruststoreEntries() []TruststoreEntry {
	s.mu.RLock()
	out := make([]TruststoreEntry, 0, len(s.truststores))
	for ref, t := range s.truststores {
		out = append(out, TruststoreEntry{Ref: ref, Serving: t, Rejected: s.rejected[ref]})
	}
	for ref, r := range s.rejected {
		if _, held := s.truststores[ref]; !held && ref.Truststore != "" {
			out = append(out, TruststoreEntry{Ref: ref, Rejected: r})
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b TruststoreEntry) int { return strings.Compare(a.Ref.Truststore, b.Ref.Truststore) })
	return out
}

// RejectedCounts is how many aliases and truststores have their backend
// version rejected now.
func (s *Store) RejectedCounts() (aliases, truststores int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for ref := range s.rejected {
		if ref.Truststore != "" {
			truststores++
		} else {
			aliases++
		}
	}
	return aliases, truststores
}

// Aliases lists every alias held, sorted by keystore and alias.
func (s *Store) Aliases() []*Alias {
	s.mu.RLock()
	out := make([]*Alias, 0, len(s.aliases))
	for _, a := range s.aliases {
		out = append(out, a)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Alias) int {
		if c := strings.Compare(a.Record.Keystore, b.Record.Keystore); c != 0 {
			return c
		}
		return strings.Compare(a.Record.Alias, b.Record.Alias)
	})
	return out
}

// Truststores lists every truststore held, sorted by name.
func (s *Store) Truststores() []*Truststore {
	s.mu.RLock()
	out := make([]*Truststore, 0, len(s.truststores))
	for _, t := range s.truststores {
		out = append(out, t)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Truststore) int { return strings.Compare(a.Record.Name, b.Record.Name) })
	return out
}

// CheckRole returns ErrNotFound when the PKI role does not exist.
func (s *Store) CheckRole(ctx context.Context, role string) error {
	if s.issuer == nil {
		return fmt.Errorf("%w: no Vault PKI", ErrInvalid)
	}
	err := s.issuer.CheckRole(ctx, role)
	switch {
	case errors.Is(err, secret.ErrNotFound):
		return fmt.Errorf("%w: PKI role %q does not exist under %s/roles/: create it with `vault write %s/roles/%s allowed_domains=… allow_subdomains=true client_flag=true`", ErrNotFound, role, s.issuer.Mount(), s.issuer.Mount(), role)
	case err != nil:
		return s.backendError("reading PKI role "+role, err)
	}
	return nil
}

// PutAlias stores a validated alias as a new version, loads it into the
// view (issuing it first when it is a PKI binding) and publishes it.
func (s *Store) PutAlias(ctx context.Context, rec *secret.AliasRecord) (*Alias, error) {
	s.writes.Lock()
	defer s.writes.Unlock()
	ref := secretref.Ref{Keystore: rec.Keystore, Alias: rec.Alias}
	var (
		a   *Alias
		err error
	)
	// Issue before writing the binding, so that a role that refuses the
	// name stores nothing; the binding and its certificate are one
	// version, which every replica loads. Whichever replica takes the
	// put issues it, leader or not: the caller learns at once whether
	// the role allows it.
	if rec.PKI != nil {
		if rec, err = s.issue(ctx, rec); err != nil {
			return nil, err
		}
	}
	st, err := s.backend.PutAlias(ctx, rec)
	if err != nil {
		return nil, s.writeError("alias "+ref.Name(), err)
	}
	s.setBackend(nil) // it answered: reads need not wait for the next poll to know
	stored := *rec
	stored.Version, stored.Revision, stored.UpdateTime = st.Version, st.Revision, st.UpdateTime
	if rec.PKI != nil {
		if a, err = s.pkiAlias(&stored); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	} else if a, err = newAlias(&stored, stored.CertificatePEM, stored.Key, stored.UpdateTime); err != nil {
		return nil, err
	}
	s.installAlias(ctx, ref, a, "api", true)
	return a, nil
}

// PutTruststore stores a validated truststore as a new version.
func (s *Store) PutTruststore(ctx context.Context, rec *secret.TruststoreRecord) (*Truststore, error) {
	s.writes.Lock()
	defer s.writes.Unlock()
	st, err := s.backend.PutTruststore(ctx, rec)
	if err != nil {
		return nil, s.writeError("truststore "+rec.Name, err)
	}
	s.setBackend(nil)
	stored := *rec
	stored.Version, stored.Revision, stored.UpdateTime = st.Version, st.Revision, st.UpdateTime
	t, err := newTruststore(&stored)
	if err != nil {
		return nil, err
	}
	s.installTruststore(ctx, secretref.Ref{Truststore: rec.Name}, t, "api", true)
	return t, nil
}

// DeleteAlias deletes an alias and publishes a delete marker.
func (s *Store) DeleteAlias(ctx context.Context, keystore, alias string) error {
	return s.delete(ctx, secretref.Ref{Keystore: keystore, Alias: alias}, func() error {
		return s.backend.DeleteAlias(ctx, keystore, alias)
	})
}

// DeleteTruststore deletes a truststore and publishes a delete marker.
func (s *Store) DeleteTruststore(ctx context.Context, name string) error {
	return s.delete(ctx, secretref.Ref{Truststore: name}, func() error {
		return s.backend.DeleteTruststore(ctx, name)
	})
}

func (s *Store) delete(ctx context.Context, ref secretref.Ref, del func() error) error {
	s.writes.Lock()
	defer s.writes.Unlock()
	err := del()
	switch {
	case errors.Is(err, secret.ErrNotFound):
		return notFound(ref)
	case err != nil:
		// An alias is named "<keystore>/<alias>" here and a truststore
		// "truststore/<name>", as these messages always have.
		what := ref.Name()
		if ref.Truststore != "" {
			what = ref.String()
		}
		return s.backendError("deleting "+what, err)
	}
	s.setBackend(nil)
	s.forget(ctx, ref, "deleted through the API")
	return nil
}
