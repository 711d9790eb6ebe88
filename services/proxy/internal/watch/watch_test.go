package watch

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/natstest"
	"keyway.dev/proxy/internal/publish"
)

// startBucket runs an embedded JetStream server and returns the bucket.
func startBucket(t testing.TB) jetstream.KeyValue {
	t.Helper()
	_, js, kv := natstest.JetStream(t)
	jetStreams.Store(kv, js)
	return kv
}

// jetStreams are the JetStream contexts of the buckets startBucket opened.
var jetStreams sync.Map

// kvJS is the JetStream context kv was opened with.
func kvJS(kv jetstream.KeyValue) jetstream.JetStream {
	js, _ := jetStreams.Load(kv)
	return js.(jetstream.JetStream)
}

// run starts w on kv and stops it (Run, then Drain) when the test ends.
func run(t *testing.T, w *Watcher, kv jetstream.KeyValue) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, kvJS(kv), kv) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		w.Drain(context.Background())
	})
}

func put(t *testing.T, kv jetstream.KeyValue, res *policyv1.Resource) uint64 {
	t.Helper()
	b, err := configkv.Encode(res, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(context.Background(), configkv.Key(configkv.RefOf(res)), b)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// lastRevision is the bucket's latest revision (a delete returns none).
func lastRevision(t *testing.T, kv jetstream.KeyValue) uint64 {
	t.Helper()
	st, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
}

func waitRevision(t *testing.T, w *Watcher, rev uint64) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := w.WaitRevision(ctx, rev)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	return err
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

func insecureBinding(t *testing.T, name, svc string) *policyv1.Resource {
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

// A restarted watch that applies a delete in its initial values and breaks
// before the end-of-initial-values marker must not lose that change: the
// next session publishes it, and the deleted Service's Upstream goes.
func TestResyncKeepsChangesOfABrokenSession(t *testing.T) {
	t.Parallel()
	kv := startBucket(t)
	put(t, kv, service("orders"))
	put(t, kv, route("orders", "orders"))
	svcKey := configkv.Key(model.Ref{Kind: model.KindService, Name: "orders"})

	w := New(Options{RetryInterval: time.Millisecond})
	var breaks atomic.Int32
	w.breakBefore = func(e jetstream.KeyValueEntry) bool {
		switch breaks.Load() {
		case 0: // the delete, live: the watch breaks before it arrives
			if e != nil && e.Key() == svcKey && e.Operation() != jetstream.KeyValuePut {
				breaks.Add(1)
				return true
			}
		case 1: // the restart reads the delete marker, then breaks again
			if e == nil {
				breaks.Add(1)
				return true
			}
		}
		return false
	}
	run(t, w, kv)
	if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
		t.Fatal(err)
	}
	if w.Snapshot().Upstreams.Get("orders") == nil {
		t.Fatal("no upstream for orders at start")
	}

	if err := kv.Delete(context.Background(), svcKey); err != nil {
		t.Fatal(err)
	}
	if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
		t.Fatal(err)
	}
	if n := breaks.Load(); n != 2 {
		t.Fatalf("the watch broke %d times, want 2", n)
	}
	if u := w.Snapshot().Upstreams.Get("orders"); u != nil {
		t.Errorf("the deleted Service's upstream is still served: %v", u.Endpoints())
	}
}

// An Upstream that cannot be built is reported against the change that
// broke it, the previous one keeps serving, and the report goes once the
// Upstream is back to what is built.
func TestUnbuildableUpstreamIsSkipped(t *testing.T) {
	t.Parallel()
	kv := startBucket(t)
	put(t, kv, service("orders"))
	put(t, kv, route("orders", "orders"))

	// Decodes as usual, except that the binding "unbuildable" loses its
	// trusted CAs while keeping verification on: upstream.New refuses it.
	decode := func(res *policyv1.Resource) (model.Object, error) {
		obj, err := model.Decode(res)
		if err == nil && obj.Binding != nil && obj.Binding.Name == "unbuildable" {
			obj.Binding.Outbound = &model.OutboundTLS{}
		}
		return obj, err
	}
	w := New(Options{Decode: decode})
	run(t, w, kv)
	if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
		t.Fatal(err)
	}
	before := w.Snapshot().Upstreams.Get("orders")

	rev := put(t, kv, insecureBinding(t, "unbuildable", "orders"))
	err := waitRevision(t, w, rev)
	var sk *publish.SkippedError
	if !errors.As(err, &sk) || sk.Key != "policybinding.unbuildable" || sk.Revision != rev {
		t.Fatalf("WaitRevision(%d) = %v, want the binding refused at %d", rev, err, rev)
	}
	s := w.Snapshot()
	if s.Revision != rev || len(s.Skipped) != 1 || s.Upstreams.Get("orders") != before {
		t.Errorf("snapshot at %d: skipped %v, upstream replaced: %t", s.Revision, s.Skipped, s.Upstreams.Get("orders") != before)
	}

	if err := kv.Delete(context.Background(), "policybinding.unbuildable"); err != nil {
		t.Fatal(err)
	}
	if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
		t.Errorf("after the delete: %v", err)
	}
	if s := w.Snapshot(); len(s.Skipped) != 0 || s.Upstreams.Get("orders") != before {
		t.Errorf("after the delete: skipped %v", s.Skipped)
	}
}

// UpstreamNames lists the Upstreams in order: after Services come, after
// one is rebuilt (the same names), and after one goes.
func TestUpstreamNamesFollowTheUpstreams(t *testing.T) {
	t.Parallel()
	kv := startBucket(t)
	w := New(Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, kvJS(kv), kv) }()
	t.Cleanup(func() { cancel(); <-done; w.Drain(context.Background()) })
	check := func(rev uint64, want ...string) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		if err := w.WaitRevision(wctx, rev); err != nil {
			t.Fatal(err)
		}
		s := w.Snapshot()
		if !slices.Equal(s.UpstreamNames, want) || s.Upstreams.Len() != len(want) {
			t.Errorf("at revision %d: UpstreamNames %v over %d upstreams, want %v", rev, s.UpstreamNames, s.Upstreams.Len(), want)
		}
	}
	putService := func(name, endpoint string) uint64 {
		return put(t, kv, &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
			ApiVersion: model.APIVersion, Kind: model.KindService, Metadata: &policyv1.ObjectMeta{Name: name},
			Spec: &policyv1.ServiceSpec{Endpoints: []string{endpoint}, Protocol: "http1"}}}})
	}
	putService("orders", "127.0.0.1:1")
	putService("billing", "127.0.0.1:2")
	check(putService("accounts", "127.0.0.1:3"), "accounts", "billing", "orders")
	check(putService("billing", "127.0.0.1:4"), "accounts", "billing", "orders") // rebuilt, same names
	if err := kv.Delete(context.Background(), "service.accounts"); err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check(st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq, "billing", "orders")
}

// An https:// Service that no binding targets gets the system-roots TLS
// context, as Flex Gateway reaches such a Service over TLS; a tls-outbound
// binding replaces it, and deleting the binding brings it back, never plain
// HTTP.
func TestHTTPSServiceDefaultsToSystemRoots(t *testing.T) {
	t.Parallel()
	kv := startBucket(t)
	svc := service("orders")
	svc.GetService().Spec = &policyv1.ServiceSpec{Address: "https://orders.internal:443"}
	put(t, kv, svc)
	w := New(Options{})
	run(t, w, kv)
	if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
		t.Fatal(err)
	}
	systemRoots := func(when string) {
		t.Helper()
		u := w.Snapshot().Upstreams.Get("orders")
		if u == nil || u.TLS() == nil || !u.TLS().SystemRoots || u.TLS().SkipValidation {
			t.Fatalf("%s: upstream TLS = %+v, want the system roots", when, u)
		}
	}
	systemRoots("without a binding")

	rev := put(t, kv, insecureBinding(t, "orders-tls", "orders"))
	if err := waitRevision(t, w, rev); err != nil {
		t.Fatal(err)
	}
	if u := w.Snapshot().Upstreams.Get("orders"); u.TLS() == nil || u.TLS().SystemRoots || !u.TLS().SkipValidation {
		t.Fatalf("with a binding: upstream TLS = %+v, want the binding's", u.TLS())
	}

	if err := kv.Delete(context.Background(), "policybinding.orders-tls"); err != nil {
		t.Fatal(err)
	}
	if err := waitRevision(t, w, lastRevision(t, kv)); err != nil {
		t.Fatal(err)
	}
	systemRoots("after the binding is deleted")
}

// Each route's Upstream is resolved when a snapshot is published: after
// every kind of change, every route finds the Upstream of its Service (nil
// when the Service has none), as a lookup by name would.
func TestRoutesFindTheirUpstream(t *testing.T) {
	t.Parallel()
	kv := startBucket(t)
	w := New(Options{})
	run(t, w, kv)
	putService := func(name, endpoint string) uint64 {
		return put(t, kv, &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
			ApiVersion: model.APIVersion, Kind: model.KindService, Metadata: &policyv1.ObjectMeta{Name: name},
			Spec: &policyv1.ServiceSpec{Endpoints: []string{endpoint}, Protocol: "http1"}}}})
	}
	// absent are the Services that have no Upstream at that step.
	check := func(step string, rev uint64, routes int, absent ...string) {
		t.Helper()
		waitRevision(t, w, rev)
		s := w.Snapshot()
		if got := len(s.Router.Routes()); got != routes {
			t.Fatalf("%s: %d routes, want %d", step, got, routes)
		}
		for _, r := range s.Router.Routes() {
			target, ok := s.Router.Match(httptest.NewRequest("GET", "/"+r.Name+"/x", nil), "")
			if !ok || target.Route != r.Name {
				t.Fatalf("%s: /%s/x matched %v", step, r.Name, target)
			}
			if got, want := s.Upstream(target), s.Upstreams.Get(r.Service); got != want {
				t.Errorf("%s: route %s to %s: Upstream %p, want %p", step, r.Name, r.Service, got, want)
			} else if (want == nil) != slices.Contains(absent, r.Service) {
				t.Errorf("%s: route %s: Service %s has an Upstream: %t", step, r.Name, r.Service, want != nil)
			}
		}
	}
	putService("orders", "127.0.0.1:1")
	putService("billing", "127.0.0.1:2")
	put(t, kv, route("ra", "orders"))
	put(t, kv, route("rb", "billing"))
	put(t, kv, route("rb2", "billing"))
	check("start", put(t, kv, route("rm", "missing")), 4, "missing")
	check("rebuilt Service", putService("billing", "127.0.0.1:4"), 4, "missing")
	check("new Service", putService("missing", "127.0.0.1:5"), 4)
	check("route moved", put(t, kv, route("ra", "billing")), 4)
	check("new route", put(t, kv, route("rc", "orders")), 5)
	if err := kv.Delete(context.Background(), "service.billing"); err != nil {
		t.Fatal(err)
	}
	check("deleted Service", lastRevision(t, kv), 5, "billing")
	check("route to no Service yet", put(t, kv, route("rd", "accounts")), 6, "billing", "accounts")
	check("it comes", putService("accounts", "127.0.0.1:6"), 6, "billing")
	if err := kv.Delete(context.Background(), "route.rb2"); err != nil {
		t.Fatal(err)
	}
	check("route deleted", lastRevision(t, kv), 5, "billing")
	check("route back, to another Service", put(t, kv, route("rb2", "accounts")), 6, "billing")
}
