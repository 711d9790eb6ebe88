package dependents_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
	"keyway.dev/secrets/internal/dependents"
)

// configWith runs an embedded NATS server whose configuration bucket holds
// n tls-outbound bindings, binding i using alias edge/gw-<i mod 10>, and a
// Service (which references nothing).
func configWith(tb testing.TB, n int) jetstream.JetStream {
	tb.Helper()
	ns, err := server.NewServer(&server.Options{JetStream: true, Port: -1, Host: "127.0.0.1", StoreDir: tb.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		tb.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats not ready")
	}
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: configkv.Bucket, History: 5})
	if err != nil {
		tb.Fatal(err)
	}
	put := func(res *policyv1.Resource) {
		b, err := configkv.Encode(res, time.Now())
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := kv.Put(ctx, configkv.Key(configkv.RefOf(res)), b); err != nil {
			tb.Fatal(err)
		}
	}
	put(&policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
		ApiVersion: model.APIVersion, Kind: model.KindService, Metadata: &policyv1.ObjectMeta{Name: "orders"},
		Spec: &policyv1.ServiceSpec{Address: "orders.internal:8443"},
	}}})
	for i := range n {
		cfg, err := structpb.NewStruct(map[string]any{
			"skipValidation": false, "trustedCA": map[string]any{"truststore": "cas"},
			"certificate": map[string]any{"keystore": "edge", "alias": fmt.Sprintf("gw-%d", i%10)},
		})
		if err != nil {
			tb.Fatal(err)
		}
		put(&policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
			ApiVersion: model.APIVersion, Kind: model.KindPolicyBinding, Metadata: &policyv1.ObjectMeta{Name: fmt.Sprintf("b-%04d", i)},
			Spec: &policyv1.PolicyBindingSpec{
				TargetRef: &policyv1.TargetRef{Kind: model.KindService, Name: "orders"},
				PolicyRef: &policyv1.PolicyRef{Name: model.PolicyTLSOutbound}, Config: cfg,
			},
		}}})
	}
	return js
}

func TestOf(t *testing.T) {
	t.Parallel()
	js := configWith(t, 25)
	f := dependents.New(js, "")
	ctx := context.Background()
	deps, err := f.Of(ctx, secretref.Ref{Keystore: "edge", Alias: "gw-3"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range deps {
		got = append(got, d.String())
	}
	want := []string{
		"PolicyBinding/b-0003 (policyBinding.spec.config.certificate)",
		"PolicyBinding/b-0013 (policyBinding.spec.config.certificate)",
		"PolicyBinding/b-0023 (policyBinding.spec.config.certificate)",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("users of edge/gw-3: %q, want %q", got, want)
	}
	if deps, err := f.Of(ctx, secretref.Ref{Truststore: "cas"}); err != nil || len(deps) != 25 {
		t.Errorf("users of truststore cas: %d, %v; want 25", len(deps), err)
	}
	if deps, err := f.Of(ctx, secretref.Ref{Keystore: "other", Alias: "gw-3"}); err != nil || len(deps) != 0 {
		t.Errorf("users of an unused alias: %v, %v", deps, err)
	}
	// No bucket: no resource, so no user.
	if deps, err := dependents.New(js, "missing-config").Of(ctx, secretref.Ref{Truststore: "cas"}); err != nil || len(deps) != 0 {
		t.Errorf("users in a bucket that does not exist: %v, %v", deps, err)
	}
	// NATS away: unknown, said so.
	js.Conn().Close()
	if _, err := f.Of(ctx, secretref.Ref{Truststore: "cas"}); err == nil {
		t.Error("Of answered with NATS closed; want an error")
	}
}

// BenchmarkOf is the cost a delete pays to find a secret's users in a
// configuration of 1,000 bindings.
func BenchmarkOf(b *testing.B) {
	js := configWith(b, 1000)
	f := dependents.New(js, "")
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		deps, err := f.Of(ctx, secretref.Ref{Keystore: "edge", Alias: "gw-3"})
		if err != nil || len(deps) != 100 {
			b.Fatalf("%d users, %v", len(deps), err)
		}
	}
}
