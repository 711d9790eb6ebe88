package retry_test

import (
	"context"
	"testing"
	"time"

	"keyway.dev/internal/retry"
)

// The waits grow to the ceiling, stay within ±50% of their mean, and differ
// from one Backoff to the next: a fleet does not retry in lockstep.
func TestWaitsGrowWithJitter(t *testing.T) {
	t.Parallel()
	b := retry.New(100*time.Millisecond, time.Second)
	mean := 100 * time.Millisecond
	for i := range 10 {
		d := b.Next()
		if d < mean/2 || d > mean*3/2 {
			t.Errorf("wait %d: %s, want within ±50%% of %s", i, d, mean)
		}
		mean = min(2*mean, time.Second)
	}
	b.Reset()
	if d := b.Next(); d > 150*time.Millisecond {
		t.Errorf("after Reset: %s, want about 100ms again", d)
	}

	// Two hundred nodes' first waits after the same outage.
	seen := make(map[time.Duration]bool)
	for range 200 {
		seen[retry.New(time.Second, time.Minute).Next()] = true
	}
	if len(seen) < 150 {
		t.Errorf("200 first waits took only %d distinct values: retries would bunch up", len(seen))
	}
}

func TestWaitStopsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if retry.New(time.Hour, time.Hour).Wait(ctx) {
		t.Error("Wait reported the wait ran out on a cancelled context")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Wait on a cancelled context took %s", took)
	}
	if !retry.Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep of 1ms did not run out")
	}
}
