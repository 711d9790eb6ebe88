package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"keyway.dev/internal/model"
)

// Journal is told of the writes the store makes: the audit trail.
// Implementations must be safe for concurrent use.
type Journal interface {
	// Before is called with the writes about to be made, once every check
	// passed. An error stops them: nothing is stored, and the writer gets
	// the error.
	Before(ctx context.Context, changes []Change) error
	// After is called once the writes are made (each Change's Revision
	// set), or with the error that stopped them (none is then stored, or
	// the error says which are).
	After(ctx context.Context, changes []Change, err error)
}

// Change is one key written.
type Change struct {
	Ref model.Ref
	// Delete: a delete marker, no value.
	Delete bool
	// Digest is the SHA-256 of the value stored, lowercase hex; empty for
	// a deletion.
	Digest string
	// Revision is the revision written; 0 in Before and on failure.
	Revision uint64
}

// Digest is the SHA-256 of a stored value, lowercase hex, as Change and
// History give it.
func Digest(value []byte) string {
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:])
}

func (s *Store) before(ctx context.Context, changes []Change) error {
	if s.journal == nil || len(changes) == 0 {
		return nil
	}
	if err := s.journal.Before(ctx, changes); err != nil {
		return fmt.Errorf("store: %w; nothing was stored: retry once the audit stream takes records again", err)
	}
	return nil
}

func (s *Store) after(ctx context.Context, changes []Change, outs []Outcome, err error) {
	if s.journal == nil || len(changes) == 0 {
		return
	}
	out := make([]Change, len(changes))
	copy(out, changes)
	if err == nil {
		for i := range out {
			for _, o := range outs {
				if o.Ref == out[i].Ref {
					out[i].Revision = o.Revision
				}
			}
		}
	}
	s.journal.After(ctx, out, err)
}
