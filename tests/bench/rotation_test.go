package bench

import (
	"slices"
	"testing"
	"time"

	"keyway.dev/tests/harness"
)

// BenchmarkAliasRotation measures how long a new version of an alias takes
// from the write until the upstream sees the new client certificate from
// every proxy node (two nodes, under a light load), over 20 rotations: p50
// and p99 as metrics, nothing asserted. "api-push": the write goes through
// the secrets API, which publishes the new version at once (local
// backend). "vault-poll": the write goes straight into Vault KV v2, as
// `vault kv put` does, and the secrets service notices it by polling
// Vault's metadata at its default interval (2s).
func BenchmarkAliasRotation(b *testing.B) {
	b.Run("api-push", func(b *testing.B) {
		s := harness.StartRotationStack(b, 2)
		rotations(b, s, s.Rotate)
	})
	b.Run("vault-poll", func(b *testing.B) {
		s := harness.StartRotationStackWith(b, 2, harness.RotationOptions{Vault: harness.Vault(b, false)})
		rotations(b, s, s.RotateInVault)
	})
}

func rotations(b *testing.B, s *harness.RotationStack, rotate func(testing.TB) string) {
	load := s.StartLoad(1)
	defer load.Stop()
	var latencies []time.Duration
	b.ResetTimer()
	for b.Loop() {
		latencies = latencies[:0]
		for range 20 {
			fp := rotate(b)
			written := time.Now()
			var slowest time.Duration
			for _, px := range s.Proxies {
				d, err := s.WaitServed(px, fp, written, 90*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				slowest = max(slowest, d)
			}
			latencies = append(latencies, slowest)
		}
	}
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(load.Failed.Load()), "failed-requests")
	b.ReportMetric(0, "ns/op")
}
