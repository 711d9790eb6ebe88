package e2e

import (
	"testing"
	"time"

	"keyway.dev/tests/harness"
)

// rotations is how many times the alias behind the binding is replaced.
const rotations = 20

// The product's promise for rotation: with requests flowing through two
// proxy nodes to an upstream that requires a client certificate, the alias
// behind the binding's certificate: {keystore, alias} is replaced 20 times
// through the secrets API, the upstream sees each new certificate from
// every node, and not one request fails.
func TestAliasRotationThroughTwoNodesWithoutFailedRequests(t *testing.T) {
	s := harness.StartRotationStack(t, 2)
	load := s.StartLoad(2)
	for i := range rotations {
		fp := s.Rotate(t)
		written := time.Now()
		for _, px := range s.Proxies {
			// Generous: the machine is shared and runs under -race.
			if _, err := s.WaitServed(px, fp, written, 90*time.Second); err != nil {
				load.Stop()
				t.Fatalf("rotation %d: %v", i+1, err)
			}
		}
	}
	load.Stop()
	t.Logf("%d requests through %d nodes during %d rotations", load.Sent.Load(), len(s.Proxies), rotations)
	if load.Sent.Load() < int64(rotations) {
		t.Errorf("only %d requests were sent: the load did not run", load.Sent.Load())
	}
	if n := load.Failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during the rotations, want none; first failures: %q", n, load.Sent.Load(), load.Failures)
	}
}
