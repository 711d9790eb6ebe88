package secrets_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"

	"keyway.dev/internal/material/materialtest"
	"keyway.dev/internal/natstest"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/telemetry"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/proxy/internal/secrets"
)

// changes collects what a Source reports.
type changes struct {
	mu   sync.Mutex
	keys []string
	ch   chan struct{}
}

func (c *changes) add(keys []string) {
	c.mu.Lock()
	c.keys = append(c.keys, keys...)
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

func (c *changes) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.keys)
}

func TestSourceFetchesAnnouncedVersionsOfKeysInUse(t *testing.T) {
	t.Parallel()
	url, _ := natstest.Bucket(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	fake := materialtest.Start(t)
	ca := testca.New(t, "CA")
	gw := ca.Client("gateway")
	fake.PutAlias("edge", "gw", gw)
	fake.PutAlias("edge", "unused", ca.Client("unused"))
	got := &changes{ch: make(chan struct{}, 1)}
	src := secrets.New(fake.Client(t), secrets.Options{Changed: got.add, RetryInterval: 50 * time.Millisecond})

	// Before the bucket exists the source is stale and says why.
	go src.Run(ctx, js)
	if st := src.Status(); !st.Stale || st.Reason == "" {
		t.Errorf("status before the bucket exists: %+v, want stale with a reason", st)
	}
	versions, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: secrets.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	announce := func(keystore, alias string) {
		b, _ := proto.Marshal(fake.SecretVersion(keystore, alias))
		if _, err := versions.Put(ctx, secrets.AliasKey(secretref.Ref{Keystore: keystore, Alias: alias}), b); err != nil {
			t.Fatal(err)
		}
	}
	announce("edge", "gw")
	testwait.Eventually(t, 30*time.Second, func() error {
		if st := src.Status(); st.Stale {
			return fmt.Errorf("still stale once the bucket exists: %+v", st)
		}
		return nil
	})

	ref := secretref.Ref{Keystore: "edge", Alias: "gw"}
	a, err := src.Alias(ctx, ref)
	if err != nil || a.Fingerprint != gw.Fingerprint() || a.Version != "1" {
		t.Fatalf("Alias: %+v, %v", a, err)
	}
	fetches := fake.Fetches()
	if again, _ := src.Alias(ctx, ref); again != a || fake.Fetches() != fetches {
		t.Error("a second Alias call fetched again instead of using the cached version")
	}

	// The same version announced again fetches nothing; a key not in use
	// is not fetched at all.
	announce("edge", "gw")
	fake.PutAlias("edge", "unused", ca.Client("unused"))
	announce("edge", "unused")
	rotated := ca.Client("gateway")
	fake.PutAlias("edge", "gw", rotated)
	announce("edge", "gw")
	select {
	case <-got.ch:
	case <-time.After(30 * time.Second):
		t.Fatal("no change reported for a new version")
	}
	if keys := got.list(); !slices.Equal(keys, []string{"alias.edge.gw"}) {
		t.Errorf("changes %v, want only alias.edge.gw", keys)
	}
	if n := fake.Fetches() - fetches; n != 1 {
		t.Errorf("%d fetches for one new version of one key in use, want 1", n)
	}
	if a, _ := src.Alias(ctx, ref); a.Fingerprint != rotated.Fingerprint() || a.Version != "2" {
		t.Errorf("after the rotation Alias gives version %s %s", a.Version, a.Fingerprint)
	}
}

// With tracing on, each fetch is a keyway.secret.fetch span naming the
// secret and the version fetched, or the error.
func TestSourceTracesFetches(t *testing.T) {
	t.Parallel()
	fake := materialtest.Start(t)
	ca := testca.New(t, "CA")
	fake.PutAlias("edge", "gw", ca.Client("gateway"))
	rec := tracetest.NewSpanRecorder()
	src := secrets.New(fake.Client(t), secrets.Options{Tracing: telemetry.New(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))})
	ctx := context.Background()
	if _, err := src.Alias(ctx, secretref.Ref{Keystore: "edge", Alias: "gw"}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Truststore(ctx, "missing"); err == nil {
		t.Fatal("a missing truststore was fetched")
	}
	ended := rec.Ended()
	if len(ended) != 2 {
		t.Fatalf("%d spans, want 2", len(ended))
	}
	attrs := func(i int) map[string]string {
		m := map[string]string{}
		for _, a := range ended[i].Attributes() {
			m[string(a.Key)] = a.Value.String()
		}
		return m
	}
	if a := attrs(0); ended[0].Name() != telemetry.SpanSecretFetch || a["keyway.secret.ref"] != "keystore/edge#gw" || a["keyway.secret.version"] != "1" {
		t.Errorf("alias span %s %v", ended[0].Name(), a)
	}
	if a := attrs(1); a["keyway.secret.ref"] != "truststore/missing" || ended[1].Status().Code != codes.Error {
		t.Errorf("truststore span %v, status %+v; want an error", a, ended[1].Status())
	}
}
