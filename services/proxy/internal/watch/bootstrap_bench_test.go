package watch

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// BenchmarkBootstrap: a watcher reading a bucket of 10,000 Services, each
// with a Route and an mTLS binding, until its first snapshot is published
// (what a node does before it answers /healthz). Profile it with
// -cpuprofile to see where a cold start goes.
func BenchmarkBootstrap(b *testing.B) {
	kv := fill(b, 10_000)
	for b.Loop() {
		w := New(Options{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx, kvJS(kv), kv) }()
		select {
		case <-w.Ready():
		case <-time.After(5 * time.Minute):
			b.Fatal("not ready after 5 minutes")
		}
		cancel()
		<-done
		w.Drain(context.Background())
	}
}

func fill(b *testing.B, n int) jetstream.KeyValue {
	b.Helper()
	kv := startBucket(b)
	ca := testca.New(b, "bench CA")
	client := ca.Client("gateway")
	cfg, err := structpb.NewStruct(map[string]any{
		"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "upstream.bench",
		"certificate": map[string]any{"key": string(client.KeyPEM), "crt": string(client.CertPEM)},
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	for i := range n {
		name := fmt.Sprintf("svc-%05d", i)
		for _, res := range []*policyv1.Resource{
			{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{ApiVersion: model.APIVersion, Kind: model.KindService, Metadata: &policyv1.ObjectMeta{Name: name},
				Spec: &policyv1.ServiceSpec{Endpoints: []string{"127.0.0.1:1"}, Protocol: "http1"}}}},
			{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{ApiVersion: model.APIVersion, Kind: model.KindRoute, Metadata: &policyv1.ObjectMeta{Name: name},
				Spec: &policyv1.RouteSpec{Path: "/" + name + "/", Service: name}}}},
			{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{ApiVersion: model.APIVersion, Kind: model.KindPolicyBinding, Metadata: &policyv1.ObjectMeta{Name: name + "-mtls"},
				Spec: &policyv1.PolicyBindingSpec{TargetRef: &policyv1.TargetRef{Kind: model.KindService, Name: name}, PolicyRef: &policyv1.PolicyRef{Name: model.PolicyTLSOutbound}, Config: cfg}}}},
		} {
			v, err := configkv.Encode(res, now)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := kv.Put(ctx, configkv.Key(configkv.RefOf(res)), v); err != nil {
				b.Fatal(err)
			}
		}
	}
	return kv
}

// BenchmarkOneChange: one binding change, and one route change, applied by
// a watcher that holds 100, then 10,000 Services, routes and bindings, from the KV put to the snapshot
// that serves it. "route" puts the route's value again; "route-path" moves
// the route to another path and back, put after put. With -cpuprofile it
// shows what a change costs beyond the Upstream it rebuilds.
func BenchmarkOneChange(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("binding-%d", n), func(b *testing.B) { oneChange(b, n, "policybinding.svc-00042-mtls", nil) })
		b.Run(fmt.Sprintf("route-%d", n), func(b *testing.B) { oneChange(b, n, "route.svc-00042", nil) })
		moved, err := configkv.Encode(&policyv1.Resource{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{ApiVersion: model.APIVersion, Kind: model.KindRoute,
			Metadata: &policyv1.ObjectMeta{Name: "svc-00042"}, Spec: &policyv1.RouteSpec{Path: "/moved/svc-00042/", Service: "svc-00042"}}}}, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("route-path-%d", n), func(b *testing.B) { oneChange(b, n, "route.svc-00042", moved) })
	}
}

// oneChange puts key's value again and again, alternating with other when
// it is set.
func oneChange(b *testing.B, n int, key string, other []byte) {
	kv := fill(b, n)
	w := New(Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, kvJS(kv), kv) }()
	<-w.Ready()
	e, err := kv.Get(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	values := [][]byte{e.Value()}
	if other != nil {
		values = append(values, other)
	}
	i := 0
	for b.Loop() {
		i++
		rev, err := kv.Put(ctx, key, values[i%len(values)])
		if err != nil {
			b.Fatal(err)
		}
		if err := w.WaitRevision(ctx, rev); err != nil {
			b.Fatal(err)
		}
	}
	cancel()
	<-done
	w.Drain(context.Background())
}
