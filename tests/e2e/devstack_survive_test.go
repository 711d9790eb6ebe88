package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"keyway.dev/internal/testwait"
	"keyway.dev/internal/vaulttest"
	"keyway.dev/tests/harness"
)

// devStack is a running keyway-dev: the proxy's plain-HTTP address, the
// policy and secrets APIs' addresses, and the data folder.
type devStack struct {
	dev                          *harness.Process
	proxy, policy, secrets, data string
}

// startDevStack runs keyway-dev on free loopback addresses.
func startDevStack(t *testing.T, extra ...string) devStack {
	t.Helper()
	bin := filepath.Dir(harness.Bin(t, "keyway-dev"))
	harness.Bin(t, "keyway-policy")
	_, natsPort, _ := net.SplitHostPort(harness.FreeAddr(t))
	st := devStack{proxy: harness.FreeAddr(t), policy: harness.FreeAddr(t), secrets: harness.FreeAddr(t), data: t.TempDir()}
	args := append([]string{"--bin", bin, "--data", st.data, "--nats-port", natsPort,
		"--policy", st.policy, "--proxy", st.proxy, "--proxy-admin", harness.FreeAddr(t), "--upstream", harness.FreeAddr(t),
		"--proxy-tls", harness.FreeAddr(t), "--secrets", st.secrets, "--secrets-internal", harness.FreeAddr(t),
		"--keywayctl-config", ""}, extra...)
	st.dev = harness.Start(t, "keyway-dev", filepath.Join(bin, "keyway-dev"), regexp.MustCompile(`Ctrl-C stops everything`), args...)
	return st
}

// operatorEnv is the environment that gives keywayctl the stack's
// operator identity.
func (st devStack) operatorEnv() []string {
	pki := filepath.Join(st.data, "pki")
	return []string{"KEYWAY_CA=" + filepath.Join(pki, "api-ca.crt"), "KEYWAY_CERT=" + filepath.Join(pki, "operator.crt"), "KEYWAY_KEY=" + filepath.Join(pki, "operator.key")}
}

// pidOf is the pid keyway-dev last started part with.
func (st devStack) pidOf(t *testing.T, part string) int {
	t.Helper()
	all := regexp.MustCompile(`msg="part started" service=dev part=`+regexp.QuoteMeta(part)+` pid=(\d+)`).FindAllStringSubmatch(st.dev.Output(), -1)
	if len(all) == 0 {
		t.Fatalf("keyway-dev did not name the pid of %s:\n%s", part, st.dev.Output())
	}
	pid, _ := strconv.Atoi(all[len(all)-1][1]) // the current run
	return pid
}

// waitOutput waits until the process printed a match of re, and returns
// the submatches of the first one.
func waitOutput(t *testing.T, p *harness.Process, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	var m []string
	testwait.Eventually(t, timeout, func() error {
		exited := false
		select {
		case <-p.Exited():
			exited = true
		default:
		}
		if m = re.FindStringSubmatch(p.Output()); m != nil {
			return nil
		}
		if exited {
			t.Fatalf("%s exited before printing %s:\n%s", p.Name, re, p.Output())
		}
		return fmt.Errorf("%s did not print %s:\n%s", p.Name, re, p.Output())
	})
	return m
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Under `make run`, an optional part that dies (Vault with --vault, the
// secrets service, the policy service) is reported with its exit status and
// last lines and restarted, and the proxy keeps serving; the proxy dying
// stops the stack.
func TestLocalStackSurvivesOptionalParts(t *testing.T) {
	var extra []string
	parts := []string{"keyway-secrets", "keyway-policy"}
	if v := os.Getenv("KEYWAY_VAULT"); v != "" {
		extra = []string{"--vault", "--vault-bin", v, "--vault-addr", harness.FreeAddr(t)}
		parts = append([]string{"vault"}, parts...)
	} else {
		t.Log("KEYWAY_VAULT is not set: testing without --vault")
	}
	st := startDevStack(t, extra...)
	dev, proxy, policy := st.dev, st.proxy, st.policy
	hello := "http://" + proxy + "/demo/hello"
	if code := getStatus(t, hello); code != http.StatusOK {
		t.Fatalf("GET %s before any part died: %d", hello, code)
	}
	pidOf := func(part string) int { return st.pidOf(t, part) }
	for _, part := range parts {
		pid := pidOf(part)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %s (pid %d): %v", part, pid, err)
		}
		waitOutput(t, dev, regexp.MustCompile(`keyway-dev: `+regexp.QuoteMeta(part)+` \(pid `+strconv.Itoa(pid)+`\) exited: signal: killed \(the proxy keeps serving its last configuration and NATS keeps running; keyway-dev restarts it\)`), 15*time.Second)
		if !strings.Contains(dev.Output(), "keyway-dev: last lines of "+part+":\n  | ") {
			t.Errorf("the report of %s lacks its last lines:\n%s", part, dev.Output())
		}
		select {
		case <-dev.Exited():
			t.Fatalf("keyway-dev stopped after %s died:\n%s", part, dev.Output())
		default:
		}
		if code := getStatus(t, hello); code != http.StatusOK { // before the restart
			t.Errorf("GET %s after %s was killed: %d, want 200", hello, part, code)
		}
		// Restarted after the first backoff (a second).
		waitOutput(t, dev, regexp.MustCompile(`msg="part started" service=dev part=`+regexp.QuoteMeta(part)+` pid=\d+ optional=true restart=true`), 15*time.Second)
		if part == "vault" {
			// A dev server starts empty: the launcher mounts its PKI again.
			waitOutput(t, dev, regexp.MustCompile(`msg="restarted part set up" service=dev part=vault`), 30*time.Second)
		}
	}

	// The restarted policy service serves the configuration it had (it
	// lives in NATS) to the operator.
	operator := st.operatorEnv()
	// The restarted service is another process: poll its API.
	testwait.Eventually(t, 30*time.Second, func() error {
		out, errOut, code := harness.RunEnv(t, harness.Bin(t, "keywayctl"), operator, "--server", "https://"+policy, "get", "policybindings")
		if code != 0 || !strings.Contains(out, "demo-mtls") {
			return fmt.Errorf("keywayctl get policybindings after the policy service restarted: exit %d, %s%s", code, out, errOut)
		}
		return nil
	})

	// The proxy is required: the stack says so and stops, non-zero.
	pid := pidOf("keyway-proxy")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-dev.Exited():
	case <-time.After(30 * time.Second):
		t.Fatalf("keyway-dev still running 30s after the proxy died:\n%s", dev.Output())
	}
	if out := dev.Output(); !strings.Contains(out, "keyway-dev: keyway-proxy (required) exited: signal: killed") {
		t.Errorf("keyway-dev's last words after the proxy died:\n%s", out)
	}
}

// `keyway-dev --help` prints the flags and exits 0.
func TestLocalStackHelp(t *testing.T) {
	out, errOut, code := harness.Run(t, harness.Bin(t, "keyway-dev"), "--help")
	if code != 0 || !strings.Contains(out+errOut, "-proxy-admin") {
		t.Errorf("keyway-dev --help: exit %d, %s%s", code, out, errOut)
	}
}

// A busy port is named with its flag before any part starts.
func TestLocalStackBusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	bin := filepath.Dir(harness.Bin(t, "keyway-dev"))
	_, natsPort, _ := net.SplitHostPort(harness.FreeAddr(t))
	start := time.Now()
	out, errOut, code := harness.Run(t, filepath.Join(bin, "keyway-dev"), "--bin", bin, "--data", t.TempDir(), "--nats-port", natsPort,
		"--policy", harness.FreeAddr(t), "--proxy", harness.FreeAddr(t), "--proxy-admin", harness.FreeAddr(t), "--upstream", harness.FreeAddr(t),
		"--proxy-tls", l.Addr().String(), "--secrets", harness.FreeAddr(t), "--secrets-internal", harness.FreeAddr(t), "--keywayctl-config", "")
	if code == 0 || !strings.Contains(errOut, "--proxy-tls "+l.Addr().String()) || !strings.Contains(errOut, "address already in use") ||
		strings.Contains(out+errOut, "signal: killed") {
		t.Errorf("keyway-dev with --proxy-tls busy: exit %d, stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("keyway-dev took %s to refuse a busy port; it should check before starting anything", d)
	}
}

// Vault away under `make run --vault`: `keywayctl secrets put` fails at
// once with a message that names the secrets service and Vault and says the
// value was not stored; traffic through the proxy goes on; and once Vault
// is back the value is absent: nothing queued the write.
//
// keyway-dev restarts a Vault that dies within a second. The stack runs
// Vault through a link that the test removes before killing it, so that
// each restart fails and the outage lasts as long as the test needs; the
// link put back ends it.
func TestLocalStackVaultOutage(t *testing.T) {
	vaultBin := vaulttest.Binary(t)
	link := filepath.Join(t.TempDir(), "vault")
	if err := os.Symlink(vaultBin, link); err != nil {
		t.Fatal(err)
	}
	vaultAddr := harness.FreeAddr(t)
	st := startDevStack(t, "--vault", "--vault-bin", link, "--vault-addr", vaultAddr)
	hello := "http://" + st.proxy + "/demo/hello"
	if code := getStatus(t, hello); code != http.StatusOK {
		t.Fatalf("GET %s with Vault up: %d", hello, code)
	}
	pki := filepath.Join(st.data, "pki")
	ctl := harness.Bin(t, "keywayctl")
	put := func(alias string) (string, string, int) {
		return harness.RunEnv(t, ctl, st.operatorEnv(), "secrets", "--secrets-server", "https://"+st.secrets, "put",
			"--keystore", "outage", "--alias", alias, "--cert", filepath.Join(pki, "gateway.crt"), "--key", filepath.Join(pki, "gateway.key"))
	}
	if out, errOut, code := put("before"); code != 0 {
		t.Fatalf("secrets put with Vault up: exit %d\n%s%s", code, out, errOut)
	}

	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	pid := st.pidOf(t, "vault")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 vault (pid %d): %v", pid, err)
	}
	waitOutput(t, st.dev, regexp.MustCompile(`keyway-dev: vault \(pid `+strconv.Itoa(pid)+`\) exited: signal: killed`), 15*time.Second)

	out, errOut, code := put("during")
	t.Logf("keywayctl secrets put with Vault down: exit %d\n%s", code, errOut)
	want := "error: storing alias outage/during: secrets service: Vault at http://" + vaultAddr + " is unreachable ("
	if code == 0 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "connection refused") ||
		!strings.Contains(errOut, "alias outage/during was not stored, and nothing retries it: put it again once Vault answers") || strings.Contains(errOut, "policy service") {
		t.Errorf("secrets put with Vault down: exit %d\nstdout: %s\nstderr: %s\nwant stderr with %q", code, out, errOut, want)
	}
	if code := getStatus(t, hello); code != http.StatusOK {
		t.Errorf("GET %s with Vault down: %d, want 200", hello, code)
	}
	// The secrets service still answers reads from what it holds.
	if out, errOut, code := harness.RunEnv(t, ctl, st.operatorEnv(), "secrets", "--secrets-server", "https://"+st.secrets, "get", "--keystore", "outage", "--alias", "before"); code != 0 {
		t.Errorf("secrets get with Vault down: exit %d\n%s%s", code, out, errOut)
	}

	// Vault back (a dev server starts empty; keyway-dev mounts its PKI).
	if err := os.Symlink(vaultBin, link); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, st.dev, regexp.MustCompile(`msg="restarted part set up" service=dev part=vault`), 90*time.Second)
	// The secrets service's first poll of the new, empty Vault forgets
	// what the old one held: after it, a write queued during the outage
	// would have landed.
	waitOutput(t, st.dev, regexp.MustCompile(`\[keyway-secrets\] .*msg="secret removed" .*reason="deleted in the backend"`), 60*time.Second)
	if code := getStatus(t, hello); code != http.StatusOK {
		t.Errorf("GET %s with Vault back (empty): %d, want 200 (nodes keep the material they hold)", hello, code)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, errOut, code := put("after")
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("secrets put after Vault came back: exit %d\n%s%s", code, out, errOut)
		}
		time.Sleep(200 * time.Millisecond) // the secrets service's next poll finds Vault back
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+vaultAddr+"/v1/secret/metadata/keyway/keystores/outage/during", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", "keyway-dev-root")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("Vault answers %d for the alias refused while it was down; want 404: it was stored behind the caller's back", resp.StatusCode)
	}
	if out, errOut, code := harness.RunEnv(t, ctl, st.operatorEnv(), "secrets", "--secrets-server", "https://"+st.secrets, "get", "--keystore", "outage", "--alias", "during"); code == 0 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("secrets get of the alias refused while Vault was down: exit %d\n%s%s", code, out, errOut)
	}
}
