package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
	"keyway.dev/policy/internal/app"
)

// report writes a node's status into the node bucket the way a proxy node
// does (keyway-proxy's registry writes the same key and encoding).
func (s *stack) report(t *testing.T, id string, rev uint64) {
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
	b, err := nodekv.Encode(&nodev1.NodeStatus{Id: id, Revision: rev, ProxyAddress: "127.0.0.1:1", HeartbeatTime: timestamppb.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, nodekv.Key(id), b); err != nil {
		t.Fatal(err)
	}
}

func ids(sts []*nodev1.NodeStatus) string {
	var out []string
	for _, s := range sts {
		out = append(out, fmt.Sprintf("%s@%d", s.GetId(), s.GetRevision()))
	}
	return strings.Join(out, ",")
}

// GetRollout and WatchRollout split the live nodes by the revision they
// serve; the watch sends the state at once, then each change, and ends
// when every node serves the revision.
func TestRolloutFollowsNodes(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	s.report(t, "a", 0)
	s.report(t, "b", 0)
	resp, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443"))
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.GetRevision()
	if rev == 0 || rev != resp.GetResults()[0].GetRevision() {
		t.Fatalf("ApplyResponse.revision %d, result revision %d", rev, resp.GetResults()[0].GetRevision())
	}
	// The view follows the bucket: wait for both nodes to be listed.
	testwait.Eventually(t, 30*time.Second, func() error {
		nodes, err := s.connect.ListNodes(ctx, connect.NewRequest(&policyv1.ListNodesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(nodes.Msg.GetNodes()); got != "a@0,b@0" {
			return fmt.Errorf("ListNodes: %s, want a@0,b@0", got)
		}
		return nil
	})
	// Revision 0 asks for the store's current revision.
	ro, err := s.grpc.GetRollout(ctx, &policyv1.GetRolloutRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r := ro.GetRollout(); r.GetRevision() != rev || r.GetComplete() || len(r.GetServing()) != 0 || ids(r.GetPending()) != "a@0,b@0" {
		t.Fatalf("GetRollout: %v", r)
	}

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := s.connect.WatchRollout(wctx, connect.NewRequest(&policyv1.WatchRolloutRequest{Revision: rev}))
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for stream.Receive() {
		r := stream.Msg().GetRollout()
		seen = append(seen, fmt.Sprintf("serving=%s pending=%s complete=%t", ids(r.GetServing()), ids(r.GetPending()), r.GetComplete()))
		switch len(seen) {
		case 1:
			s.report(t, "a", rev)
		case 2:
			s.report(t, "b", rev+1)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"serving= pending=a@0,b@0 complete=false",
		fmt.Sprintf("serving=a@%d pending=b@0 complete=false", rev),
		fmt.Sprintf("serving=a@%d,b@%d pending= complete=true", rev, rev+1),
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("WatchRollout sent:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// Apply with wait stores, then returns when every live node serves the
// revision, or when the wait passes with the rollout incomplete (still a
// success: the resources are stored).
func TestApplyWaitsForNodes(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	s.report(t, "a", 0)

	resp, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{
		Resources: []*policyv1.Resource{service("orders", "127.0.0.1:9443")}, Wait: durationpb.New(300 * time.Millisecond)}))
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Msg.GetRollout()
	if r == nil || r.GetComplete() || ids(r.GetPending()) != "a@0" || r.GetRevision() != resp.Msg.GetRevision() {
		t.Fatalf("apply with nobody serving: rollout %v", r)
	}

	// A node that follows the bucket: it reports each revision it sees.
	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := js.KeyValue(ctx, "keyway-config")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := cfg.WatchAll(wctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	var follower sync.WaitGroup
	follower.Go(func() {
		for e := range w.Updates() {
			if e != nil {
				s.report(t, "a", e.Revision())
				return
			}
		}
	})
	resp, err = s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{
		Resources: []*policyv1.Resource{service("orders", "127.0.0.1:9444")}, Wait: durationpb.New(30 * time.Second)}))
	follower.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Msg.GetRollout(); !r.GetComplete() || ids(r.GetServing()) != fmt.Sprintf("a@%d", resp.Msg.GetRevision()) {
		t.Fatalf("apply with a following node: rollout %v", r)
	}

	// A wait out of bounds is refused before anything is stored.
	_, err = s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{
		Resources: []*policyv1.Resource{service("orders", "127.0.0.1:9445")}, Wait: durationpb.New(-time.Second)}))
	if v := violations(t, err); len(v) != 1 || v[0].GetField() != "wait" {
		t.Fatalf("negative wait: %v", v)
	}
}

// A node that stops heartbeating leaves ListNodes after the bucket's TTL.
func TestNodeLeavesAfterTTL(t *testing.T) {
	t.Parallel()
	s := startStackWith(t, func(c *app.Config) { c.NodeTTL = time.Second })
	s.report(t, "gone", 0)
	list := func() string {
		resp, err := s.connect.ListNodes(context.Background(), connect.NewRequest(&policyv1.ListNodesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return ids(resp.Msg.GetNodes())
	}
	// The view follows the bucket: the node shows up, then ages out.
	testwait.Until(t, 30*time.Second, "the node to be listed after its heartbeat", func() bool { return list() == "gone@0" })
	testwait.Until(t, 30*time.Second, "the node to age out after its last heartbeat, with a TTL of 1s", func() bool { return list() == "" })
}

// Concurrent applies of one resource, each expecting the same stored
// revision: exactly one is stored; the others are ABORTED and say why.
func TestConcurrentAppliesOneWins(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	resp, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9000"))
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.GetRevision()
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			svc := service("orders", fmt.Sprintf("127.0.0.1:%d", 9001+i))
			svc.GetService().GetMetadata().Revision = rev
			_, errs[i] = apply(ctx, s.connect, false, svc)
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		var cerr *connect.Error
		switch {
		case err == nil:
			won++
		case errors.As(err, &cerr) && cerr.Code() == connect.CodeAborted && strings.Contains(cerr.Message(), fmt.Sprintf("metadata.revision is %d", rev)):
		default:
			t.Errorf("a losing apply: %v, want ABORTED naming the revision", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d applies won at revision %d, want exactly 1", won, rev)
	}
}
