package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
)

// Revision is one revision of a resource that the bucket keeps.
type Revision struct {
	Revision uint64
	Created  time.Time
	// Delete: a delete marker; Resource and Digest are then empty.
	Delete bool
	// Digest is the SHA-256 of the stored value, as [Change] gives it.
	Digest string
	// Resource is the resource as stored; nil for a deletion, or when the
	// stored value does not decode.
	Resource *policyv1.Resource
}

// History lists the revisions of ref the bucket keeps (its History
// setting: the last Config.History writes of each key), newest first.
func (s *Store) History(ctx context.Context, ref model.Ref) ([]Revision, error) {
	entries, err := s.kv.History(ctx, configkv.Key(ref))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, &callerError{fmt.Sprintf("%s has no revision in the store: it was never applied, or its history was purged", ref), ErrNotFound}
	}
	if err != nil {
		return nil, fmt.Errorf("store: reading the history of %s: %w", ref, err)
	}
	out := make([]Revision, 0, len(entries))
	for _, e := range entries {
		out = append(out, s.revisionOf(ref, e.Revision(), e.Created(), e.Operation() != jetstream.KeyValuePut, e.Value()))
	}
	slices.Reverse(out)
	return out, nil
}

// At returns revision rev of ref. It fails with ErrNotFound when the
// bucket no longer keeps that revision, or when rev is a revision of
// another resource.
func (s *Store) At(ctx context.Context, ref model.Ref, rev uint64) (Revision, error) {
	msg, err := s.stream.GetMsg(ctx, rev)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Revision{}, &callerError{fmt.Sprintf("revision %d of %s is not kept: the bucket keeps the last writes of each key only; `keywayctl history %s %s` lists the revisions kept", rev, ref, ref.Kind, ref.Name), ErrNotFound}
	}
	if err != nil {
		return Revision{}, fmt.Errorf("store: reading revision %d: %w", rev, err)
	}
	if key := strings.TrimPrefix(msg.Subject, s.prefix); key != configkv.Key(ref) {
		other := key
		if o, err := configkv.ParseKey(key); err == nil {
			other = o.String()
		}
		return Revision{}, &callerError{fmt.Sprintf("revision %d is not a revision of %s but of %s; `keywayctl history %s %s` lists the revisions of %s", rev, ref, other, ref.Kind, ref.Name, ref), ErrNotFound}
	}
	return s.revisionOf(ref, msg.Sequence, msg.Time, msg.Header.Get("KV-Operation") != "", msg.Data), nil
}

func (s *Store) revisionOf(ref model.Ref, rev uint64, created time.Time, deleted bool, value []byte) Revision {
	r := Revision{Revision: rev, Created: created, Delete: deleted}
	if deleted {
		return r
	}
	r.Digest = Digest(value)
	res, err := configkv.Decode(value, rev)
	if err != nil {
		s.log.Warn("history: skipping a revision that does not decode", "resource", ref.String(), "revision", rev, "error", err)
		return r
	}
	r.Resource = res
	return r
}
