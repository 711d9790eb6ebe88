// Package testwait waits in tests for a state that another goroutine or
// process reaches in its own time: [Eventually] polls a check with a short,
// growing delay and, on timeout, fails the test with the check's last
// error, so a failure says what was still wrong rather than only that time
// ran out.
//
// Polling is for state that offers nothing to await (another process's
// readiness, a view that follows a bucket). Where an event can be awaited,
// a channel, a watch, a connection status, tests await it instead.
package testwait

import (
	"errors"
	"testing"
	"time"
)

// The delay between checks starts at firstDelay and doubles up to
// maxDelay: a state reached at once is seen at once, a slow one is not
// hammered.
const (
	firstDelay = 5 * time.Millisecond
	maxDelay   = 200 * time.Millisecond
)

// Eventually calls check until it returns nil, and fails the test
// (tb.Fatalf) with check's last error once timeout has passed. check runs
// on the test's goroutine, so it may itself call tb.Fatal for a condition
// that will never come right (a process that exited).
func Eventually(tb testing.TB, timeout time.Duration, check func() error) {
	tb.Helper()
	if err := Poll(timeout, check); err != nil {
		tb.Fatalf("testwait: still not done after %s: %v", timeout, err)
	}
}

// Until is [Eventually] for a condition: on timeout the test fails saying
// it was waiting for what.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	Eventually(tb, timeout, func() error {
		if cond() {
			return nil
		}
		return errors.New("waiting for " + what)
	})
}

// Poll calls check until it returns nil or timeout has passed, and returns
// check's last error (nil once it succeeded). It is Eventually for a
// caller that does not fail the test on timeout (a benchmark that reports
// it, a helper that adds context).
func Poll(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for delay := firstDelay; ; delay = min(2*delay, maxDelay) {
		err := check()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		time.Sleep(min(delay, left))
	}
}
