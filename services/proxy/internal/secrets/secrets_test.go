package secrets_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"keyway.dev/common/material/materialtest"
	"keyway.dev/common/model"
	"keyway.dev/common/testca"
	"keyway.dev/proxy/internal/natstest"
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
		if _, err := versions.Put(ctx, secrets.AliasKey(model.SecretRef{Keystore: keystore, Alias: alias}), b); err != nil {
			t.Fatal(err)
		}
	}
	announce("edge", "gw")
	deadline := time.Now().Add(30 * time.Second)
	for src.Status().Stale {
		if time.Now().After(deadline) {
			t.Fatalf("still stale once the bucket exists: %+v", src.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}

	ref := model.SecretRef{Keystore: "edge", Alias: "gw"}
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
