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

	"keyway.dev/common/testwait"
	"keyway.dev/tests/harness"
)

// startDevStack runs keyway-dev on free loopback addresses and returns it
// with the proxy's plain-HTTP address, the policy API's and the data folder.
func startDevStack(t *testing.T, extra ...string) (dev *harness.Process, proxy, policy, data string) {
	t.Helper()
	bin := filepath.Dir(harness.Bin(t, "keyway-dev"))
	harness.Bin(t, "keyway-policy")
	_, natsPort, _ := net.SplitHostPort(harness.FreeAddr(t))
	proxy, policy, data = harness.FreeAddr(t), harness.FreeAddr(t), t.TempDir()
	args := append([]string{"--bin", bin, "--data", data, "--nats-port", natsPort,
		"--policy", policy, "--proxy", proxy, "--proxy-admin", harness.FreeAddr(t), "--upstream", harness.FreeAddr(t),
		"--proxy-tls", harness.FreeAddr(t), "--secrets", harness.FreeAddr(t), "--secrets-internal", harness.FreeAddr(t),
		"--keywayctl-config", ""}, extra...)
	dev = harness.Start(t, "keyway-dev", filepath.Join(bin, "keyway-dev"), regexp.MustCompile(`Ctrl-C stops everything`), args...)
	return dev, proxy, policy, data
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
	dev, proxy, policy, data := startDevStack(t, extra...)
	hello := "http://" + proxy + "/demo/hello"
	if code := getStatus(t, hello); code != http.StatusOK {
		t.Fatalf("GET %s before any part died: %d", hello, code)
	}
	pidOf := func(part string) int {
		all := regexp.MustCompile(`msg="part started" service=dev part=`+regexp.QuoteMeta(part)+` pid=(\d+)`).FindAllStringSubmatch(dev.Output(), -1)
		if len(all) == 0 {
			t.Fatalf("keyway-dev did not name the pid of %s:\n%s", part, dev.Output())
		}
		m := all[len(all)-1] // the current run
		pid, _ := strconv.Atoi(m[1])
		return pid
	}
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
	pki := filepath.Join(data, "pki")
	operator := []string{"KEYWAY_CA=" + filepath.Join(pki, "api-ca.crt"), "KEYWAY_CERT=" + filepath.Join(pki, "operator.crt"), "KEYWAY_KEY=" + filepath.Join(pki, "operator.key")}
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
