// Command keyway-dev runs the local Keyway stack in the foreground (`make
// run`): embedded NATS, the policy service, a proxy node, a demo mTLS
// upstream and a sample configuration. Ctrl-C stops all of it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"keyway.dev/common/logging"
	"keyway.dev/devstack/internal/stack"
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := logging.New(os.Stdout, "text", "info")
	if err != nil {
		return err
	}
	cfg.Log = log.With("service", "dev")
	return stack.Run(ctx, cfg)
}
