package store

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/natstest"
)

// connect connects to srv as the store does across outages: reconnecting
// for ever, quickly.
func connect(t *testing.T, srv *natstest.Server) *nats.Conn {
	t.Helper()
	return srv.Connect(t, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
}

func openStore(t *testing.T, nc *nats.Conn) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := Open(ctx, nc, Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

func service(name string) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
		ApiVersion: model.APIVersion, Kind: model.KindService, Metadata: &policyv1.ObjectMeta{Name: name},
		Spec: &policyv1.ServiceSpec{Endpoints: []string{"127.0.0.1:1"}, Protocol: "http1"},
	}}}
}

func route(name, svc string) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{
		ApiVersion: model.APIVersion, Kind: model.KindRoute, Metadata: &policyv1.ObjectMeta{Name: name},
		Spec: &policyv1.RouteSpec{Path: "/" + name + "/", Service: svc},
	}}}
}

func binding(t *testing.T, name, svc string) *policyv1.Resource {
	t.Helper()
	cfg, err := structpb.NewStruct(map[string]any{"skipValidation": true})
	if err != nil {
		t.Fatal(err)
	}
	return &policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
		ApiVersion: model.APIVersion, Kind: model.KindPolicyBinding, Metadata: &policyv1.ObjectMeta{Name: name},
		Spec: &policyv1.PolicyBindingSpec{
			TargetRef: &policyv1.TargetRef{Kind: model.KindService, Name: svc},
			PolicyRef: &policyv1.PolicyRef{Name: model.PolicyTLSOutbound},
			Config:    cfg,
		},
	}}}
}

func apply3(t *testing.T, name string) []*policyv1.Resource {
	return []*policyv1.Resource{service(name), route(name, name), binding(t, name, name)}
}

// stored returns the last message of each resource's key (nil: none).
func stored(t *testing.T, st *Store, resources []*policyv1.Resource) []*jetstream.RawStreamMsg {
	t.Helper()
	out := make([]*jetstream.RawStreamMsg, len(resources))
	for i, r := range resources {
		msg, err := st.stream.GetLastMsgForSubject(context.Background(), st.prefix+configkv.Key(configkv.RefOf(r)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out[i] = msg
	}
	return out
}

// An apply of three resources is one atomic batch: consecutive revisions,
// one batch id, the commit marker on the last, and the revisions Write
// reports are those stored.
func TestWriteStoresOneBatch(t *testing.T) {
	t.Parallel()
	st := openStore(t, connect(t, natstest.Start(t)))
	res := apply3(t, "orders")
	outs, err := st.Write(context.Background(), res, false)
	if err != nil {
		t.Fatal(err)
	}
	msgs := stored(t, st, res)
	id := ""
	for i, m := range msgs {
		if m == nil {
			t.Fatalf("%s is not stored", outs[i].Ref)
		}
		if m.Sequence != outs[i].Revision || !outs[i].Created || !outs[i].Changed {
			t.Errorf("%s: stored at %d, outcome %+v", outs[i].Ref, m.Sequence, outs[i])
		}
		if i > 0 && m.Sequence != msgs[i-1].Sequence+1 {
			t.Errorf("%s stored at %d, not right after %d", outs[i].Ref, m.Sequence, msgs[i-1].Sequence)
		}
		if id == "" {
			id = m.Header.Get(jetstreamext.BatchIDHeader)
		}
		if got := m.Header.Get(jetstreamext.BatchIDHeader); got == "" || got != id {
			t.Errorf("%s: batch id %q, want %q shared by all", outs[i].Ref, got, id)
		}
		if got, want := m.Header.Get(jetstreamext.BatchCommitHeader) != "", i == len(msgs)-1; got != want {
			t.Errorf("%s: commit marker %t, want %t", outs[i].Ref, got, want)
		}
	}
	// The same apply again changes nothing and writes nothing.
	again, err := st.Write(context.Background(), res, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range again {
		if o.Changed || o.Revision != outs[i].Revision {
			t.Errorf("re-apply of %s: %+v", o.Ref, o)
		}
	}
}

// A batch whose expected revision of one key is stale is refused whole:
// the other two resources are not stored either, and the error is a
// conflict naming the key that moved.
func TestBatchRefusedByExpectedRevisionStoresNothing(t *testing.T) {
	t.Parallel()
	st := openStore(t, connect(t, natstest.Start(t)))
	ctx := context.Background()
	// The route exists at some revision; another writer moves it after
	// this apply checked it.
	first, err := st.Write(ctx, []*policyv1.Resource{route("orders", "orders")}, false)
	if err != nil {
		t.Fatal(err)
	}
	checked := first[0].Revision
	moved := route("orders", "orders")
	moved.GetRoute().Spec.Path = "/moved/"
	if _, err := st.Write(ctx, []*policyv1.Resource{moved}, false); err != nil {
		t.Fatal(err)
	}
	info, err := st.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := info.State.LastSeq

	res := apply3(t, "orders")
	outs := make([]Outcome, len(res))
	ws := make([]write, len(res))
	for i, r := range res {
		value, err := configkv.Encode(r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		outs[i] = Outcome{Ref: configkv.RefOf(r), Changed: true}
		ws[i] = write{out: &outs[i], res: r, value: value}
	}
	ws[1].lastRevision = checked // stale: the route is now past it
	err = st.publishBatch(ctx, ws)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("publishBatch = %v, want ErrConflict", err)
	}
	if want := "Route/orders"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name %s", err, want)
	}
	msgs := stored(t, st, res)
	if msgs[0] != nil || msgs[2] != nil {
		t.Errorf("a refused batch stored something: service %v, binding %v", msgs[0] != nil, msgs[2] != nil)
	}
	if msgs[1] == nil || string(msgs[1].Data) == string(ws[1].value) {
		t.Error("the route holds the refused batch's value")
	}
	info, err = st.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != before {
		t.Errorf("the stream moved from %d to %d", before, info.State.LastSeq)
	}
}

// A NATS restart in the middle of a batch (messages staged, no commit yet)
// leaves none of it stored; applies made while the server goes down and
// comes back are each stored whole or not at all.
func TestNATSRestartMidApplyIsAllOrNothing(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	nc := connect(t, srv)
	st := openStore(t, nc)
	ctx := context.Background()

	// Stage two of three messages of a batch, then restart the server
	// before the commit.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	staged := apply3(t, "staged")
	bp, err := jetstreamext.NewBatchPublisher(js)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range staged[:2] {
		value, err := configkv.Encode(r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(st.prefix + configkv.Key(configkv.RefOf(r)))
		msg.Data = value
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
		if err := bp.AddMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	waitConnected(t, nc)
	value, err := configkv.Encode(staged[2], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bp.Commit(ctx, st.prefix+configkv.Key(configkv.RefOf(staged[2])), value); err == nil {
		t.Error("a batch begun before the restart was committed after it")
	}
	for i, m := range stored(t, st, staged) {
		if m != nil {
			t.Errorf("%s of the interrupted batch is stored at %d", configkv.RefOf(staged[i]), m.Sequence)
		}
	}

	// Applies cut by a restart once their batch's first message is on
	// the wire: each is stored whole or not at all.
	for round := range 3 {
		res := apply3(t, "race"+strconv.Itoa(round))
		// A second connection sees the batch's messages as they are
		// published.
		spy := connect(t, srv)
		onWire := make(chan struct{}, 1)
		if _, err := spy.Subscribe(st.prefix+">", func(m *nats.Msg) {
			if m.Header.Get(jetstreamext.BatchIDHeader) != "" {
				select {
				case onWire <- struct{}{}:
				default:
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
		if err := spy.Flush(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err := st.Write(wctx, res, false)
			done <- err
		}()
		<-onWire
		spy.Close()
		srv.Restart()
		werr := <-done
		waitConnected(t, nc)
		n := 0
		for _, m := range stored(t, st, res) {
			if m != nil {
				n++
			}
		}
		if n != 0 && n != len(res) {
			t.Fatalf("round %d: %d of %d resources stored after a restart (write: %v)", round, n, len(res), werr)
		}
		if werr == nil && n == 0 {
			t.Errorf("round %d: Write succeeded but nothing is stored", round)
		}
		t.Logf("round %d: write %v, %d of %d stored", round, werr, n, len(res))
	}
	// And the store still writes.
	if _, err := st.Write(ctx, apply3(t, "after"), false); err != nil {
		t.Fatalf("write after the restarts: %v", err)
	}
}

// waitConnected awaits nc's (re)connection: its status listener, set up
// before the status is read, so a reconnection in between is not missed.
func waitConnected(t *testing.T, nc *nats.Conn) {
	t.Helper()
	connected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(connected)
	if nc.IsConnected() {
		return
	}
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatalf("no reconnection to NATS within 10s (status %v)", nc.Status())
	}
}
