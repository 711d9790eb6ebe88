package server

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"keyway.dev/internal/access"
)

// The live probe dials what a caller names, so each caller gets a budget of
// handshakes: DefaultProbeRate per second, up to DefaultProbeBurst at once.
// A request probing more endpoints than the burst is refused outright.
//
// Applies probe by default, and the same configuration is applied again and
// again (a pipeline re-applying its manifests, an edit of one route): an
// endpoint that answered one of the caller's probes successfully within
// probeRemember costs nothing to probe again. Scanning costs the same as
// before: endpoints that refuse, or cannot be reached, are charged every time.
const (
	DefaultProbeRate  rate.Limit = 10
	DefaultProbeBurst int        = 50
	// maxProbeCallers bounds the limiters kept; beyond it, idle callers
	// (whose budget has refilled) are forgotten first, then the least
	// recently seen.
	maxProbeCallers = 4096
	// probeRemember is how long a successful probe of an endpoint makes
	// probing it again free for that caller; maxRemembered bounds the
	// endpoints remembered per caller (the oldest are forgotten first).
	probeRemember = 10 * time.Minute
	maxRemembered = 256
)

// WithProbeLimit sets each caller's budget of probe handshakes: r per
// second, burst at once.
func WithProbeLimit(r rate.Limit, burst int) Option {
	return func(s *Server) { s.probeLimit = newProbeLimiter(r, burst) }
}

// callerKey names the caller whose probe budget a request spends: the
// identity the access middleware authenticated, else (under
// --insecure-no-auth) the peer's IP address, not its port, which a caller
// chooses freely.
func callerKey(ctx context.Context, peer connect.Peer) string {
	if c := access.FromContext(ctx); c != nil && c.Identity != "" {
		return c.Identity
	}
	if host, _, err := net.SplitHostPort(peer.Addr); err == nil {
		return host
	}
	return peer.Addr
}

// probeLimiter keeps one token bucket per caller, at most maxProbeCallers
// of them. Safe for concurrent use.
type probeLimiter struct {
	r     rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	callers map[string]*callerBudget
}

type callerBudget struct {
	lim  *rate.Limiter
	last time.Time
	// ok holds the endpoints this caller probed successfully, and when.
	ok map[string]time.Time
}

func newProbeLimiter(r rate.Limit, burst int) *probeLimiter {
	return &probeLimiter{r: r, burst: burst, now: time.Now, callers: map[string]*callerBudget{}}
}

// allow spends caller's budget for one handshake with each of endpoints
// (an endpoint may appear once per binding that targets it), or returns the
// ResourceExhausted error that says why not and when to retry. Endpoints the
// caller probed successfully within probeRemember are free; a request may
// not probe more than the burst in any case.
func (l *probeLimiter) allow(caller string, endpoints []string) error {
	if len(endpoints) == 0 {
		return nil
	}
	if len(endpoints) > l.burst {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"live probe refused: the request would probe %d endpoints, and a caller may probe at most %d at once; apply fewer bindings per request, or skip the probe (keywayctl apply or validate --probe=false)", len(endpoints), l.burst))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	c := l.callers[caller]
	if c == nil {
		l.makeRoom(now)
		c = &callerBudget{lim: rate.NewLimiter(l.r, l.burst)}
		l.callers[caller] = c
	}
	c.last = now
	n := 0
	for _, ep := range endpoints {
		if at, ok := c.ok[ep]; !ok || now.Sub(at) >= probeRemember {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	res := c.lim.ReserveN(now, n)
	delay := res.DelayFrom(now)
	if delay == 0 {
		return nil
	}
	res.CancelAt(now)
	retry := delay.Round(100 * time.Millisecond)
	if retry < delay {
		retry += 100 * time.Millisecond
	}
	err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
		"live probe refused: %s has probed too often (at most %g handshakes a second, %d at once, with endpoints that answered a probe in the last %s free); nothing was applied: retry in %s, or skip the probe (keywayctl apply or validate --probe=false)",
		caller, float64(l.r), l.burst, probeRemember, retry))
	if d, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); derr == nil {
		err.AddDetail(d)
	}
	return err
}

// succeeded records that caller's probes of endpoints succeeded, so that
// probing them again within probeRemember is free.
func (l *probeLimiter) succeeded(caller string, endpoints []string) {
	if len(endpoints) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.callers[caller]
	if c == nil {
		return // forgotten meanwhile: its next probe is charged
	}
	now := l.now()
	if c.ok == nil {
		c.ok = map[string]time.Time{}
	}
	for _, ep := range endpoints {
		if _, ok := c.ok[ep]; !ok && len(c.ok) >= maxRemembered {
			forgetOldest(c.ok, now)
		}
		c.ok[ep] = now
	}
}

// forgetOldest drops the entries of ok older than probeRemember, or, when
// none is, the oldest one.
func forgetOldest(ok map[string]time.Time, now time.Time) {
	var oldest string
	var at time.Time
	expired := false
	for ep, t := range ok {
		if now.Sub(t) >= probeRemember {
			delete(ok, ep)
			expired = true
			continue
		}
		if oldest == "" || t.Before(at) {
			oldest, at = ep, t
		}
	}
	if !expired && oldest != "" {
		delete(ok, oldest)
	}
}

// makeRoom forgets callers until one more fits: first those idle long
// enough to have their whole budget back (forgetting them loses nothing),
// then the least recently seen.
func (l *probeLimiter) makeRoom(now time.Time) {
	if len(l.callers) < maxProbeCallers {
		return
	}
	refill := time.Duration(float64(l.burst) / float64(l.r) * float64(time.Second))
	for k, c := range l.callers {
		if now.Sub(c.last) >= refill {
			delete(l.callers, k)
		}
	}
	for len(l.callers) >= maxProbeCallers {
		var oldest string
		var at time.Time
		for k, c := range l.callers {
			if oldest == "" || c.last.Before(at) {
				oldest, at = k, c.last
			}
		}
		delete(l.callers, oldest)
	}
}

// size is the number of callers remembered.
func (l *probeLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.callers)
}
