// Command keyway-secrets serves Keyway's secrets service: keystores and
// truststores in Vault (KV v2, PKI) or a local directory, versions
// published to NATS, key material for proxy nodes over mTLS.
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
	"keyway.dev/internal/audit"
	"keyway.dev/internal/certevents"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/envflag"
	"keyway.dev/internal/logging"
	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/secretref"
	"keyway.dev/secrets/internal/app"
	"keyway.dev/secrets/internal/leader"
	"keyway.dev/secrets/internal/pki"
	"keyway.dev/secrets/internal/store"
	"keyway.dev/secrets/internal/vaultauth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "keyway-secrets:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context, args []string) error {
	// envAliases are the environment names the flags had before
	// KEYWAY_<FLAG>; still read. The secrets service's own names were
	// KEYWAY_SECRETS_<FLAG>, and Vault's address VAULT_ADDR, as the vault CLI
	// reads it.
	envAliases := envflag.Aliases{
		"listen":             {"KEYWAY_SECRETS_LISTEN"},
		"internal-listen":    {"KEYWAY_SECRETS_INTERNAL_LISTEN"},
		"internal-cert":      {"KEYWAY_SECRETS_INTERNAL_CERT"},
		"internal-key":       {"KEYWAY_SECRETS_INTERNAL_KEY"},
		"internal-client-ca": {"KEYWAY_SECRETS_INTERNAL_CLIENT_CA"},
		"nats":               {"KEYWAY_NATS_URL"},
		"bucket":             {"KEYWAY_SECRETS_BUCKET"},
		"backend":            {"KEYWAY_SECRETS_BACKEND"},
		"dir":                {"KEYWAY_SECRETS_DIR"},
		"vault-addr":         {"VAULT_ADDR"},
		"vault-kv-mount":     {"KEYWAY_SECRETS_VAULT_KV_MOUNT"},
		"vault-prefix":       {"KEYWAY_SECRETS_VAULT_PREFIX"},
		"vault-pki-mount":    {"KEYWAY_SECRETS_VAULT_PKI_MOUNT"},
		"poll-interval":      {"KEYWAY_SECRETS_POLL_INTERVAL"},
		"pki-renew-fraction": {"KEYWAY_SECRETS_PKI_RENEW_FRACTION"},
	}
	fs := flag.NewFlagSet("keyway-secrets", flag.ContinueOnError)
	var (
		listen         = fs.String("listen", "127.0.0.1:8082", "API address: SecretsService over Connect, gRPC and gRPC-Web")
		internalListen = fs.String("internal-listen", "127.0.0.1:8092", "mTLS address of MaterialService, which hands key material to proxy nodes; empty serves none")
		internalCert   = fs.String("internal-cert", "", "internal listener's certificate, PEM")
		internalKey    = fs.String("internal-key", "", "internal listener's private key, PEM")
		internalCA     = fs.String("internal-client-ca", "", "CA certificates whose client certificates the internal listener accepts, PEM")
		natsURL        = fs.String("nats", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
		bucket         = fs.String("bucket", secretref.Bucket, "JetStream KV bucket the versions are published in")
		configBucket   = fs.String("config-bucket", configkv.Bucket, "the policy service's configuration bucket, read to refuse deleting a secret that resources use; give the policy service's --bucket")
		replicas       = fs.Int("replicas", 1, "replicas of the bucket in a NATS cluster (3 in production)")
		backend        = fs.String("backend", "local", "where secrets live: local (a directory of PEM files) or vault")
		dir            = fs.String("dir", ".keyway/secrets", "the local backend's directory")
		vaultAddr      = fs.String("vault-addr", "http://127.0.0.1:8200", "Vault address; --vault-auth says how the service logs in")
		kvMount        = fs.String("vault-kv-mount", "secret", "Vault KV v2 mount")
		prefix         = fs.String("vault-prefix", "keyway", "folder under the KV mount")
		pkiMount       = fs.String("vault-pki-mount", "pki", "Vault PKI mount")
		poll           = fs.String("poll-interval", "2s", "how often the backend's versions are read to notice changes made outside the service")
		leaderBucket   = fs.String("leader-bucket", leader.DefaultBucket, "JetStream KV bucket of the lease that elects the one replica issuing and renewing Vault PKI certificates; empty runs no election (one replica)")
		leaderTTL      = fs.Duration("leader-ttl", leader.DefaultTTL, "how long the PKI leader's lease lives without a refresh: a replica takes over within about this long after the leader is lost")
		renew          = fs.String("pki-renew-fraction", strconv.FormatFloat(pki.DefaultRenewFraction, 'f', 3, 64), "fraction of a PKI certificate's lifetime after which a new one is issued, ±5% jitter")
		logFormat      = fs.String("log-format", "text", "log format: text or json")
		expiryAt       = fs.String("cert-expiry-thresholds", certevents.FormatThresholds(certevents.DefaultThresholds), "times left (30d, 12h) under which the service's own certificates (api-server, internal-server) are announced on NATS subject "+certevents.Subject+", once per certificate and threshold")
		logLevel       = fs.String("log-level", "info", "log level: debug, info, warn, error")
	)
	var natsCfg natsconn.Config
	natsCfg.RegisterFlags(fs) // --nats-ca, --nats-user, --nats-password-file
	var vaultAuth vaultauth.Config
	vaultAuth.RegisterFlags(fs) // --vault-auth and its companions
	auditFlags := audit.AddFlags(fs)
	var acc access.Options
	acc.RegisterFlags(fs, "API")
	if err := envflag.Parse(fs, envflag.Prefix, args, envAliases); err != nil {
		if errors.Is(err, envflag.ErrVersion) || errors.Is(err, flag.ErrHelp) {
			return nil // printed: --version and --help answer before the flags are checked
		}
		return err
	}
	auditCfg, err := auditFlags.Config(audit.ServiceSecrets, *replicas)
	if err != nil {
		return err
	}
	interval, err := time.ParseDuration(*poll)
	if err != nil || interval <= 0 {
		return fmt.Errorf("--poll-interval: %q is not a positive duration such as 2s", *poll)
	}
	if *leaderTTL < 3*time.Second {
		return fmt.Errorf("--leader-ttl: %s is too short; give at least 3s (the lease is refreshed every third of it)", *leaderTTL)
	}
	fraction, err := strconv.ParseFloat(*renew, 64)
	if err != nil || fraction <= 0 || fraction >= 1 {
		return fmt.Errorf("--pki-renew-fraction: %q is not a number between 0 and 1 such as 0.667", *renew)
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
	return app.Run(ctx, app.Config{
		Listen:           *listen,
		Access:           acc,
		InternalListen:   *internalListen,
		InternalCert:     *internalCert,
		InternalKey:      *internalKey,
		InternalClientCA: *internalCA,
		NATSURL:          *natsURL,
		NATS:             natsCfg,
		Bucket:           *bucket,
		ConfigBucket:     *configBucket,
		Replicas:         *replicas,
		Backend:          *backend,
		Dir:              *dir,
		VaultAddr:        *vaultAddr,
		VaultAuth:        vaultAuth,
		VaultKVMount:     *kvMount,
		VaultPrefix:      *prefix,
		VaultPKIMount:    *pkiMount,
		Store:            store.Config{PollInterval: interval, RenewFraction: fraction},
		LeaderBucket:     *leaderBucket,
		LeaderTTL:        *leaderTTL,
		ExpiryThresholds: expiryThresholds,
		Audit:            auditCfg,
		Log:              log.With("service", "secrets"),
	})
}
