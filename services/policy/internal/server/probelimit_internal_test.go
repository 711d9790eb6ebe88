package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
)

func TestProbeLimiterPerCaller(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	l := newProbeLimiter(1, 3)
	l.now = func() time.Time { return now }

	if err := l.allow("10.0.0.1", 3); err != nil {
		t.Fatalf("first budget: %v", err)
	}
	err := l.allow("10.0.0.1", 1)
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("over budget: %v, want ResourceExhausted", err)
	}
	if err := l.allow("10.0.0.2", 3); err != nil {
		t.Errorf("another caller is limited by the first's spending: %v", err)
	}
	now = now.Add(time.Second)
	if err := l.allow("10.0.0.1", 1); err != nil {
		t.Errorf("a second later the budget has one handshake back: %v", err)
	}
	if err := l.allow("10.0.0.1", 4); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("more than the burst at once: %v, want ResourceExhausted", err)
	}
}

func TestProbeLimiterIsBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	l := newProbeLimiter(1, 3)
	l.now = func() time.Time { return now }
	for i := range maxProbeCallers + 100 {
		if err := l.allow(fmt.Sprintf("caller-%d", i), 3); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Millisecond)
	}
	if n := l.size(); n > maxProbeCallers {
		t.Errorf("%d callers remembered, want at most %d", n, maxProbeCallers)
	}
	// The most recent caller is still remembered (and over budget).
	if err := l.allow(fmt.Sprintf("caller-%d", maxProbeCallers+99), 1); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("the latest caller was forgotten: %v", err)
	}
}

func TestCallerKeyIgnoresThePort(t *testing.T) {
	t.Parallel()
	a := callerKey(context.Background(), connect.Peer{Addr: "192.0.2.7:40001"})
	b := callerKey(context.Background(), connect.Peer{Addr: "192.0.2.7:40002"})
	if a != b || a != "192.0.2.7" {
		t.Errorf("keys %q and %q, want both 192.0.2.7", a, b)
	}
}
