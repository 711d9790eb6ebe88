// Package stack runs Keyway's local development stack in the foreground: an
// embedded NATS server with JetStream, the policy service and a proxy node as
// their own processes, a demo upstream that demands client certificates, and
// the dev PKI; it applies a sample configuration and prints what to try.
package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"keyway.dev/devstack/echo"
	"keyway.dev/internal/natsperm"
)

// Config places the stack's parts. Every address is on loopback.
type Config struct {
	Bin          string // folder with keyway-policy, keyway-proxy, keywayctl
	Data         string // folder for NATS data, the PKI and the sample manifest
	NATSPort     int
	PolicyAddr   string
	ProxyAddr    string
	ProxyAdmin   string
	ProxyTLSAddr string // the sample Listener's HTTPS address
	UpstreamAddr string
	// SecretsAddr is the secrets service's API; SecretsInternal its mTLS
	// MaterialService address.
	SecretsAddr     string
	SecretsInternal string
	// Vault runs a Vault dev server at VaultAddr (binary VaultBin, or
	// found as vaultBinary says) and the secrets service's Vault backend;
	// otherwise the local-directory backend in <Data>/secrets.
	Vault     bool
	VaultAddr string
	VaultBin  string
	Out       io.Writer
	Log       *slog.Logger

	// KeywayctlConfig is keywayctl's config file, where the stack writes
	// its context (DevContext); empty writes none.
	KeywayctlConfig string
}

// Run starts the stack and blocks until ctx is done or a required part (NATS,
// the proxy node) fails; an optional part that exits is reported and
// restarted.
func Run(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	log := cfg.Log
	data, err := filepath.Abs(cfg.Data)
	if err != nil {
		return err
	}
	if err := checkPorts(listenAddrs(cfg)); err != nil {
		return err
	}

	p, err := loadOrMakePKI(filepath.Join(data, "pki"), data)
	if err != nil {
		return fmt.Errorf("making the dev PKI: %w", err)
	}

	natsSec, err := secureNATS(data, p)
	if err != nil {
		return err
	}
	natsOpts := &natsserver.Options{
		ServerName: "keyway-dev", Host: "127.0.0.1", Port: cfg.NATSPort,
		JetStream: true, StoreDir: filepath.Join(data, "nats"), NoSigs: true,
	}
	natsSec.apply(natsOpts) // TLS, and a user per service
	ns, err := natsserver.NewServer(natsOpts)
	if err != nil {
		return fmt.Errorf("configuring NATS: %w", err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("NATS did not start on 127.0.0.1:%d (is the port in use?)", cfg.NATSPort)
	}
	natsURL := ns.ClientURL()
	log.Info("nats serving", "url", natsURL, "store", filepath.Join(data, "nats"))

	up, err := echo.Start(cfg.UpstreamAddr, p.upstreamTLS())
	if err != nil {
		return fmt.Errorf("starting the demo upstream on %s: %w", cfg.UpstreamAddr, err)
	}
	defer func() { _ = up.Close() }()
	log.Info("demo upstream serving", "addr", up.Addr(), "requires", "client certificate from the dev CA")

	var children sync.WaitGroup
	defer children.Wait()
	// launch starts one run of a part; exited receives its end once its
	// output is drained.
	launch := func(name, path string, env, args []string) (cmd *exec.Cmd, last *tail, exited chan error, err error) {
		cmd = exec.Command(path, args...)
		cmd.Env = append(append(childEnv(os.Environ()), "KEYWAY_LOG_FORMAT=text"), env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return nil, nil, nil, err
		}
		cmd.Stdout = cmd.Stderr
		if err := cmd.Start(); err != nil {
			return nil, nil, nil, fmt.Errorf("starting %s (run `make build`?): %w", name, err)
		}
		last, exited = &tail{}, make(chan error, 1)
		children.Add(1)
		go func() {
			defer children.Done()
			_ = copyLines(cfg.Out, "["+name+"] ", stderr, MaxLine, last)
			exited <- cmd.Wait() // after the output is drained, as Wait requires
		}()
		return cmd, last, exited, nil
	}
	// afterRestart holds what a part needs after a restart (Vault: its PKI
	// mount, since a dev server keeps nothing).
	afterRestart := map[string]func(context.Context) error{}
	// start runs a part as a child process. A required part that exits stops
	// the stack. An optional one (Vault, the secrets service, the policy
	// service: the proxy keeps serving its last configuration without them)
	// is reported with its exit status and last lines, and restarted with
	// backoff while the rest keeps serving.
	start := func(name, path string, optional bool, env []string, args ...string) error {
		cmd, last, exited, err := launch(name, path, env, args)
		if err != nil {
			return err
		}
		log.Info("part started", "part", name, "pid", cmd.Process.Pid, "optional", optional)
		children.Add(1)
		go func() {
			defer children.Done()
			backoff := restartBackoff
			for {
				began := time.Now()
				select {
				case err := <-exited:
					if ctx.Err() != nil {
						return // stopping anyway
					}
					status := exitStatus(err)
					reportExit(cfg.Out, name, cmd.Process.Pid, status, optional, last.Lines())
					if !optional {
						cancel(fmt.Errorf("%s (required) exited: %s", name, status))
						return
					}
					if time.Since(began) > time.Minute {
						backoff = restartBackoff // it ran a while: not a crash loop
					}
					for {
						log.Error("part exited; the rest keeps serving; restarting it", "part", name, "status", status, "in", backoff)
						select {
						case <-ctx.Done():
							return
						case <-time.After(backoff):
						}
						backoff = min(backoff*2, maxRestartBackoff)
						if cmd, last, exited, err = launch(name, path, env, args); err == nil {
							break
						}
						status = err.Error()
					}
					log.Info("part started", "part", name, "pid", cmd.Process.Pid, "optional", optional, "restart", true)
					if after := afterRestart[name]; after != nil {
						if err := after(ctx); err != nil {
							log.Error("setting up the restarted part", "part", name, "error", err)
						} else {
							log.Info("restarted part set up", "part", name)
						}
					}
				case <-ctx.Done():
					_ = cmd.Process.Signal(syscall.SIGTERM)
					// The exit status is not logged on shutdown: the
					// part was told to stop.
					select {
					case <-exited: //nolint:errcheck // waiting for the exit only
					case <-time.After(10 * time.Second):
						_ = cmd.Process.Kill()
						<-exited //nolint:errcheck // waiting for the exit only
					}
					return
				}
			}
		}()
		return nil
	}
	spawn := func(name string, optional bool, args ...string) error {
		return start(name, filepath.Join(cfg.Bin, name), optional, nil, args...)
	}
	a := &p.access
	secretsArgs := append([]string{"--listen", cfg.SecretsAddr, "--internal-listen", cfg.SecretsInternal, "--nats", natsURL,
		"--internal-cert", p.secretsCert, "--internal-key", p.secretsKey, "--internal-client-ca", p.internalCAFile},
		a.serverArgs(a.secretsAPICert, a.secretsAPIKey, a.secretsClientCAFile)...)
	secretsArgs = append(secretsArgs, natsSec.args(natsperm.Secrets)...)
	var secretsEnv []string
	if cfg.Vault {
		bin, err := vaultBinary(cfg.VaultBin, cfg.Out)
		if err != nil {
			return err
		}
		vaultHome := filepath.Join(data, "vault")
		if err := os.MkdirAll(vaultHome, 0o700); err != nil {
			return err
		}
		// HOME: the dev server writes ~/.vault-token; keep it in the data folder.
		if err := start("vault", bin, true, []string{"HOME=" + vaultHome, "VAULT_ADDR=", "VAULT_TOKEN="},
			"server", "-dev", "-dev-root-token-id="+VaultToken, "-dev-listen-address="+cfg.VaultAddr); err != nil {
			return err
		}
		if err := setUpVault(ctx, "http://"+cfg.VaultAddr); err != nil {
			return err
		}
		afterRestart["vault"] = func(ctx context.Context) error { return setUpVault(ctx, "http://"+cfg.VaultAddr) }
		log.Info("vault dev server serving", "addr", "http://"+cfg.VaultAddr, "pki_role", VaultPKIRole)
		secretsArgs = append(secretsArgs, "--backend", "vault", "--vault-addr", "http://"+cfg.VaultAddr)
		secretsEnv = []string{"VAULT_TOKEN=" + VaultToken}
	} else {
		secretsArgs = append(secretsArgs, "--backend", "local", "--dir", filepath.Join(data, "secrets"))
	}
	if err := start("keyway-secrets", filepath.Join(cfg.Bin, "keyway-secrets"), true, secretsEnv, secretsArgs...); err != nil {
		return err
	}
	// References to keystores and truststores: the policy service checks
	// them with the secrets API and probes with material from the internal
	// port, as keyway-policy (viewer and secrets-admin on the API, node on
	// the internal port); the node fetches material there as proxy-node.
	policyArgs := append([]string{"--listen", cfg.PolicyAddr, "--nats", natsURL,
		"--secrets-server", "https://" + cfg.SecretsAddr, "--secrets-internal-url", "https://" + cfg.SecretsInternal,
		"--secrets-cert", a.policyClientCert, "--secrets-key", a.policyClientKey, "--secrets-ca", p.internalCAFile},
		a.serverArgs(a.policyCert, a.policyKey, a.operatorCAFile)...)
	policyArgs = append(policyArgs, natsSec.args(natsperm.Policy)...)
	if err := spawn("keyway-policy", true, policyArgs...); err != nil {
		return err
	}
	proxyArgs := append([]string{"--listen", cfg.ProxyAddr, "--admin-listen", cfg.ProxyAdmin, "--nats", natsURL,
		"--node-id", "dev-1", "--secrets-internal-url", "https://" + cfg.SecretsInternal,
		"--secrets-cert", p.nodeCert, "--secrets-key", p.nodeKey, "--secrets-ca", p.internalCAFile},
		a.serverArgs(a.adminCert, a.adminKey, a.operatorCAFile)...)
	proxyArgs = append(proxyArgs, natsSec.args(natsperm.Node)...)
	if err := spawn("keyway-proxy", false, proxyArgs...); err != nil {
		return err
	}

	operatorTLS, err := a.operatorTLS(p.internalCA.Pool())
	if err != nil {
		return fmt.Errorf("loading the operator identity: %w", err)
	}
	operator := &http.Client{Transport: &http.Transport{TLSClientConfig: operatorTLS, ForceAttemptHTTP2: true}}
	policyURL := "https://" + cfg.PolicyAddr
	if err := waitHTTP(ctx, operator, policyURL+"/healthz"); err != nil {
		return fmt.Errorf("waiting for the policy service: %w", err)
	}
	if err := waitHTTP(ctx, operator, "https://"+cfg.SecretsAddr+"/healthz"); err != nil {
		return fmt.Errorf("waiting for the secrets service: %w", err)
	}
	sample := filepath.Join(data, "sample.yaml")
	if err := writeSample(sample, up.Addr(), cfg.ProxyTLSAddr, p); err != nil {
		return fmt.Errorf("writing the sample manifest: %w", err)
	}
	ctlNote, ctlArgs, err := writeContext(cfg, data)
	if err != nil {
		// The stack works without it: keywayctl's flags reach it too.
		log.Warn("keywayctl context not written", "file", cfg.KeywayctlConfig, "reason", err)
	}
	// apply probes the sample's binding by default: its output shows
	// the handshake with the demo upstream ("probe ...: ok").
	apply := exec.CommandContext(ctx, filepath.Join(cfg.Bin, "keywayctl"), append(append(append(ctlArgs, "--server", policyURL), a.operatorArgs()...), "apply", "-f", sample)...)
	apply.Stdout, apply.Stderr = cfg.Out, cfg.Out
	if err := apply.Run(); err != nil {
		return fmt.Errorf("applying %s: %w", sample, err)
	}
	proxyURL := "http://" + cfg.ProxyAddr
	if err := waitHTTP(ctx, http.DefaultClient, proxyURL+"/demo/hello"); err != nil {
		return fmt.Errorf("waiting for the proxy to serve the sample route: %w", err)
	}
	https := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost"}}}
	if err := waitHTTP(ctx, https, "https://"+cfg.ProxyTLSAddr+"/demo/hello"); err != nil {
		return fmt.Errorf("waiting for the proxy to serve the sample Listener: %w", err)
	}
	fmt.Fprint(cfg.Out, ctlNote)
	printTry(cfg, data, sample, p)

	<-ctx.Done()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopping")
	return nil
}

// waitHTTP polls url until it answers 200, for at most 30 seconds. Polling is
// what a launcher can do here: the services are other processes.
func waitHTTP(ctx context.Context, client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for delay := 20 * time.Millisecond; ; delay = min(delay*2, 500*time.Millisecond) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s answered %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-time.After(delay):
		}
	}
}

// restartBackoff is the first wait before an optional part is restarted;
// it doubles with each exit up to maxRestartBackoff, and starts over once a
// run lasted a minute.
const (
	restartBackoff    = time.Second
	maxRestartBackoff = 30 * time.Second
)

// exitStatus describes how a child ended: "exit status 1", "signal: killed".
func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// reportExit tells the user which part ended, how, and what it said last.
func reportExit(w io.Writer, name string, pid int, status string, optional bool, last []string) {
	what := "required: the stack stops"
	if optional {
		what = "the proxy keeps serving its last configuration and NATS keeps running; keyway-dev restarts it"
	}
	var b strings.Builder // one write: other parts print at the same time
	fmt.Fprintf(&b, "\nkeyway-dev: %s (pid %d) exited: %s (%s)\n", name, pid, status, what)
	if len(last) > 0 {
		fmt.Fprintf(&b, "keyway-dev: last lines of %s:\n", name)
		for _, l := range last {
			fmt.Fprintf(&b, "  | %s\n", l)
		}
	}
	_, _ = io.WriteString(w, b.String())
}

func printTry(cfg Config, data, sample string, p *pki) {
	rel := func(p string) string {
		if wd, err := os.Getwd(); err == nil {
			if r, err := filepath.Rel(wd, p); err == nil {
				return r
			}
		}
		return p
	}
	a := &p.access
	ctl := filepath.Join(rel(cfg.Bin), "keywayctl")
	if cfg.PolicyAddr != "127.0.0.1:8081" {
		ctl += " --server https://" + cfg.PolicyAddr
	}
	// The operator's certificate for buf curl and curl.
	creds := fmt.Sprintf("--cacert %s --cert %s --key %s", rel(a.apiCAFile), rel(a.operatorCert), rel(a.operatorKey))
	_, policyPort, _ := net.SplitHostPort(cfg.PolicyAddr)
	_, tlsPort, _ := net.SplitHostPort(cfg.ProxyTLSAddr)
	fmt.Fprintf(cfg.Out, `
Keyway is running.
  proxy node       http://%[1]s       (admin: https://%[2]s/status)
                   https://%[11]s      (Listener "public": client certificates from the dev CA are verified if given)
  policy API       https://%[3]s      (Connect, gRPC, gRPC-Web; callers need a certificate from the operator CA)
  NATS JetStream   nats://127.0.0.1:%[4]s   (TLS; users policy, secrets, node: passwords in %[9]s/nats-users)
  demo upstream    https://%[5]s      (requires a client certificate from %[6]s)

Operator identity: %[15]s (roles viewer, operator, secrets-admin; %[16]s)
  export KEYWAY_CA=%[17]s KEYWAY_CERT=%[18]s KEYWAY_KEY=%[19]s
  (keywayctl reads these; or give it --ca, --cert and --key)

Try:
  curl -s http://%[1]s/demo/hello
  curl -s --cacert %[6]s https://localhost:%[12]s/demo/hello
  curl -s --cacert %[6]s --cert %[13]s --key %[14]s https://localhost:%[12]s/demo/hello
  curl -s --cacert %[6]s https://localhost:%[12]s/admin/x                      # 401: this route needs a client certificate
  curl -s --cacert %[6]s --cert %[13]s --key %[14]s https://localhost:%[12]s/admin/x   # 200: demo-client is allowed
  %[7]s get policybindings
  %[7]s get services -o json
  %[7]s validate -f %[8]s
  %[7]s apply -f %[8]s
  buf curl %[20]s --list-methods https://%[3]s
  buf curl %[20]s -d '{"kind":"PolicyBinding"}' https://%[3]s/keyway.policy.v1.PolicyService/List
  curl -s --cacert %[17]s https://%[3]s/healthz                     # open to probes
  curl -s --cacert %[17]s https://%[3]s/metrics                     # 401: no credential
  curl --cacert %[6]s https://%[5]s/   # refused: no client certificate
  curl -s %[20]s https://%[2]s/metrics | grep '^keyway_'   # proxy node metrics
  curl -s %[20]s https://%[3]s/metrics | grep '^keyway_'   # policy service metrics
`, cfg.ProxyAddr, cfg.ProxyAdmin, cfg.PolicyAddr, strconv.Itoa(cfg.NATSPort), cfg.UpstreamAddr,
		rel(filepath.Join(data, "pki", "ca.crt")), ctl, rel(sample), rel(data), policyPort,
		cfg.ProxyTLSAddr, tlsPort, rel(filepath.Join(data, "pki", "client.crt")), rel(filepath.Join(data, "pki", "client.key")),
		OperatorID, "access policy "+rel(a.policyFile), rel(a.apiCAFile), rel(a.operatorCert), rel(a.operatorKey), creds)
	printSecrets(cfg, p, rel, filepath.Join(rel(cfg.Bin), "keywayctl"))
	fmt.Fprintf(cfg.Out, `
(buf is installed by the Makefile: "$(scripts/tool.sh buf)" prints its path.)
Ctrl-C stops everything; data stays in %[1]s (policy port %[2]s).
`, rel(data), policyPort)
}

// printSecrets describes the secrets service: its two addresses, where
// its secrets live, and the files a proxy node needs to fetch material.
func printSecrets(cfg Config, p *pki, rel func(string) string, ctl string) {
	if cfg.SecretsAddr != "127.0.0.1:8082" {
		ctl += " secrets --secrets-server https://" + cfg.SecretsAddr
	} else {
		ctl += " secrets"
	}
	backend := "local directory " + rel(filepath.Join(cfg.Data, "secrets"))
	pkiTry := ""
	if cfg.Vault {
		backend = fmt.Sprintf("Vault dev server http://%s (KV v2 secret/keyway, PKI role %s; token %s; in memory: empty at every start)", cfg.VaultAddr, VaultPKIRole, VaultToken)
		pkiTry = fmt.Sprintf("\n  %s put --keystore edge --alias short-lived --pki-role %s --common-name gw.keyway.local --ttl 1h", ctl, VaultPKIRole)
	}
	fmt.Fprintf(cfg.Out, `
Secrets service
  API              https://%[1]s      (SecretsService: Connect, gRPC, gRPC-Web; /metrics; the operator is secrets-admin)
  material (mTLS)  https://%[2]s      (MaterialService; client certificates from the internal CA with the node role only)
  backend          %[3]s
  internal CA      %[4]s
  proxy node cert  %[5]s  key %[6]s   (a MaterialService client certificate)
  try:
  %[7]s put --keystore edge --alias gateway --cert %[8]s --key %[9]s%[10]s
  %[7]s list
`, cfg.SecretsAddr, cfg.SecretsInternal, backend, rel(p.internalCAFile), rel(p.nodeCert), rel(p.nodeKey),
		ctl, rel(p.gatewayCert), rel(p.gatewayKey), pkiTry)
}

// childEnv is the environment of the processes the stack starts: this
// process's, so that OTEL_* (tracing) and KEYWAY_* settings reach them,
// without OTEL_SERVICE_NAME, which would give the policy service and the
// proxy node one name: each names itself (keyway-policy, keyway-proxy). Tag
// the deployment with OTEL_RESOURCE_ATTRIBUTES instead.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "OTEL_SERVICE_NAME=") {
			out = append(out, kv)
		}
	}
	return out
}
