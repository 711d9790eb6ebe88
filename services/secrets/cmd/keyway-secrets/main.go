// Command keyway-secrets serves Keyway's secrets service: keystores and
// truststores in Vault (KV v2, PKI) or a local directory, versions
// published to NATS, key material for proxy nodes over mTLS.
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

	"keyway.dev/common/access"
	"keyway.dev/common/audit"
	"keyway.dev/common/configkv"
	"keyway.dev/common/logging"
	"keyway.dev/common/natsconn"
	"keyway.dev/common/secretsclient"
	"keyway.dev/secrets/internal/app"
	"keyway.dev/secrets/internal/pki"
	"keyway.dev/secrets/internal/store"
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
	fs := flag.NewFlagSet("keyway-secrets", flag.ContinueOnError)
	var (
		listen         = fs.String("listen", logging.Env("KEYWAY_SECRETS_LISTEN", "127.0.0.1:8082"), "API address: SecretsService over Connect, gRPC and gRPC-Web (env KEYWAY_SECRETS_LISTEN)")
		internalListen = fs.String("internal-listen", logging.Env("KEYWAY_SECRETS_INTERNAL_LISTEN", "127.0.0.1:8092"), "mTLS address of MaterialService, which hands key material to proxy nodes; empty serves none (env KEYWAY_SECRETS_INTERNAL_LISTEN)")
		internalCert   = fs.String("internal-cert", logging.Env("KEYWAY_SECRETS_INTERNAL_CERT", ""), "internal listener's certificate, PEM (env KEYWAY_SECRETS_INTERNAL_CERT)")
		internalKey    = fs.String("internal-key", logging.Env("KEYWAY_SECRETS_INTERNAL_KEY", ""), "internal listener's private key, PEM (env KEYWAY_SECRETS_INTERNAL_KEY)")
		internalCA     = fs.String("internal-client-ca", logging.Env("KEYWAY_SECRETS_INTERNAL_CLIENT_CA", ""), "CA certificates whose client certificates the internal listener accepts, PEM (env KEYWAY_SECRETS_INTERNAL_CLIENT_CA)")
		natsURL        = fs.String("nats", logging.Env("KEYWAY_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL(s), comma-separated (env KEYWAY_NATS_URL)")
		bucket         = fs.String("bucket", logging.Env("KEYWAY_SECRETS_BUCKET", secretsclient.Bucket), "JetStream KV bucket the versions are published in (env KEYWAY_SECRETS_BUCKET)")
		configBucket   = fs.String("config-bucket", logging.Env("KEYWAY_BUCKET", configkv.Bucket), "the policy service's configuration bucket, read to refuse deleting a secret that resources use; give the policy service's --bucket (env KEYWAY_BUCKET)")
		replicas       = fs.Int("replicas", 1, "replicas of the bucket in a NATS cluster (3 in production)")
		backend        = fs.String("backend", logging.Env("KEYWAY_SECRETS_BACKEND", "local"), "where secrets live: local (a directory of PEM files) or vault (env KEYWAY_SECRETS_BACKEND)")
		dir            = fs.String("dir", logging.Env("KEYWAY_SECRETS_DIR", ".keyway/secrets"), "the local backend's directory (env KEYWAY_SECRETS_DIR)")
		vaultAddr      = fs.String("vault-addr", logging.Env("VAULT_ADDR", "http://127.0.0.1:8200"), "Vault address (env VAULT_ADDR); the token comes from VAULT_TOKEN")
		kvMount        = fs.String("vault-kv-mount", logging.Env("KEYWAY_SECRETS_VAULT_KV_MOUNT", "secret"), "Vault KV v2 mount (env KEYWAY_SECRETS_VAULT_KV_MOUNT)")
		prefix         = fs.String("vault-prefix", logging.Env("KEYWAY_SECRETS_VAULT_PREFIX", "keyway"), "folder under the KV mount (env KEYWAY_SECRETS_VAULT_PREFIX)")
		pkiMount       = fs.String("vault-pki-mount", logging.Env("KEYWAY_SECRETS_VAULT_PKI_MOUNT", "pki"), "Vault PKI mount (env KEYWAY_SECRETS_VAULT_PKI_MOUNT)")
		poll           = fs.String("poll-interval", logging.Env("KEYWAY_SECRETS_POLL_INTERVAL", "2s"), "how often the backend's versions are read to notice changes made outside the service (env KEYWAY_SECRETS_POLL_INTERVAL)")
		renew          = fs.String("pki-renew-fraction", logging.Env("KEYWAY_SECRETS_PKI_RENEW_FRACTION", strconv.FormatFloat(pki.DefaultRenewFraction, 'f', 3, 64)), "fraction of a PKI certificate's lifetime after which a new one is issued, ±5% jitter (env KEYWAY_SECRETS_PKI_RENEW_FRACTION)")
		logFormat      = fs.String("log-format", logging.Env("KEYWAY_LOG_FORMAT", "text"), "log format: text or json (env KEYWAY_LOG_FORMAT)")
		logLevel       = fs.String("log-level", logging.Env("KEYWAY_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env KEYWAY_LOG_LEVEL)")
	)
	var natsCfg natsconn.Config
	natsCfg.RegisterFlags(fs) // --nats-ca, --nats-user, --nats-password-file
	auditFlags := audit.AddFlags(fs)
	var acc access.Options
	acc.RegisterFlags(fs, "API")
	if err := fs.Parse(args); err != nil {
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
	fraction, err := strconv.ParseFloat(*renew, 64)
	if err != nil || fraction <= 0 || fraction >= 1 {
		return fmt.Errorf("--pki-renew-fraction: %q is not a number between 0 and 1 such as 0.667", *renew)
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
		VaultKVMount:     *kvMount,
		VaultPrefix:      *prefix,
		VaultPKIMount:    *pkiMount,
		Store:            store.Config{PollInterval: interval, RenewFraction: fraction},
		Audit:            auditCfg,
		Log:              log.With("service", "secrets"),
	})
}
