// Package natstest runs a real NATS server with JetStream inside a test
// process: the embedded nats-server (the same code as the binary, not a
// fake), on a free loopback port, with its store in the test's temporary
// folder, shut down at cleanup. It starts in milliseconds, so the unit tier
// (go test -short) uses it; the nats-server process with TLS and the
// natsperm users is tests/harness's, in the full tier.
//
// Every package's tests start NATS here rather than re-typing the
// bootstrap: [Start] for a server, [Server.Connect] and [Server.JetStream]
// for clients, [Server.Stop] and [Server.Restart] for an outage, and
// [Bucket] / [JetStream] for the configuration bucket as the policy service
// creates it.
package natstest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/configkv"
)

// readyTimeout bounds the wait for the server to accept connections; it
// takes milliseconds unless the machine is starved.
const readyTimeout = 10 * time.Second

// Server is an embedded NATS server with JetStream on 127.0.0.1. Its URL
// and store stay the same across [Server.Stop] and [Server.Restart], as an
// operator restarts one.
type Server struct {
	// URL is the client URL, nats://127.0.0.1:PORT.
	URL string

	tb   testing.TB
	opts server.Options

	mu sync.Mutex
	ns *server.Server
}

// Start runs a server for the test's lifetime and returns once it accepts
// connections. mods change its options before the start (a store folder of
// the caller's, a lower max_payload…); host, port and JetStream are set
// first: loopback, a free port, on.
func Start(tb testing.TB, mods ...func(*server.Options)) *Server {
	tb.Helper()
	opts := server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: tb.TempDir(), NoLog: true, NoSigs: true}
	for _, m := range mods {
		m(&opts)
	}
	s := &Server{tb: tb, opts: opts}
	s.start()
	// Restarts come back on the port the first start was given.
	s.opts.Port = s.Server().Addr().(*net.TCPAddr).Port
	s.URL = s.Server().ClientURL()
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.tb.Helper()
	opts := s.opts
	ns, err := server.NewServer(&opts)
	if err != nil {
		s.tb.Fatalf("natstest: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(readyTimeout) {
		ns.Shutdown()
		s.tb.Fatalf("natstest: server on %s:%d not ready within %s", opts.Host, opts.Port, readyTimeout)
	}
	s.mu.Lock()
	s.ns = ns
	s.mu.Unlock()
}

// Server is the running server, for what the helpers do not cover.
func (s *Server) Server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns
}

// Options are the options the server was started with (the port is the
// one it was given).
func (s *Server) Options() server.Options { return s.opts }

// Stop shuts the server down and waits until it is gone; clients see an
// outage. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	ns := s.ns
	s.ns = nil
	s.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// Restart stops the server if it runs and starts it again on the same port
// and store: streams and buckets survive, clients reconnect.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.start()
}

// Reload applies mod to the running server's options, as a configuration
// reload does (nats-server --signal reload).
func (s *Server) Reload(mod func(*server.Options)) {
	s.tb.Helper()
	opts := s.opts.Clone()
	mod(opts)
	if err := s.Server().ReloadOptions(opts); err != nil {
		s.tb.Fatalf("natstest: reloading options: %v", err)
	}
	s.opts = *opts
}

// Connect connects to the server with opts and closes the connection at
// cleanup.
func (s *Server) Connect(tb testing.TB, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.URL, opts...)
	if err != nil {
		tb.Fatalf("natstest: connecting to %s: %v", s.URL, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// JetStream connects ([Server.Connect]) and returns the JetStream context.
func (s *Server) JetStream(tb testing.TB, opts ...nats.Option) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(s.Connect(tb, opts...))
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	return js
}

// Bucket starts a server for the test's lifetime and returns its client URL
// and the configuration bucket ([JetStream]).
func Bucket(tb testing.TB) (string, jetstream.KeyValue) {
	tb.Helper()
	url, _, kv := JetStream(tb)
	return url, kv
}

// JetStream starts a server and creates the configuration bucket as the
// policy service does: history 5, its stream allowing atomic batch
// publish. It returns the client URL, the JetStream context the bucket was
// opened with, and the bucket.
func JetStream(tb testing.TB) (string, jetstream.JetStream, jetstream.KeyValue) {
	tb.Helper()
	s := Start(tb)
	js := s.JetStream(tb)
	return s.URL, js, ConfigBucket(tb, js)
}

// ConfigBucket creates the configuration bucket on js as the policy
// service does (history 5, atomic batch publish allowed).
func ConfigBucket(tb testing.TB, js jetstream.JetStream) jetstream.KeyValue {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: configkv.Bucket, History: 5})
	if err != nil {
		tb.Fatalf("natstest: creating bucket %s: %v", configkv.Bucket, err)
	}
	stream, err := js.Stream(ctx, "KV_"+configkv.Bucket)
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	cfg := stream.CachedInfo().Config
	cfg.AllowAtomicPublish = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		tb.Fatalf("natstest: allowing atomic publish on %s: %v", cfg.Name, err)
	}
	return kv
}
