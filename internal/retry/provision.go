package retry

import (
	"context"
	"errors"
	"time"
)

// ProvisionAttempt bounds one attempt of [Provision]: a JetStream create
// answers in milliseconds when it answers at all.
const ProvisionAttempt = 5 * time.Second

// Provision runs create, an idempotent create-or-update of a JetStream
// stream or bucket, until it succeeds, fails otherwise than by running out
// of its ProvisionAttempt, or ctx ends. A timed-out attempt is tried again
// because of how a NATS cluster answers replicas that start together: when
// two clients create the same replicated stream at once, one is answered and
// the other never is, though the stream exists (nats-io/nats.go#949,
// nats-io/nats-server#3677); without a retry the loser waited out its whole
// deadline (30s per bucket for two policy replicas started at once).
func Provision[T any](ctx context.Context, create func(context.Context) (T, error)) (T, error) {
	b := New(100*time.Millisecond, time.Second)
	for {
		attempt, cancel := context.WithTimeout(ctx, ProvisionAttempt)
		v, err := create(attempt)
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return v, err
		}
		if !b.Wait(ctx) {
			return v, err
		}
	}
}
