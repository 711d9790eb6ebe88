package leader_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/natsperm"
	"keyway.dev/internal/natstest"
	"keyway.dev/internal/testwait"
	"keyway.dev/secrets/internal/leader"
)

// ttl is short so that takeovers happen within a test, and long enough
// for a starved machine to refresh in time.
const ttl = 3 * time.Second

// election records every change of every candidate and fails the test the
// moment two lead at once.
type election struct {
	t       *testing.T
	mu      sync.Mutex
	leading map[string]bool
	changes int
}

func (e *election) onChange(id string) func(bool) {
	return func(leading bool) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.changes++
		e.leading[id] = leading
		var n []string
		for c, l := range e.leading {
			if l {
				n = append(n, c)
			}
		}
		if len(n) > 1 {
			e.t.Errorf("two leaders at once: %v", n)
		}
	}
}

// leaders lists the candidates that say they lead.
func (e *election) leaders() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for c, l := range e.leading {
		if l {
			out = append(out, c)
		}
	}
	return out
}

type candidate struct {
	id    string
	lease *leader.Lease
	nc    *nats.Conn
	stop  context.CancelFunc
	done  chan struct{}
}

func (e *election) start(t *testing.T, s *natstest.Server, id string, opts ...nats.Option) *candidate {
	t.Helper()
	nc := s.Connect(t, opts...)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := leader.Open(ctx, js, leader.Config{TTL: ttl, ID: id, OnChange: e.onChange(id), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	c := &candidate{id: id, lease: l, nc: nc, stop: stop, done: make(chan struct{})}
	done := l.Start(runCtx)
	go func() { <-done; close(c.done) }()
	t.Cleanup(c.halt)
	return c
}

// halt stops the candidate cleanly and waits until it has.
func (c *candidate) halt() {
	c.stop()
	<-c.done
}

func newElection(t *testing.T) *election {
	return &election{t: t, leading: make(map[string]bool)}
}

// theLeader waits for exactly one leader among cs and returns it.
func (e *election) theLeader(t *testing.T, timeout time.Duration, cs []*candidate) *candidate {
	t.Helper()
	var got *candidate
	testwait.Eventually(t, timeout, func() error {
		ls := e.leaders()
		if len(ls) != 1 {
			return fmt.Errorf("leaders %v, want one", ls)
		}
		n := 0
		for _, c := range cs {
			if c.lease.Leader() {
				got = c
				n++
			}
		}
		if n != 1 || got.id != ls[0] {
			return fmt.Errorf("Leader() is true for %d candidates; the changes say %v", n, ls)
		}
		return nil
	})
	return got
}

func TestOneLeader(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d candidates", n), func(t *testing.T) {
			t.Parallel()
			s := natstest.Start(t)
			e := newElection(t)
			var cs []*candidate
			for i := range n {
				cs = append(cs, e.start(t, s, fmt.Sprintf("c%d", i)))
			}
			first := e.theLeader(t, 10*time.Second, cs)
			// It stays the one leader across refreshes.
			time.Sleep(ttl)
			if again := e.theLeader(t, time.Second, cs); again != first {
				t.Errorf("leadership moved from %s to %s without a failure", first.id, again.id)
			}
		})
	}
}

func TestCleanStopHandsOverAtOnce(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	e := newElection(t)
	cs := []*candidate{e.start(t, s, "a"), e.start(t, s, "b"), e.start(t, s, "c")}
	old := e.theLeader(t, 10*time.Second, cs)
	stopped := time.Now()
	old.halt()
	if old.lease.Leader() {
		t.Error("a stopped candidate still says it leads")
	}
	var rest []*candidate
	for _, c := range cs {
		if c != old {
			rest = append(rest, c)
		}
	}
	// Well before the lease could have expired: the release woke them.
	next := e.theLeader(t, ttl/2, rest)
	t.Logf("%s took over from %s after %s", next.id, old.id, time.Since(stopped))
}

func TestLeaderWithoutNATSStepsDown(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	e := newElection(t)
	cs := []*candidate{e.start(t, s, "a"), e.start(t, s, "b")}
	old := e.theLeader(t, 10*time.Second, cs)
	lost := time.Now()
	old.nc.Close()
	testwait.Until(t, ttl, "the leader that lost NATS to step down", func() bool { return !old.lease.Leader() })
	steppedDown := time.Since(lost)
	var other *candidate
	for _, c := range cs {
		if c != old {
			other = c
		}
	}
	next := e.theLeader(t, 3*ttl, []*candidate{other})
	tookOver := time.Since(lost)
	if steppedDown > ttl*2/3+ttl/6 {
		t.Errorf("the leader stepped down %s after losing NATS; want within 2/3 of the TTL (%s)", steppedDown, ttl*2/3)
	}
	if tookOver < ttl*2/3 {
		t.Errorf("%s took over %s after the leader lost NATS, before the lease could expire", next.id, tookOver)
	}
	t.Logf("stepped down after %s, %s took over after %s", steppedDown, next.id, tookOver)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.leading[old.id] {
		t.Error("the candidate without NATS was not told it stepped down")
	}
}

// The secrets user's permissions (package natsperm) are enough to
// campaign, refresh, watch and release; the candidates connect as it.
func TestSecretsUserMayCampaign(t *testing.T) {
	t.Parallel()
	if leader.DefaultBucket != natsperm.SecretsLeaderBucket {
		t.Fatalf("the lease's bucket %s is not the one natsperm grants (%s)", leader.DefaultBucket, natsperm.SecretsLeaderBucket)
	}
	var users []*natsserver.User
	for _, u := range natsperm.Users(natsperm.Buckets{}) {
		users = append(users, &natsserver.User{Username: u.Name, Password: "pw", Permissions: &natsserver.Permissions{
			Publish:   &natsserver.SubjectPermission{Allow: u.Publish},
			Subscribe: &natsserver.SubjectPermission{Allow: u.Subscribe},
		}})
	}
	s := natstest.Start(t, func(o *natsserver.Options) { o.Users = users })
	e := newElection(t)
	as := []nats.Option{nats.UserInfo(natsperm.Secrets, "pw"), nats.CustomInboxPrefix(natsconn.InboxPrefix(natsperm.Secrets))}
	cs := []*candidate{e.start(t, s, "a", as...), e.start(t, s, "b", as...)}
	old := e.theLeader(t, 10*time.Second, cs)
	old.halt()
	var rest []*candidate
	for _, c := range cs {
		if c != old {
			rest = append(rest, c)
		}
	}
	e.theLeader(t, ttl/2, rest)
}
