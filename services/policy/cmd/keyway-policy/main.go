// Command keyway-policy serves Keyway's policy API: it validates resources
// and stores them in NATS JetStream KV.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"keyway.dev/internal/access"
	"keyway.dev/internal/audit"
	"keyway.dev/internal/certevents"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/envflag"
	"keyway.dev/internal/logging"
	"keyway.dev/internal/material"
	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/nodekv"
	"keyway.dev/internal/telemetry"
	"keyway.dev/policy/internal/app"
	"keyway.dev/policy/internal/server"
	"keyway.dev/policy/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "keyway-policy:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context, args []string) error {
	// envAliases are the environment names the flags had before
	// KEYWAY_<FLAG>; still read.
	envAliases := envflag.Aliases{
		"listen": {"KEYWAY_POLICY_LISTEN"},
		"nats":   {"KEYWAY_NATS_URL"},
	}
	fs := flag.NewFlagSet("keyway-policy", flag.ContinueOnError)
	var (
		listen    = fs.String("listen", "127.0.0.1:8081", "API address: Connect, gRPC and gRPC-Web")
		consoleLn = fs.String("console-listen", "", "operator console address, e.g. 127.0.0.1:8085 (read-only HTML pages, served with the API's TLS and access control; viewer suffices); empty: no console")
		natsURL   = fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
		bucket    = fs.String("bucket", configkv.Bucket, "JetStream KV bucket holding the configuration")
		replicas  = fs.Int("replicas", 1, "replicas of the bucket in a NATS cluster (3 in production)")
		nodes     = fs.String("node-bucket", nodekv.Bucket, "node registry KV bucket")
		nodeTTL   = fs.Duration("node-ttl", nodekv.DefaultTTL, "node bucket TTL when this service creates it: a node is listed this long after its last heartbeat")
		secrets   = fs.String("secrets-server", "", "secrets service API URL, e.g. https://127.0.0.1:8082 (the service presents --secrets-cert there); inline private keys are moved into it at apply; without it, references to keystores and truststores and inline private keys are refused")
		internal  = fs.String("secrets-internal-url", "", "secrets service internal port (MaterialService, mTLS), e.g. https://127.0.0.1:8092, for the live probe of bindings with references")
		secCert   = fs.String("secrets-cert", "", "client certificate (PEM) for the secrets service's API and internal port")
		secKey    = fs.String("secrets-key", "", "key of --secrets-cert (PEM)")
		secCA     = fs.String("secrets-ca", "", "CA (PEM) that signs the secrets service's API and internal port certificates")
		probeTO   = fs.Duration("probe-timeout", server.DefaultProbeTimeout, "live probe: time for one upstream endpoint (TCP connection, TLS handshake, one HTTP request)")
		probeDL   = fs.Duration("probe-deadline", server.DefaultProbeDeadline, "live probe: time for all the endpoints of one Apply (probed at once), fetching referenced key material included; at most 1m")
		logFormat = fs.String("log-format", "text", "log format: text or json")
		expiryAt  = fs.String("cert-expiry-thresholds", certevents.FormatThresholds(certevents.DefaultThresholds), "times left (30d, 12h) under which the service's own certificates (api-server, internal-client) are announced on NATS subject "+certevents.Subject+", once per certificate and threshold")
		logLevel  = fs.String("log-level", "info", "log level: debug, info, warn, error")
	)
	var natsCfg natsconn.Config
	natsCfg.RegisterFlags(fs) // --nats-ca, --nats-user, --nats-password-file
	auditFlags := audit.AddFlags(fs)
	var acc access.Options
	acc.RegisterFlags(fs, "API")
	if err := envflag.Parse(fs, envflag.Prefix, args, envAliases); err != nil {
		if errors.Is(err, envflag.ErrVersion) || errors.Is(err, flag.ErrHelp) {
			return nil // printed: --version and --help answer before the flags are checked
		}
		return err
	}
	auditCfg, err := auditFlags.Config(audit.ServicePolicy, *replicas)
	if err != nil {
		return err
	}
	if err := server.CheckProbeBounds(*probeTO, *probeDL); err != nil {
		return err
	}
	expiryThresholds, err := certevents.ParseThresholds(*expiryAt)
	if err != nil {
		return fmt.Errorf("--cert-expiry-thresholds: %w", err)
	}
	log, err := logging.New(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	tr, shutdown, err := telemetry.Setup(ctx, "keyway-policy")
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("flushing traces at exit", "error", err)
		}
	}()
	if tr.On() {
		log.Info("tracing on", "exporter", os.Getenv("OTEL_TRACES_EXPORTER"))
	}
	return app.Run(ctx, app.Config{
		Listen:        *listen,
		ConsoleListen: *consoleLn,
		Access:        acc,
		NATSURL:       *natsURL,
		NATS:          natsCfg,
		Store:         store.Config{Bucket: *bucket, Replicas: *replicas},
		NodeBucket:    *nodes,
		NodeTTL:       *nodeTTL,
		Tracing:       tr,
		Log:           log.With("service", "policy"),

		SecretsServer:    *secrets,
		Material:         material.Config{URL: *internal, CertFile: *secCert, KeyFile: *secKey, CAFile: *secCA},
		Audit:            auditCfg,
		ProbeTimeout:     *probeTO,
		ProbeDeadline:    *probeDL,
		ExpiryThresholds: expiryThresholds,
	})
}
