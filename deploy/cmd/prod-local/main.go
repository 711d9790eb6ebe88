// Command prod-local runs Keyway's production topology on this machine,
// derived from deploy/kubernetes by package localrun: three NATS servers,
// three Vault servers on raft, two secrets and two policy replicas and three
// proxy nodes, each with its manifest's arguments and environment. It
// prints how to use the suite and stops everything on Ctrl-C. `make
// prod-local` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"keyway.dev/deploy/localrun"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "prod-local:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("prod-local", flag.ContinueOnError)
	var (
		manifests = fs.String("manifests", "kubernetes", "the kustomize folder to run")
		bin       = fs.String("bin", "../bin", "folder of Keyway's binaries (make build)")
		dir       = fs.String("dir", "../.keyway/prod-local", "folder of the pods' volumes, data and logs; replaced at start")
		nats      = fs.String("nats-server", "", "the nats-server binary (scripts/tool.sh nats-server)")
		vault     = fs.String("vault", "", "the vault binary (scripts/tool.sh vault)")
		verbose   = fs.Bool("v", false, "print each pod's command line as it starts")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nats == "" || *vault == "" {
		return errors.New("--nats-server and --vault: give the binaries (make prod-local does)")
	}
	work, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	binAbs, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	opts := localrun.Options{
		Manifests: *manifests,
		WorkDir:   work,
		Bin:       binAbs,
		Images:    map[string]string{"nats": *nats, "hashicorp/vault": *vault},
		Ready:     3 * time.Minute,
	}
	if *verbose {
		opts.Log = os.Stderr
	}
	fmt.Printf("starting deploy/%s as local processes in %s …\n", *manifests, work)
	start := time.Now()
	c, err := localrun.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "prod-local: stopping:", err)
		}
	}()
	up := time.Since(start)
	demoDir := filepath.Join(work, "demo")
	if err := os.MkdirAll(demoDir, 0o700); err != nil {
		return err
	}
	d, err := c.StartDemo(ctx, demoDir)
	if err != nil {
		return err
	}
	defer d.Close()
	printUsage(c, d, up, time.Since(start))
	<-ctx.Done()
	fmt.Println("\nstopping every process …")
	return nil
}

func printUsage(c *localrun.Cluster, d *localrun.Demo, up, withDemo time.Duration) {
	op := c.Operator()
	fmt.Printf("\nevery pod ready in %.1fs; the demo applied and served in %.1fs\n\n", up.Seconds(), withDemo.Seconds())
	fmt.Println("pods (log: DIR/POD/log):")
	for _, p := range c.Pods() {
		fmt.Printf("  %-18s pid %-7d", p.Name(), p.PID())
		for _, port := range []string{"api", "client", "internal", "proxy", "admin", "cluster", "monitor"} {
			if a := p.Addr(port); a != "" {
				fmt.Printf(" %s=%s", port, a)
			}
		}
		fmt.Println()
	}
	policy, secrets := c.ServiceAddr("keyway-policy", 8081), c.ServiceAddr("keyway-secrets", 8082)
	fmt.Printf(`
Services (a kube-proxy stand-in per Service port): keyway-policy %s, keyway-secrets %s,
  nats %s, vault %s (the active node), keyway-proxy %s (port 80)

keywayctl (context keyway-local, operator certificate):
  export KEYWAYCONFIG=%s
  bin/keywayctl get all
  bin/keywayctl status
  bin/keywayctl secrets list

buf curl:
  buf curl --cacert %s --cert %s --key %s \
    -d '{"kind":"Service"}' https://%s/keyway.policy.v1.PolicyService/List

the demo request, with a client certificate, through a proxy node to an mTLS upstream:
  %s

a proxy node's admin port:
  curl --cacert %s --cert %s --key %s https://%s/status

Vault (unseal key and root token in %s):
  VAULT_ADDR=https://%s VAULT_CACERT=%s vault status

Ctrl-C stops everything.
`, policy, secrets, c.ServiceAddr("nats", 4222), c.ServiceAddr("vault", 8200), c.ServiceAddr("keyway-proxy", 80),
		op.Config, op.CA, op.Cert, op.Key, policy, d.Curl(),
		op.CA, op.Cert, op.Key, c.PodsOf("keyway-proxy")[0].Addr("admin"),
		filepath.Join(filepath.Dir(filepath.Dir(op.Config)), "vault-init.json"), c.ServiceAddr("vault", 8200), c.PodsOf("vault")[0].Dir()+"/volumes/tls/ca.crt")
}
