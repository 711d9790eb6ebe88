// Command keyway-dev runs the local Keyway stack in the foreground (`make
// run`): embedded NATS, the policy service, the secrets service (with a
// Vault dev server under --vault), a proxy node, a demo mTLS upstream and a
// sample configuration. Ctrl-C stops all of it. When Vault, the secrets
// service or the policy service exits, keyway-dev reports it (exit status
// and last lines) and restarts it with backoff while the proxy keeps
// serving; when the proxy node exits, the stack stops. Every address is
// checked before anything starts, so a busy port is named with its flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"keyway.dev/devstack/internal/stack"
	"keyway.dev/internal/ctlconfig"
	"keyway.dev/internal/envflag"
	"keyway.dev/internal/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "keyway-dev:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("keyway-dev", flag.ContinueOnError)
	cfg := stack.Config{Out: os.Stdout}
	fs.StringVar(&cfg.Bin, "bin", "bin", "folder holding keyway-policy, keyway-proxy and keywayctl")
	fs.StringVar(&cfg.Data, "data", ".keyway", "folder for NATS data, the dev PKI and the sample manifest")
	fs.IntVar(&cfg.NATSPort, "nats-port", 4222, "NATS client port on 127.0.0.1")
	fs.StringVar(&cfg.PolicyAddr, "policy", "127.0.0.1:8081", "policy API address")
	fs.StringVar(&cfg.ProxyAddr, "proxy", "127.0.0.1:8080", "proxy node address")
	fs.StringVar(&cfg.ProxyAdmin, "proxy-admin", "127.0.0.1:9080", "proxy node admin address (/healthz, /status)")
	fs.StringVar(&cfg.ProxyTLSAddr, "proxy-tls", "127.0.0.1:8443", "HTTPS address of the sample Listener")
	fs.StringVar(&cfg.UpstreamAddr, "upstream", "127.0.0.1:9443", "demo upstream address (HTTPS, client certificates required)")
	fs.StringVar(&cfg.SecretsAddr, "secrets", "127.0.0.1:8082", "secrets service API address")
	fs.StringVar(&cfg.SecretsInternal, "secrets-internal", "127.0.0.1:8092", "secrets service MaterialService address (mTLS)")
	fs.BoolVar(&cfg.Vault, "vault", false, "run a Vault dev server and the secrets service's Vault backend")
	fs.StringVar(&cfg.VaultAddr, "vault-addr", "127.0.0.1:8200", "Vault dev server address, with --vault")
	fs.StringVar(&cfg.VaultBin, "vault-bin", "", "Vault binary, with --vault (default $KEYWAY_VAULT, else scripts/tool.sh vault)")
	ctlConfig, _ := ctlconfig.DefaultPath(os.Getenv) // without HOME: none unless given
	fs.StringVar(&cfg.KeywayctlConfig, "keywayctl-config", ctlConfig, "keywayctl config file to write the context "+stack.DevContext+" into ($"+ctlconfig.Env+", else ~/.config/keyway/config.yaml); empty for none")
	// KEYWAY_DEV_<FLAG>: the parts' own KEYWAY_<FLAG> reach them through
	// this process's environment, and KEYWAY_VAULT names the Vault binary.
	if err := envflag.Parse(fs, envflag.DevPrefix, args, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) || errors.Is(err, envflag.ErrVersion) {
			return nil // -h, --help, --version: the answer is printed; asking is no error
		}
		return err
	}
	log, err := logging.New(os.Stdout, "text", "info")
	if err != nil {
		return err
	}
	cfg.Log = log.With("service", "dev")
	return stack.Run(ctx, cfg)
}
