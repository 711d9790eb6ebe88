// Package harness starts Keyway's real parts as processes for end-to-end
// tests and benchmarks: the nats-server binary, the policy service, proxy
// nodes, and the CLIs (keywayctl, buf). Binaries come from $KEYWAY_BIN and
// $KEYWAY_NATS_SERVER / $KEYWAY_BUF when set (make test sets them); otherwise
// they are built or installed once per test binary.
//
// These processes belong to the full tier (make test): under go test -short
// (make test-fast) every helper that builds, installs or starts a binary
// skips the test instead ([FullTier]).
package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"keyway.dev/internal/natsperm"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/internal/vaulttest"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// Root is the repository root (the folder holding go.work).
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above the working directory")
		}
		dir = parent
	}
}

// FullTier skips the test under -short: it needs built binaries or child
// processes, which only the full tier (make test) runs. Bin, Tool, Start,
// Run and Vault call it, so tests need not.
func FullTier(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("harness: end-to-end test of real processes: runs in the full tier (make test), skipped under -short (make test-fast)")
	}
}

// Bin returns the path of a Keyway binary (keyway-policy, keyway-proxy,
// keyway-secrets, keywayctl, keyway-dev), building all of them into a temporary folder the first time
// when $KEYWAY_BIN is not set.
func Bin(tb testing.TB, name string) string {
	tb.Helper()
	FullTier(tb)
	binOnce.Do(func() {
		if d := os.Getenv("KEYWAY_BIN"); d != "" {
			binDir = d
			return
		}
		root, err := Root()
		if err != nil {
			binErr = err
			return
		}
		binDir, binErr = os.MkdirTemp("", "keyway-bin-")
		if binErr != nil {
			return
		}
		// The version and commit, as make build gives them.
		ldflags, err := exec.Command(filepath.Join(root, "scripts", "version.sh"), "ldflags").Output()
		if err != nil {
			binErr = fmt.Errorf("scripts/version.sh ldflags: %w", err)
			return
		}
		for bin, pkg := range map[string]string{
			"keyway-policy":  "./services/policy/cmd/keyway-policy",
			"keyway-proxy":   "./services/proxy/cmd/keyway-proxy",
			"keywayctl":      "./cmd/keywayctl",
			"keyway-dev":     "./services/devstack/cmd/keyway-dev",
			"keyway-secrets": "./services/secrets/cmd/keyway-secrets",
		} {
			cmd := exec.Command("go", "build", "-ldflags", strings.TrimSpace(string(ldflags)), "-o", filepath.Join(binDir, bin), pkg)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				binErr = fmt.Errorf("building %s: %w\n%s", bin, err, out)
				return
			}
		}
	})
	if binErr != nil {
		tb.Fatalf("harness: %v", binErr)
	}
	return filepath.Join(binDir, name)
}

// Tool returns the path of a pinned tool (nats-server, buf) from the
// environment variable, or from scripts/tool.sh, which installs it into the
// cache when missing.
func Tool(tb testing.TB, name, envVar string) string {
	tb.Helper()
	FullTier(tb)
	if p := os.Getenv(envVar); p != "" {
		return p
	}
	root, err := Root()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "scripts", "tool.sh"), name).Output()
	if err != nil {
		tb.Fatalf("harness: installing %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	// The kernel may hand the same ephemeral port out again once the
	// listener is closed, so a test asking for several addresses in a row
	// could get one twice. Ports handed out by this process are not reused.
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 64 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr
		}
	}
	tb.Fatal("harness: no loopback port free that this test has not already been given")
	return ""
}

var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// Process is a child process whose output is kept for the test log.
type Process struct {
	Name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// Start runs a binary. When ready is not nil, Start returns once a line of
// its output matches ready, and fails the test if the process exits first or
// 30 seconds pass. The process is stopped with SIGTERM at cleanup.
func Start(tb testing.TB, name, bin string, ready *regexp.Regexp, args ...string) *Process {
	tb.Helper()
	return StartEnv(tb, name, bin, ready, nil, args...)
}

// StartEnv is [Start] with env ("KEY=value") added to the test's
// environment.
func StartEnv(tb testing.TB, name, bin string, ready *regexp.Regexp, env []string, args ...string) *Process {
	tb.Helper()
	FullTier(tb)
	p := &Process{Name: name, cmd: exec.Command(bin, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = Environ(tb, env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("harness: starting %s: %v", name, err)
	}
	matched := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			p.out.WriteLine(line)
			if ready != nil && ready.MatchString(line) {
				once.Do(func() { close(matched) })
			}
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.Stop()
		if tb.Failed() || testing.Verbose() {
			tb.Logf("--- output of %s ---\n%s", name, p.out.String())
		}
	})
	if ready == nil {
		return p
	}
	select {
	case <-matched:
	case <-p.done:
		tb.Fatalf("harness: %s exited before it was ready (%v):\n%s", name, p.err, p.out.String())
	case <-time.After(90 * time.Second):
		tb.Fatalf("harness: %s not ready after 90s:\n%s", name, p.out.String())
	}
	return p
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output is everything the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Stop sends SIGTERM and waits up to 10 seconds before killing.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill sends SIGKILL, as the OOM killer or a crash does, and waits for the
// process to be gone.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Interrupt sends SIGINT, as Ctrl-C does, and waits up to timeout for the
// process to exit. It returns the exit error (nil for status 0), or an error
// if the process did not exit in time.
func (p *Process) Interrupt(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running %s after SIGINT", p.Name, timeout)
	}
}

// NATS starts the real nats-server binary with JetStream on a free loopback
// port, serving TLS to the users of package natsperm (see [StartNATS]), and
// returns its client URL.
func NATS(tb testing.TB) (string, *Process) {
	tb.Helper()
	n := StartNATS(tb)
	return n.URL, n.Process
}

// NATSServer is a nats-server process that can be stopped and started
// again on the same port with the same store, as an operator restarts it.
type NATSServer struct {
	// URL is the client URL; it stays the same across restarts.
	URL     string
	Process *Process
	// CAFile is the CA of the server's certificate (PEM).
	CAFile    string
	addr      string
	dir       string
	confFile  string
	passwords map[string]string
}

// StartNATS starts nats-server with JetStream on a free loopback port and
// a store folder of the test's. It serves TLS only, with a certificate from
// a CA of the test's, and only to the users of package natsperm, each with
// a random password and its permissions; [Policy], [StartProxy] and
// [StartSecrets] connect with them.
func StartNATS(tb testing.TB) *NATSServer {
	tb.Helper()
	addr := FreeAddr(tb)
	n := &NATSServer{URL: "nats://" + addr, addr: addr, dir: tb.TempDir()}
	n.secure(tb)
	n.Start(tb)
	return n
}

// Start starts the server (again), on its port and store, and returns once
// it is ready.
func (n *NATSServer) Start(tb testing.TB) {
	tb.Helper()
	n.Process = Start(tb, "nats-server", Tool(tb, "nats-server", "KEYWAY_NATS_SERVER"), regexp.MustCompile(`Server is ready`),
		"-c", n.confFile)
}

// Stop stops the server with SIGTERM and waits for it to exit.
func (n *NATSServer) Stop() { n.Process.Stop() }

// Policy starts keyway-policy against natsURL and returns its API URL;
// args are added to its command line.
func Policy(tb testing.TB, natsURL string, args ...string) (string, *Process) {
	tb.Helper()
	return PolicyEnv(tb, natsURL, nil, args...)
}

// PolicyEnv is [Policy] with env added to its environment.
//
// The API is served over TLS with the suite's certificate to callers from
// the suite's operator CA, under the suite's access policy ([Suite]); the
// URL is https://. With "--insecure-no-auth" among args it is served as
// plain h2c instead, and the URL is http://.
func PolicyEnv(tb testing.TB, natsURL string, env []string, args ...string) (string, *Process) {
	tb.Helper()
	addr := FreeAddr(tb)
	args, scheme := serverArgs(tb, func(p *PKI) string { return p.OperatorCAFile }, args)
	p := StartEnv(tb, "keyway-policy", Bin(tb, "keyway-policy"), regexp.MustCompile(`policy service serving`), env,
		append(append([]string{"--listen", addr, "--nats", natsURL}, NATSArgs(natsURL, natsperm.Policy)...), args...)...)
	return scheme + "://" + addr, p
}

// Proxy is a running proxy node.
type Proxy struct {
	*Process
	ID    string
	Addr  string // host:port of the proxy listener
	Admin string // host:port of the admin listener
	URL   string // http://addr
	// AdminURL is https://admin: the admin port is served over TLS with
	// the suite's certificate; /status and /metrics need viewer
	// ([Operator] has it), /healthz is open. http:// with
	// --insecure-no-auth among the node's arguments.
	AdminURL string
}

// StartProxy starts keyway-proxy against natsURL and waits until its admin
// /healthz answers 200 (it has bootstrapped from the bucket);
// args are added to its command line.
func StartProxy(tb testing.TB, natsURL, nodeID string, args ...string) *Proxy {
	tb.Helper()
	return StartProxyEnv(tb, natsURL, nodeID, nil, args...)
}

// StartProxyEnv is [StartProxy] with env added to its environment.
func StartProxyEnv(tb testing.TB, natsURL, nodeID string, env []string, args ...string) *Proxy {
	tb.Helper()
	return startProxy(tb, natsURL, nodeID, FreeAddr(tb), FreeAddr(tb), env, args...)
}

// StartProxyAt is [StartProxy] on given addresses: a node restarted where it
// was.
func StartProxyAt(tb testing.TB, natsURL, nodeID, addr, admin string, args ...string) *Proxy {
	tb.Helper()
	return startProxy(tb, natsURL, nodeID, addr, admin, nil, args...)
}

// StartProxyUnready is [StartProxy] without the wait: it returns once the
// process is started, for a caller that awaits the node's readiness as an
// event of its own (the node's status in the node bucket), or times it.
func StartProxyUnready(tb testing.TB, natsURL, nodeID string, args ...string) *Proxy {
	tb.Helper()
	return newProxy(tb, natsURL, nodeID, FreeAddr(tb), FreeAddr(tb), nil, args...)
}

func startProxy(tb testing.TB, natsURL, nodeID, addr, admin string, env []string, args ...string) *Proxy {
	tb.Helper()
	px := newProxy(tb, natsURL, nodeID, addr, admin, env, args...)
	WaitHTTP(tb, px.AdminURL+"/healthz", px.Process)
	return px
}

func newProxy(tb testing.TB, natsURL, nodeID, addr, admin string, env []string, args ...string) *Proxy {
	tb.Helper()
	args, scheme := serverArgs(tb, func(p *PKI) string { return p.OperatorCAFile }, args)
	p := StartEnv(tb, "keyway-proxy "+nodeID, Bin(tb, "keyway-proxy"), nil, env,
		append(append([]string{"--listen", addr, "--admin-listen", admin, "--nats", natsURL, "--node-id", nodeID}, NATSArgs(natsURL, natsperm.Node)...), args...)...)
	return &Proxy{Process: p, ID: nodeID, Addr: addr, Admin: admin, URL: "http://" + addr, AdminURL: scheme + "://" + admin}
}

// Restart starts the node again on its addresses, as a supervisor does
// after it died.
func (px *Proxy) Restart(tb testing.TB, natsURL string, args ...string) *Proxy {
	tb.Helper()
	return StartProxyAt(tb, natsURL, px.ID, px.Addr, px.Admin, args...)
}

// WaitHTTP waits until url answers 200, failing the test if p exits first or
// 30 seconds pass. Polling is what there is for another process's readiness.
// An https URL is asked with no credential, trusting the suite's server CA.
func WaitHTTP(tb testing.TB, url string, p *Process) {
	tb.Helper()
	hc := client(tb, url)
	testwait.Eventually(tb, 30*time.Second, func() error {
		select {
		case <-p.done:
			tb.Fatalf("harness: %s exited (%v):\n%s", p.Name, p.err, p.out.String())
		default:
		}
		resp, err := hc.Get(url)
		if err != nil {
			return fmt.Errorf("harness: %s: %w", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("harness: %s answered %s, want 200", url, resp.Status)
		}
		return nil
	})
}

// Environ is the environment of a process a test runs: the test's own, with
// KEYWAYCONFIG pointing at a file of the test's (absent until something
// writes it), so that neither keywayctl nor keyway-dev reads or writes the
// keywayctl configuration of whoever runs the tests
// (~/.config/keyway/config.yaml); then env, whose values win.
func Environ(tb testing.TB, env ...string) []string {
	tb.Helper()
	out := append(os.Environ(), "KEYWAYCONFIG="+filepath.Join(tb.TempDir(), "keywayctl-config.yaml"))
	return append(out, env...)
}

// Run runs a command to completion and returns its stdout, stderr and exit
// code.
func Run(tb testing.TB, bin string, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	return RunEnv(tb, bin, nil, args...)
}

// RunEnv is Run with env added to the test's environment.
func RunEnv(tb testing.TB, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	FullTier(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = Environ(tb, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if err != nil {
		ee, ok := errors.AsType[*exec.ExitError](err)
		if !ok {
			tb.Fatalf("harness: running %s: %v", bin, err)
		}
		code = ee.ExitCode()
	}
	return o.String(), e.String(), code
}

// CPUTime is the user+system CPU time a process has used, from /proc.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	if err != nil {
		return 0, err
	}
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	if err != nil {
		return 0, err
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) WriteLine(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(line)
	s.b.WriteByte('\n')
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Vault starts the real Vault binary in dev mode (from $KEYWAY_VAULT, which
// make test sets, or scripts/tool.sh vault, which builds it into the cache
// the first time: about 20 minutes) on a free loopback port, waits until it
// is healthy, mounts PKI with a root CA when pki is set, and stops it with
// the test. KV v2 is at secret/; the root token is vaulttest.Token.
func Vault(tb testing.TB, pki bool) *vaulttest.Server {
	tb.Helper()
	return vaulttest.Start(tb, vaulttest.Options{PKI: pki})
}

// Secrets is a running secrets service.
type Secrets struct {
	*Process
	// URL is the API (https://addr, served with the suite's certificate to
	// callers from the operator or the internal CA; http:// with
	// --insecure-no-auth); InternalURL is MaterialService (https://addr,
	// mTLS, node role).
	URL, InternalURL string
	// InternalCA is the suite's ServerCA: it issued the internal
	// listener's certificate and ClientCert, a proxy node's client
	// certificate for MaterialService (OU keyway-node: node role).
	InternalCA *testca.CA
	ClientCert *testca.KeyPair
	// Dir holds the internal PKI files (ca.crt, secrets.crt, node.crt, node.key).
	Dir string
}

// StartSecrets starts keyway-secrets against natsURL with extra flags
// (--backend vault --vault-addr …, or the local backend in a temporary
// directory by default), with an internal CA made for the test.
func StartSecrets(tb testing.TB, natsURL string, env []string, extra ...string) *Secrets {
	tb.Helper()
	dir := tb.TempDir()
	ca := testca.From(tb, Suite(tb).ServerCA)
	srv := ca.Server("keyway-secrets")
	node := ca.Issue(testca.Options{CommonName: "proxy-node", OU: []string{NodeOU}})
	files := map[string][]byte{"ca.crt": ca.CertPEM(), "secrets.crt": srv.CertPEM, "secrets.key": srv.KeyPEM, "node.crt": node.CertPEM, "node.key": node.KeyPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	addr, internal := FreeAddr(tb), FreeAddr(tb)
	extra, scheme := serverArgs(tb, func(p *PKI) string { return p.SecretsClientCAFile }, extra)
	args := append([]string{"--listen", addr, "--internal-listen", internal, "--nats", natsURL,
		"--internal-cert", filepath.Join(dir, "secrets.crt"), "--internal-key", filepath.Join(dir, "secrets.key"),
		"--internal-client-ca", filepath.Join(dir, "ca.crt"), "--dir", filepath.Join(dir, "secrets"), "--poll-interval", "250ms"}, append(NATSArgs(natsURL, natsperm.Secrets), extra...)...)
	p := StartEnv(tb, "keyway-secrets", Bin(tb, "keyway-secrets"), regexp.MustCompile(`secrets service serving`), env, args...)
	return &Secrets{Process: p, URL: scheme + "://" + addr, InternalURL: "https://" + internal, InternalCA: ca, ClientCert: node, Dir: dir}
}
