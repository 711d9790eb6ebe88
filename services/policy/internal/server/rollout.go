package server

import (
	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/policy/internal/nodes"
)

// change is the rollout of the keys stored from since up to rev: a node
// that reached rev and reports an error on one of them refused it.
func (s *Server) change(rev, since uint64) nodes.Change {
	return nodes.Change{Revision: rev, Since: since, KeyRevision: s.store.KeyRevision}
}

// applySince is the first revision an apply wrote (its lowest created or
// updated resource), or its revision when it wrote nothing new.
func applySince(r *policyv1.ApplyResponse) uint64 {
	since := r.GetRevision()
	for _, res := range r.GetResults() {
		switch res.GetAction() {
		case policyv1.Action_ACTION_CREATED, policyv1.Action_ACTION_UPDATED:
			if rev := res.GetRevision(); rev > 0 && rev < since {
				since = rev
			}
		}
	}
	return since
}
