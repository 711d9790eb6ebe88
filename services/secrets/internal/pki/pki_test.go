package pki

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestRenewAt(t *testing.T) {
	t.Parallel()
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: issued.Add(-30 * time.Second), NotAfter: issued.Add(90 * time.Minute)}
	for _, tc := range []struct {
		name     string
		fraction float64
		lo, hi   time.Duration // bounds after issue
	}{
		{"two thirds ±5%", DefaultRenewFraction, 55 * time.Minute, 65 * time.Minute},
		{"out of range falls back to two thirds", 1.5, 55 * time.Minute, 65 * time.Minute},
		{"half", 0.5, 40*time.Minute + 30*time.Second, 49*time.Minute + 30*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			seen := map[time.Time]bool{}
			for range 200 {
				at := RenewAt(leaf, issued, tc.fraction)
				if d := at.Sub(issued); d < tc.lo || d > tc.hi {
					t.Fatalf("renew %s after issue; want between %s and %s", d, tc.lo, tc.hi)
				}
				seen[at] = true
			}
			if len(seen) < 2 {
				t.Error("no jitter: every renewal time is the same")
			}
		})
	}
	if at := RenewAt(&x509.Certificate{NotAfter: issued.Add(-time.Second)}, issued, 0.5); !at.Equal(issued) {
		t.Errorf("an expired certificate renews at %s, want at once", at)
	}
}
