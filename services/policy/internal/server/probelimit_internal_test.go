package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// endpoints returns n distinct endpoints starting at port first.
func endpoints(first, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.9.0.1:%d", first+i)
	}
	return out
}

func TestProbeLimiterPerCaller(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	l := newProbeLimiter(1, 3)
	l.now = func() time.Time { return now }

	if err := l.allow("10.0.0.1", endpoints(1, 3)); err != nil {
		t.Fatalf("first budget: %v", err)
	}
	err := l.allow("10.0.0.1", endpoints(1, 1))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("over budget: %v, want ResourceExhausted", err)
	}
	if err := l.allow("10.0.0.2", endpoints(1, 3)); err != nil {
		t.Errorf("another caller is limited by the first's spending: %v", err)
	}
	now = now.Add(time.Second)
	if err := l.allow("10.0.0.1", endpoints(1, 1)); err != nil {
		t.Errorf("a second later the budget has one handshake back: %v", err)
	}
	if err := l.allow("10.0.0.1", endpoints(1, 4)); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("more than the burst at once: %v, want ResourceExhausted", err)
	}
}

// Endpoints a caller probed successfully are free to probe again for a
// while (re-applying a working configuration); others are charged every
// time, whoever else probed them.
func TestProbeLimiterRemembersSuccesses(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	l := newProbeLimiter(1, 3)
	l.now = func() time.Time { return now }
	good, bad := endpoints(1, 2), endpoints(100, 1)

	if err := l.allow("ci", append(good, bad...)); err != nil {
		t.Fatal(err)
	}
	l.succeeded("ci", good)
	for i := range 20 {
		if err := l.allow("ci", good); err != nil {
			t.Fatalf("re-probe %d of endpoints that answered: %v", i, err)
		}
		l.succeeded("ci", good)
	}
	if err := l.allow("ci", bad); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("an endpoint that failed is charged again: %v, want ResourceExhausted", err)
	}
	if err := l.allow("ci", append(good, good[0])); err != nil {
		t.Errorf("the same endpoint for two bindings, both remembered: %v", err)
	}
	if err := l.allow("someone-else", good); err != nil {
		t.Fatalf("another caller's first budget: %v", err)
	}
	if err := l.allow("someone-else", good); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("another caller's probes are charged, whatever ci's succeeded: %v", err)
	}
	// Forgotten after probeRemember (the budget is back by then too:
	// spend it first).
	now = now.Add(probeRemember)
	if err := l.allow("ci", endpoints(200, 3)); err != nil {
		t.Fatal(err)
	}
	if err := l.allow("ci", good); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("a success older than %s still makes a probe free: %v", probeRemember, err)
	}
	// At most maxRemembered endpoints per caller.
	l.succeeded("ci", endpoints(1000, maxRemembered+10))
	if n := len(l.callers["ci"].ok); n > maxRemembered {
		t.Errorf("%d endpoints remembered, want at most %d", n, maxRemembered)
	}
}

func TestProbeLimiterIsBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	l := newProbeLimiter(1, 3)
	l.now = func() time.Time { return now }
	for i := range maxProbeCallers + 100 {
		if err := l.allow(fmt.Sprintf("caller-%d", i), endpoints(1, 3)); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Millisecond)
	}
	if n := l.size(); n > maxProbeCallers {
		t.Errorf("%d callers remembered, want at most %d", n, maxProbeCallers)
	}
	// The most recent caller is still remembered (and over budget).
	if err := l.allow(fmt.Sprintf("caller-%d", maxProbeCallers+99), endpoints(1, 1)); connect.CodeOf(err) != connect.CodeResourceExhausted {
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
