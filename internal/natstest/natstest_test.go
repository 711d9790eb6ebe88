package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/natstest"
)

// A restart keeps the URL and the store: a value put before is read after,
// by a client that reconnected on its own.
func TestRestartKeepsURLAndStore(t *testing.T) {
	t.Parallel()
	s := natstest.Start(t)
	url := s.URL
	reconnected := make(chan struct{}, 1)
	js := s.JetStream(t, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if s.URL != url {
		t.Errorf("URL after restart %s, want %s", s.URL, url)
	}
	select {
	case <-reconnected:
	case <-ctx.Done():
		t.Fatal("the client did not reconnect after the restart")
	}
	e, err := kv.Get(ctx, "k")
	if err != nil || string(e.Value()) != "v" {
		t.Fatalf("after restart: %v %v, want v", e, err)
	}
}

func TestConfigBucketAllowsAtomicPublish(t *testing.T) {
	t.Parallel()
	_, js, kv := natstest.JetStream(t)
	st, err := js.Stream(t.Context(), "KV_"+kv.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	if !st.CachedInfo().Config.AllowAtomicPublish {
		t.Error("the configuration bucket's stream does not allow atomic publish")
	}
}
