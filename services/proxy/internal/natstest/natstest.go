// Package natstest runs a real NATS server with JetStream inside a test
// process (the embedded nats-server, not a fake) and creates the
// configuration bucket as the policy service does.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/common/configkv"
)

// Bucket starts a server on a free loopback port for the test's lifetime
// and returns its client URL and the configuration bucket.
func Bucket(tb testing.TB) (string, jetstream.KeyValue) {
	tb.Helper()
	url, _, kv := JetStream(tb)
	return url, kv
}

// JetStream is [Bucket], with the JetStream context the bucket was opened
// with. The bucket's stream allows atomic batch publish, as the policy
// service sets it.
func JetStream(tb testing.TB) (string, jetstream.JetStream, jetstream.KeyValue) {
	tb.Helper()
	ns, err := server.NewServer(&server.Options{JetStream: true, Port: -1, Host: "127.0.0.1", StoreDir: tb.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		tb.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("natstest: server not ready")
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
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: configkv.Bucket, History: 5})
	if err != nil {
		tb.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), "KV_"+configkv.Bucket)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.AllowAtomicPublish = true
	if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
		tb.Fatal(err)
	}
	return ns.ClientURL(), js, kv
}
