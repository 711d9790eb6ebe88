package cli

import (
	"fmt"
	"io"

	nodev1 "keyway.dev/gen/keyway/node/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// firstRevision is the first revision an apply wrote: the lowest revision of
// its created or updated resources, or its revision when it wrote nothing
// new. A node's error on a key stored from there on is a refusal of this
// apply; errors on older keys belong to earlier changes.
func firstRevision(r *policyv1.ApplyResponse) uint64 {
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

// refusalErrors is one error per refusal of a rollout, naming the node, the
// key and the node's error.
func refusalErrors(r *policyv1.Rollout) []error {
	errs := make([]error, 0, len(r.GetRefusals()))
	for _, f := range r.GetRefusals() {
		errs = append(errs, fmt.Errorf("node %s refused %s (revision %d): %s", f.GetNodeId(), f.GetKey(), f.GetRevision(), f.GetMessage()))
	}
	return errs
}

// refusingNodes counts the nodes with at least one refusal.
func refusingNodes(r *policyv1.Rollout) int {
	seen := make(map[string]bool)
	for _, f := range r.GetRefusals() {
		seen[f.GetNodeId()] = true
	}
	return len(seen)
}

// writeNodeErrors prints a line per resource a node refused or could not
// build, after the status table: the table's ERRORS column only counts them.
func writeNodeErrors(w io.Writer, all []*nodev1.NodeStatus) {
	for _, n := range all {
		for _, e := range n.GetErrors() {
			fmt.Fprintf(w, "node %s refused %s: %s\n", n.GetId(), e.GetKey(), e.GetMessage())
		}
	}
}
