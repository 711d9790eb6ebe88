package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "keyway.dev/gen/keyway/node/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/nodekv"
	"keyway.dev/internal/testwait"
)

// reportErrors writes a node's status with the errors it reports, as
// "key=message" pairs.
func (s *stack) reportErrors(t *testing.T, id string, rev uint64, errs ...string) {
	t.Helper()
	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kv, err := nodekv.Open(ctx, js, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	st := &nodev1.NodeStatus{Id: id, Revision: rev, ProxyAddress: "127.0.0.1:1", HeartbeatTime: timestamppb.Now()}
	for _, e := range errs {
		k, m, _ := strings.Cut(e, "=")
		st.Errors = append(st.Errors, &nodev1.NodeError{Key: k, Message: m, Time: timestamppb.Now()})
	}
	b, err := nodekv.Encode(st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, nodekv.Key(id), b); err != nil {
		t.Fatal(err)
	}
}

// watchToEnd follows a rollout until the service ends the stream and
// returns its last message.
func watchToEnd(t *testing.T, s *stack, rev, since uint64) *policyv1.Rollout {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := s.connect.WatchRollout(ctx, connect.NewRequest(&policyv1.WatchRolloutRequest{Revision: rev, Since: since, Timeout: durationpb.New(20 * time.Second)}))
	if err != nil {
		t.Fatal(err)
	}
	var last *policyv1.Rollout
	for stream.Receive() {
		last = stream.Msg().GetRollout()
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	return last
}

func refusals(r *policyv1.Rollout) string {
	var out []string
	for _, f := range r.GetRefusals() {
		out = append(out, fmt.Sprintf("%s %s@%d: %s", f.GetNodeId(), f.GetKey(), f.GetRevision(), f.GetMessage()))
	}
	return strings.Join(out, "; ")
}

// A node that reached a revision but refused a key of the change fails
// the rollout, named with its error; its error on an older key, from an
// earlier change, does not.
func TestRolloutReportsRefusals(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()

	old, err := apply(ctx, s.connect, false, service("old", "127.0.0.1:9443"))
	if err != nil {
		t.Fatal(err)
	}
	s.reportErrors(t, "a", old.GetRevision(), "service.old=cannot build: old trouble")

	// A new change, which the node applies cleanly: complete, even though
	// the node still reports its refusal of the old key.
	nw, err := apply(ctx, s.connect, false, service("new", "127.0.0.1:9444"))
	if err != nil {
		t.Fatal(err)
	}
	rev := nw.GetRevision()
	s.reportErrors(t, "a", rev, "service.old=cannot build: old trouble")
	if r := watchToEnd(t, s, rev, rev); !r.GetComplete() || r.GetFailed() || len(r.GetRefusals()) != 0 {
		t.Fatalf("rollout of a clean change beside an old refusal: complete=%t failed=%t refusals=%q, want complete and none", r.GetComplete(), r.GetFailed(), refusals(r))
	}

	// The node reaches the revision but refuses the new key: failed.
	s.reportErrors(t, "a", rev, "service.old=cannot build: old trouble", "service.new=listen tcp 127.0.0.1:9444: bind: address already in use")
	// The view follows the bucket: wait until it has the new report.
	testwait.Eventually(t, 30*time.Second, func() error {
		got, err := s.connect.ListNodes(ctx, connect.NewRequest(&policyv1.ListNodesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if ns := got.Msg.GetNodes(); len(ns) != 1 || len(ns[0].GetErrors()) != 2 {
			return fmt.Errorf("the node's second error is not listed: %v", ns)
		}
		return nil
	})
	r := watchToEnd(t, s, rev, rev)
	want := fmt.Sprintf("a service.new@%d: listen tcp 127.0.0.1:9444: bind: address already in use", rev)
	if r.GetComplete() || !r.GetFailed() || refusals(r) != want {
		t.Fatalf("rollout with the new key refused: complete=%t failed=%t refusals=%q, want failed with %q", r.GetComplete(), r.GetFailed(), refusals(r), want)
	}
	// GetRollout says the same; without since it takes the revision's own keys.
	got, err := s.connect.GetRollout(ctx, connect.NewRequest(&policyv1.GetRolloutRequest{Revision: rev}))
	if err != nil {
		t.Fatal(err)
	}
	if g := got.Msg.GetRollout(); !g.GetFailed() || refusals(g) != want {
		t.Fatalf("GetRollout: failed=%t refusals=%q, want %q", g.GetFailed(), refusals(g), want)
	}
}

// Apply with wait returns as soon as every node reached the revision and
// one refused a resource of the apply, with the refusal, rather than wait
// out its time or report the rollout complete.
func TestApplyWaitReportsRefusal(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	before, err := apply(ctx, s.connect, false, service("old", "127.0.0.1:9443"))
	if err != nil {
		t.Fatal(err)
	}
	next := before.GetRevision() + 1
	// The node is ahead of the apply (it reports the revision the apply
	// will write) and refuses the apply's key, and an older one.
	s.reportErrors(t, "a", next+100, "service.old=old trouble", "service.edge=cannot build: bad value")
	waitListed(t, s, "a")

	start := time.Now()
	resp, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{
		Resources: []*policyv1.Resource{service("edge", "127.0.0.1:9445")}, Wait: durationpb.New(20 * time.Second)}))
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Msg.GetRollout()
	want := fmt.Sprintf("a service.edge@%d: cannot build: bad value", resp.Msg.GetRevision())
	if r.GetComplete() || !r.GetFailed() || refusals(r) != want {
		t.Fatalf("apply with wait: complete=%t failed=%t refusals=%q, want failed with %q", r.GetComplete(), r.GetFailed(), refusals(r), want)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("apply with wait took %s: it waited out its time instead of returning on the refusal", d)
	}
}

// waitListed returns once ListNodes lists the node.
func waitListed(t *testing.T, s *stack, id string) {
	t.Helper()
	testwait.Eventually(t, 30*time.Second, func() error {
		nodes, err := s.connect.ListNodes(context.Background(), connect.NewRequest(&policyv1.ListNodesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes.Msg.GetNodes() {
			if n.GetId() == id {
				return nil
			}
		}
		return fmt.Errorf("node %s not listed", id)
	})
}
