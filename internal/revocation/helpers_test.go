package revocation_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"keyway.dev/internal/revocation"
)

// waitTimeout bounds every wait for an event: a test that reaches it has
// failed, it is not a pause.
const waitTimeout = 15 * time.Second

// fastOptions refresh often, so that a test sees a refresh within
// milliseconds of asking for it.
func fastOptions() revocation.Options {
	return revocation.Options{MinRefresh: 20 * time.Millisecond, MaxRefresh: 200 * time.Millisecond, FetchTimeout: 5 * time.Second}
}

func newCache(t *testing.T, opts revocation.Options) *revocation.Cache {
	t.Helper()
	c := revocation.NewCache(opts)
	t.Cleanup(c.Close)
	return c
}

func newChecker(t *testing.T, c *revocation.Cache, p revocation.Policy) *revocation.Checker {
	t.Helper()
	ch, err := c.Checker(p)
	if err != nil {
		t.Fatalf("Checker: %v", err)
	}
	t.Cleanup(ch.Close)
	return ch
}

// waitUntil waits for cond to hold, re-evaluating it each time the cache
// changes.
func waitUntil(t *testing.T, c *revocation.Cache, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		changed := c.Changed()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// await is Checker.Await bounded by waitTimeout.
func await(t testing.TB, ch *revocation.Checker, cert, issuer *x509.Certificate) revocation.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s := ch.Await(ctx, cert, issuer)
	if s.Pending {
		t.Fatalf("status still pending after %s: %+v", waitTimeout, s)
	}
	return s
}

func ready(t testing.TB, ch *revocation.Checker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := ch.Ready(ctx); err != nil {
		t.Fatal(err)
	}
}

func listStatus(c *revocation.Cache, location string) (revocation.ListStatus, bool) {
	for _, l := range c.Lists() {
		if l.Location == location {
			return l, true
		}
	}
	return revocation.ListStatus{}, false
}

// timeout is a channel that fires after waitTimeout, stopped with the test.
func timeout(t *testing.T) <-chan time.Time {
	tm := time.NewTimer(waitTimeout)
	t.Cleanup(func() { tm.Stop() })
	return tm.C
}
