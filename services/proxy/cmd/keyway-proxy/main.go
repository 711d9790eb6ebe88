// Command keyway-proxy is a Keyway proxy node: it follows the configuration
// bucket in NATS JetStream KV and forwards requests to upstreams over mTLS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"keyway.dev/internal/access"
	"keyway.dev/internal/certevents"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/envflag"
	"keyway.dev/internal/logging"
	"keyway.dev/internal/material"
	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/nodekv"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/telemetry"
	"keyway.dev/proxy/internal/inbound"
	"keyway.dev/proxy/internal/node"
	"keyway.dev/proxy/internal/secrets"
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
	// envAliases are the environment names the flags had before
	// KEYWAY_<FLAG>; still read.
	envAliases := envflag.Aliases{
		"listen":       {"KEYWAY_PROXY_LISTEN"},
		"admin-listen": {"KEYWAY_PROXY_ADMIN_LISTEN"},
		"nats":         {"KEYWAY_NATS_URL"},
	}
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("keyway-proxy", flag.ContinueOnError)
	var (
		listen    = fs.String("listen", "127.0.0.1:8080", "proxy listen address")
		admin     = fs.String("admin-listen", "127.0.0.1:9080", "admin listen address: /healthz, /status, /metrics, and /debug/pprof/ with --pprof")
		natsURL   = fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL")
		bucket    = fs.String("bucket", configkv.Bucket, "configuration KV bucket")
		nodeID    = fs.String("node-id", defaultNodeID(host), "node id: letters, digits, '-', '_', '='")
		nodes     = fs.String("node-bucket", nodekv.Bucket, "node registry KV bucket")
		heartbeat = fs.String("heartbeat", nodekv.DefaultHeartbeat.String(), "interval between node status writes")
		nodeTTL   = fs.String("node-ttl", "", "node bucket TTL when this node creates it; default 3 heartbeats")
		replicas  = fs.Int("replicas", 1, "replicas of the node bucket when this node creates it, in a NATS cluster (3 in production, as the policy service's --replicas)")
		logFormat = fs.String("log-format", "text", "log format: text or json")
		logLevel  = fs.String("log-level", "info", "log level: debug, info, warn, error")
		secURL    = fs.String("secrets-internal-url", "", "secrets service internal port (MaterialService, mTLS), e.g. https://127.0.0.1:8092; without it, bindings and Listeners that reference keystores or truststores are refused")
		secCert   = fs.String("secrets-cert", "", "this node's client certificate (PEM) for the internal port, issued by the internal CA")
		secKey    = fs.String("secrets-key", "", "key of --secrets-cert (PEM)")
		secCA     = fs.String("secrets-ca", "", "CA (PEM) that signs the internal port's certificate")
		maxHeader = fs.String("max-header-bytes", strconv.Itoa(inbound.DefaultMaxHeaderBytes), "largest request header block accepted on the proxy port and every Listener, in bytes (HTTP/1.1 and HTTP/2); larger requests get 431")
		inboundH1 = fs.String("inbound-http1", "direct", "server of HTTP/1.1 on the proxy port and the Listeners: direct (one goroutine per connection, no background read) or net/http (net/http's server, as before; the way back)")
		inboundH2 = fs.String("inbound-http2", "direct", "server of h2 on the Listeners: direct (package inbound/h2: headers and body of a response handed over together, flushed in the connection's loop) or net/http (net/http's server, as before; the way back)")
		hsTimeout = fs.String("handshake-timeout", upstream.DefaultHandshakeTimeout.String(), "upstream TLS handshake timeout")
		revMax    = fs.String("revocation-max-refresh", revocation.DefaultMaxRefresh.String(), "longest time between two fetches of a CRL or OCSP response that Listener hosts check client certificates against, however far its nextUpdate: how long a revocation may go unseen")
		revMin    = fs.String("revocation-min-refresh", revocation.DefaultMinRefresh.String(), "shortest time between two fetches of one CRL, and the first retry delay after a failed fetch (doubled up to --revocation-max-refresh)")
		expiryAt  = fs.String("cert-expiry-thresholds", certevents.FormatThresholds(certevents.DefaultThresholds), "times left (30d, 12h) under which a certificate the node presents or trusts is announced on NATS subject "+certevents.Subject+", once per certificate and threshold")
	)
	presentedRev := fs.Bool("presented-revocation", true, "fetch the revocation state of the certificates the node presents, from the CRL distribution points and OCSP responders they name: staple the OCSP response to Listener certificates, and report the state in the node status (keywayctl certs)")
	var natsCfg natsconn.Config
	natsCfg.RegisterFlags(fs) // --nats-ca, --nats-user, --nats-password-file
	pprofOn := fs.Bool("pprof", false, "serve Go's profiler at /debug/pprof/ on the admin port, to the operator role")
	var adminAccess access.Options
	adminAccess.RegisterFlags(fs, "admin port")
	var gc gcSettings
	gc.registerFlags(fs)
	if err := envflag.Parse(fs, envflag.Prefix, os.Args[1:], envAliases); err != nil {
		if errors.Is(err, envflag.ErrVersion) || errors.Is(err, flag.ErrHelp) {
			return nil // printed: --version and --help answer before the flags are checked
		}
		return err
	}
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	gcSet, err := gc.resolve(given, os.Getenv)
	if err != nil {
		return err
	}
	handshakeTimeout, err := time.ParseDuration(*hsTimeout)
	if err != nil || handshakeTimeout <= 0 {
		return fmt.Errorf("--handshake-timeout: %q is not a positive duration", *hsTimeout)
	}
	revMaxRefresh, revMinRefresh, err := parseRevocationRefresh(*revMax, *revMin)
	if err != nil {
		return err
	}
	expiryThresholds, err := certevents.ParseThresholds(*expiryAt)
	if err != nil {
		return fmt.Errorf("--cert-expiry-thresholds: %w", err)
	}
	maxHeaderBytes, err := parseMaxHeaderBytes(*maxHeader)
	if err != nil {
		return err
	}
	if *inboundH1 != "direct" && *inboundH1 != "net/http" {
		return fmt.Errorf("--inbound-http1: %q is neither direct nor net/http; the default is direct", *inboundH1)
	}
	if *inboundH2 != "direct" && *inboundH2 != "net/http" {
		return fmt.Errorf("--inbound-http2: %q is neither direct nor net/http; the default is direct", *inboundH2)
	}
	hb, err := time.ParseDuration(*heartbeat)
	if err != nil || hb <= 0 {
		return fmt.Errorf("--heartbeat: %q is not a positive duration", *heartbeat)
	}
	var ttl time.Duration
	if *nodeTTL != "" {
		if ttl, err = time.ParseDuration(*nodeTTL); err != nil || ttl <= 0 {
			return fmt.Errorf("--node-ttl: %q is not a positive duration", *nodeTTL)
		}
	}
	log, err := logging.New(os.Stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	gcSet.apply(log)
	tr, shutdown, err := telemetry.Setup(ctx, "keyway-proxy")
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
	log = log.With("service", "proxy")
	var src *secrets.Source
	if *secURL != "" {
		if src, err = node.NewSecrets(material.Config{URL: *secURL, CertFile: *secCert, KeyFile: *secKey, CAFile: *secCA}, log.With("node", *nodeID)); err != nil {
			return fmt.Errorf("--secrets-internal-url: %w", err)
		}
	}
	return node.Run(ctx, node.Config{
		Listen:           *listen,
		AdminListen:      *admin,
		Admin:            adminAccess,
		PProf:            *pprofOn,
		NATSURL:          *natsURL,
		NATS:             natsCfg,
		Bucket:           *bucket,
		NodeID:           *nodeID,
		NodeBucket:       *nodes,
		Heartbeat:        hb,
		NodeTTL:          ttl,
		NodeReplicas:     *replicas,
		HandshakeTimeout: handshakeTimeout,
		MaxHeaderBytes:   maxHeaderBytes,
		NetHTTP1:         *inboundH1 == "net/http",
		NetHTTP2:         *inboundH2 == "net/http",
		Tracing:          tr,
		Logger:           log,
		Secrets:          src,

		RevocationMaxRefresh: revMaxRefresh,
		RevocationMinRefresh: revMinRefresh,
		ExpiryThresholds:     expiryThresholds,

		NoPresentedRevocation: !*presentedRev,
	})
}

// parseMaxHeaderBytes reads --max-header-bytes: a whole number of bytes
// from 1 KiB to 16 MiB.
func parseMaxHeaderBytes(v string) (int, error) {
	const lo, hi = 1 << 10, 16 << 20
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("--max-header-bytes: %q is not a number of bytes from %d to %d; the default is %d (64 KiB)", v, lo, hi, inbound.DefaultMaxHeaderBytes)
	}
	return n, nil
}

// parseRevocationRefresh reads --revocation-max-refresh and
// --revocation-min-refresh: durations from 100ms to 24h, min not above max.
func parseRevocationRefresh(maxText, minText string) (maxRefresh, minRefresh time.Duration, err error) {
	const lo, hi = 100 * time.Millisecond, 24 * time.Hour
	parse := func(flag, v string) (time.Duration, error) {
		d, err := time.ParseDuration(v)
		if err != nil || d < lo || d > hi {
			return 0, fmt.Errorf("--%s: %q is not a duration from %s to %s", flag, v, lo, hi)
		}
		return d, nil
	}
	if maxRefresh, err = parse("revocation-max-refresh", maxText); err != nil {
		return 0, 0, err
	}
	if minRefresh, err = parse("revocation-min-refresh", minText); err != nil {
		return 0, 0, err
	}
	if minRefresh > maxRefresh {
		return 0, 0, fmt.Errorf("--revocation-min-refresh %s is above --revocation-max-refresh %s: lower it, or raise the maximum", minRefresh, maxRefresh)
	}
	return maxRefresh, minRefresh, nil
}

// defaultNodeID is the host name and the process id, with the characters a
// node bucket key cannot hold replaced by '-'.
func defaultNodeID(host string) string {
	id := []rune(host + "-" + strconv.Itoa(os.Getpid()))
	for i, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '=') {
			id[i] = '-'
		}
	}
	return string(id)
}
