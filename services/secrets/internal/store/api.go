package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"keyway.dev/common/secretsclient"
	"keyway.dev/secrets/internal/secret"
)

// notFound is a caller-ready ErrNotFound.
func notFound(ref secretsclient.Ref) error {
	what, list := "alias "+ref.String(), "keywayctl secrets list"
	if ref.Truststore != "" {
		what, list = "truststore "+ref.Truststore, "keywayctl secrets list --truststores"
	}
	return fmt.Errorf("%w: %s does not exist ('%s' shows what does)", ErrNotFound, what, list)
}

// backendError wraps an error of a backend write or read for the API.
func (s *Store) backendError(what string, err error) error {
	if errors.Is(err, secret.ErrInvalidValue) {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, what, err)
	}
	s.setBackend(err)
	return fmt.Errorf("%w: %s: %s: %w", ErrUnavailable, what, s.backend.Describe(), err)
}

// Alias returns an alias from the view; one the view does not hold yet
// (written to the backend since the last poll) is read from the backend,
// and a PKI alias without a certificate is issued now.
func (s *Store) Alias(ctx context.Context, keystore, alias string) (*Alias, error) {
	ref := secretsclient.Ref{Keystore: keystore, Alias: alias}
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
	if s.BackendError() != nil {
		// Do not wait on a backend known to be away for every miss; the
		// poll finds it back.
		return nil, fmt.Errorf("%w: alias %s is not held and %s does not answer: %w", ErrUnavailable, ref, s.backend.Describe(), s.BackendError())
	}
	err := s.load(ctx, ref, "")
	switch {
	case errors.Is(err, secret.ErrNotFound):
		return nil, notFound(ref)
	case err != nil:
		return nil, err
	}
	return s.aliasFromView(ref), nil
}

func (s *Store) aliasFromView(ref secretsclient.Ref) *Alias {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.aliases[ref]
}

// Truststore returns a truststore, as [Store.Alias] does.
func (s *Store) Truststore(ctx context.Context, name string) (*Truststore, error) {
	ref := secretsclient.Ref{Truststore: name}
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
	ref := secretsclient.Ref{Keystore: rec.Keystore, Alias: rec.Alias}
	var (
		a   *Alias
		err error
	)
	// Issue before writing the binding, so that a role that refuses the
	// name stores nothing.
	if rec.PKI != nil {
		if a, err = s.issue(ctx, rec); err != nil {
			return nil, err
		}
	}
	st, err := s.backend.PutAlias(ctx, rec)
	if err != nil {
		return nil, s.backendError("storing alias "+ref.String(), err)
	}
	stored := *rec
	stored.Version, stored.Revision, stored.UpdateTime = st.Version, st.Revision, st.UpdateTime
	if a != nil {
		a.Record = &stored
	} else if a, err = newAlias(&stored, stored.CertificatePEM, stored.Key, stored.UpdateTime); err != nil {
		return nil, err
	}
	s.installAlias(ctx, ref, a, "api")
	return a, nil
}

// PutTruststore stores a validated truststore as a new version.
func (s *Store) PutTruststore(ctx context.Context, rec *secret.TruststoreRecord) (*Truststore, error) {
	s.writes.Lock()
	defer s.writes.Unlock()
	st, err := s.backend.PutTruststore(ctx, rec)
	if err != nil {
		return nil, s.backendError("storing truststore "+rec.Name, err)
	}
	stored := *rec
	stored.Version, stored.Revision, stored.UpdateTime = st.Version, st.Revision, st.UpdateTime
	t, err := newTruststore(&stored)
	if err != nil {
		return nil, err
	}
	s.installTruststore(ctx, secretsclient.Ref{Truststore: rec.Name}, t, "api")
	return t, nil
}

// DeleteAlias deletes an alias and publishes a delete marker.
func (s *Store) DeleteAlias(ctx context.Context, keystore, alias string) error {
	return s.delete(ctx, secretsclient.Ref{Keystore: keystore, Alias: alias}, func() error {
		return s.backend.DeleteAlias(ctx, keystore, alias)
	})
}

// DeleteTruststore deletes a truststore and publishes a delete marker.
func (s *Store) DeleteTruststore(ctx context.Context, name string) error {
	return s.delete(ctx, secretsclient.Ref{Truststore: name}, func() error {
		return s.backend.DeleteTruststore(ctx, name)
	})
}

func (s *Store) delete(ctx context.Context, ref secretsclient.Ref, del func() error) error {
	s.writes.Lock()
	defer s.writes.Unlock()
	err := del()
	switch {
	case errors.Is(err, secret.ErrNotFound):
		return notFound(ref)
	case err != nil:
		return s.backendError("deleting "+ref.String(), err)
	}
	s.forget(ctx, ref, "deleted through the API")
	return nil
}
