package server

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
	"keyway.dev/policy/internal/inlinekeys"
)

// KeyStore holds the key pairs moved out of resources: aliases of the
// secrets service's keystore [inlinekeys.Keystore] ([inlinekeys.Client]).
// Safe for concurrent use.
type KeyStore interface {
	// Put stores p under ref unless ref already holds it, and reports
	// whether it wrote.
	Put(ctx context.Context, ref secretref.Ref, p inlinekeys.Pair) (bool, error)
	// Delete deletes ref; one already gone is not an error.
	Delete(ctx context.Context, ref secretref.Ref) error
}

// WithInlineKeys has Apply move every inline private key into ks and store
// the resource with the reference instead. Without it, inline keys are
// refused: the configuration bucket never holds a private key.
func WithInlineKeys(ks KeyStore) Option {
	return func(s *Server) { s.keys = ks }
}

// refuseInline is one violation per inline key, when there is nowhere to
// move it.
func (s *Server) refuseInline(resources []*policyv1.Resource) []model.Violation {
	if s.keys != nil {
		return nil
	}
	var vs []model.Violation
	for i, r := range resources {
		for _, p := range inlinekeys.Find(r) {
			vs = append(vs, model.Violation{
				Field: fmt.Sprintf("resources[%d].%s", i, p.KeyField()),
				Message: "an inline private key is moved into the secrets service at apply (keys are never stored in NATS), and this policy service has no secrets service configured; " +
					"run keyway-secrets and start keyway-policy with --secrets-server (KEYWAY_SECRETS_SERVER), " +
					"or store the pair yourself (keywayctl secrets put --keystore KS --alias A --cert FILE --key FILE) and give certificate: {keystore: KS, alias: A}",
			})
		}
	}
	return vs
}

// movedKeys is what moving the keys of one Apply did.
type movedKeys struct {
	// written are the aliases this apply wrote, to delete again when
	// nothing ends up stored (only those it created).
	created []secretref.Ref
	// previous are the stored resources' references to moved keys before
	// this apply: those no resource references afterwards are deleted.
	previous []secretref.Ref
}

// moveKeys stores every inline key pair of resources in the secrets service
// and puts the reference in its place. objs are the validated resources (for
// their kinds and names). On failure nothing is left half-moved in the
// resources' stead: the caller stores nothing, and forgets m.created.
func (s *Server) moveKeys(ctx context.Context, resources []*policyv1.Resource, objs []model.Object) (movedKeys, error) {
	var m movedKeys
	for i, r := range resources {
		ref := objs[i].Ref()
		if ref.Kind != model.KindPolicyBinding && ref.Kind != model.KindListener {
			continue // no certificate to hold a key
		}
		if stored, err := s.store.Get(ctx, ref); err == nil {
			for _, mv := range inlinekeys.Refs(stored) {
				m.previous = append(m.previous, mv.Ref)
			}
		}
		pairs := inlinekeys.Find(r)
		if len(pairs) == 0 {
			continue
		}
		refs, err := inlinekeys.Plan(ref.Kind, ref.Name, pairs)
		if err != nil {
			return m, invalid([]model.Violation{{Field: fmt.Sprintf("resources[%d]", i), Message: fmt.Sprintf("naming the alias for the inline key pair: %v", err)}})
		}
		existed := map[secretref.Ref]bool{}
		for _, mv := range inlinekeys.Refs(r) {
			existed[mv.Ref] = true
		}
		for j, p := range pairs {
			wrote, err := s.keys.Put(ctx, refs[j], p)
			if err != nil {
				field := fmt.Sprintf("resources[%d].%s", i, p.KeyField())
				if connect.CodeOf(err) == connect.CodeInvalidArgument {
					return m, invalid([]model.Violation{{Field: field, Message: fmt.Sprintf("the secrets service refused the key pair as keystore %q alias %q: %v", refs[j].Keystore, refs[j].Alias, err)}})
				}
				return m, connect.NewError(connect.CodeUnavailable, fmt.Errorf(
					"moving the private key at %s into the secrets service: %w; nothing was applied: apply again once the secrets service answers", field, err))
			}
			if wrote && !existed[refs[j]] && !containsRef(m.previous, refs[j]) {
				m.created = append(m.created, refs[j])
			}
			p.Replace(refs[j])
			s.log.Info("inline key moved to the secrets service", "resource", ref.String(), "field", p.KeyField(), "keystore", refs[j].Keystore, "alias", refs[j].Alias, "written", wrote)
		}
	}
	return m, nil
}

func containsRef(refs []secretref.Ref, ref secretref.Ref) bool {
	for _, r := range refs {
		if r == ref {
			return true
		}
	}
	return false
}

// forget deletes the aliases an apply created when it stored nothing.
func (s *Server) forget(refs []secretref.Ref) {
	s.release(refs, false)
}

// release deletes each alias of refs that no stored resource references
// (with check) or unconditionally. Deleting is best effort: an alias left
// behind is logged, and holds a key no resource uses. Callers hold
// s.writes, so no apply of this replica starts referencing an alias
// between the check and the delete.
func (s *Server) release(refs []secretref.Ref, check bool) {
	if len(refs) == 0 || s.keys == nil {
		return
	}
	used := map[secretref.Ref]bool{}
	if check {
		for _, r := range s.store.List("") {
			for _, mv := range inlinekeys.Refs(r) {
				used[mv.Ref] = true
			}
		}
	}
	// The caller may be gone once the write has landed; each delete is
	// bounded by the client's timeout.
	ctx := context.Background()
	for _, ref := range refs {
		if used[ref] {
			continue
		}
		used[ref] = true // once
		if err := s.keys.Delete(ctx, ref); err != nil {
			s.log.Warn("cannot delete a moved key no resource uses any more; delete it with keywayctl secrets delete", "keystore", ref.Keystore, "alias", ref.Alias, "error", err)
			continue
		}
		s.log.Info("moved key deleted: no resource uses it any more", "keystore", ref.Keystore, "alias", ref.Alias)
	}
}
