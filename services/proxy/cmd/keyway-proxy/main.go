// Command keyway-proxy is a Keyway proxy node: it follows the configuration
// bucket in NATS JetStream KV and forwards requests to upstreams over mTLS.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"keyway.dev/common/configkv"
	"keyway.dev/proxy/internal/node"
	"keyway.dev/proxy/internal/upstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "keyway-proxy:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context) error {
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("keyway-proxy", flag.ContinueOnError)
	var (
		listen    = fs.String("listen", env("KEYWAY_LISTEN", "127.0.0.1:8080"), "proxy listen address (env KEYWAY_LISTEN)")
		admin     = fs.String("admin-listen", env("KEYWAY_ADMIN_LISTEN", "127.0.0.1:9080"), "admin listen address: /healthz, /status (env KEYWAY_ADMIN_LISTEN)")
		natsURL   = fs.String("nats", env("KEYWAY_NATS", "nats://127.0.0.1:4222"), "NATS server URL (env KEYWAY_NATS)")
		bucket    = fs.String("bucket", env("KEYWAY_BUCKET", configkv.Bucket), "configuration KV bucket (env KEYWAY_BUCKET)")
		nodeID    = fs.String("node-id", env("KEYWAY_NODE_ID", host+"-"+strconv.Itoa(os.Getpid())), "node id (env KEYWAY_NODE_ID)")
		logFormat = fs.String("log-format", env("KEYWAY_LOG_FORMAT", "text"), "log format: text or json (env KEYWAY_LOG_FORMAT)")
		logLevel  = fs.String("log-level", env("KEYWAY_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env KEYWAY_LOG_LEVEL)")
		hsTimeout = fs.String("handshake-timeout", env("KEYWAY_HANDSHAKE_TIMEOUT", upstream.DefaultHandshakeTimeout.String()), "upstream TLS handshake timeout (env KEYWAY_HANDSHAKE_TIMEOUT)")
	)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	handshakeTimeout, err := time.ParseDuration(*hsTimeout)
	if err != nil || handshakeTimeout <= 0 {
		return fmt.Errorf("--handshake-timeout: %q is not a positive duration", *hsTimeout)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch *logFormat {
	case "text":
		h = slog.NewTextHandler(os.Stderr, hopts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, hopts)
	default:
		return fmt.Errorf("--log-format: %q is not text or json", *logFormat)
	}
	return node.Run(ctx, node.Config{
		Listen:           *listen,
		AdminListen:      *admin,
		NATSURL:          *natsURL,
		Bucket:           *bucket,
		NodeID:           *nodeID,
		HandshakeTimeout: handshakeTimeout,
		Logger:           slog.New(h),
	})
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}
