// Package retry spaces the attempts of the services' retry loops — NATS
// connections made anew, the proxy node's bucket lookups and watches,
// secret fetches — with jittered exponential backoff from
// github.com/cenkalti/backoff/v5.
//
// Jitter matters more than the growth: after a NATS or secrets-service
// outage every node of a fleet fails at the same moment, and fixed waits
// would bring them all back in lockstep, again and again. Each wait is
// drawn at random within ±50% of its mean, and the mean doubles per failed
// attempt up to a ceiling, so the fleet spreads out and a long outage is
// not hammered.
package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

const (
	// Jitter is how far each wait is drawn around its mean: ±50%.
	Jitter = 0.5
	// Multiplier is how much the mean grows per failed attempt.
	Multiplier = 2
)

// Backoff is the waits of one retry loop. Not safe for concurrent use: one
// loop, one Backoff.
type Backoff struct {
	b *backoff.ExponentialBackOff
}

// New returns waits whose mean starts at initial and doubles per attempt
// up to ceiling (each wait within ±50% of its mean). A ceiling below
// initial is raised to it; initial must be positive.
func New(initial, ceiling time.Duration) *Backoff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = initial
	b.MaxInterval = max(ceiling, initial)
	b.RandomizationFactor = Jitter
	b.Multiplier = Multiplier
	b.Reset()
	return &Backoff{b: b}
}

// Next is the next wait, and grows the mean for the one after.
func (b *Backoff) Next() time.Duration { return b.b.NextBackOff() }

// Reset starts over from the initial mean: call it once an attempt
// succeeded, so that the next failure is retried soon again.
func (b *Backoff) Reset() { b.b.Reset() }

// Wait waits [Backoff.Next], or until ctx is done. It reports whether the
// wait ran out (true) rather than ctx ending (false): a loop stops on
// false.
func (b *Backoff) Wait(ctx context.Context) bool {
	return Sleep(ctx, b.Next())
}

// Sleep waits d, or until ctx is done; it reports whether d ran out.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
