package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"keyway.dev/devstack/echo"
	"keyway.dev/tests/harness"
)

// `make run` is keyway-dev: it must come up, serve the sample binding
// through the proxy with the gateway's client certificate, and stop cleanly
// on Ctrl-C.
func TestLocalStack(t *testing.T) {
	bin := filepath.Dir(harness.Bin(t, "keyway-dev"))
	harness.Bin(t, "keyway-policy") // the launcher runs these as processes
	_, natsPort, _ := net.SplitHostPort(harness.FreeAddr(t))
	policy, proxy, admin, upstream := harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t)
	port, _ := strconv.Atoi(natsPort)

	dev := harness.Start(t, "keyway-dev", filepath.Join(bin, "keyway-dev"), regexp.MustCompile(`Keyway is running`),
		"--bin", bin, "--data", t.TempDir(), "--nats-port", strconv.Itoa(port),
		"--policy", policy, "--proxy", proxy, "--proxy-admin", admin, "--upstream", upstream)

	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`policybinding/demo-mtls created`),
		regexp.MustCompile(`probe 127\.0\.0\.1:\d+ \(SNI upstream\.keyway\.local\): ok`),
		regexp.MustCompile(`keywayctl --server http://` + regexp.QuoteMeta(policy) + ` get policybindings`),
	} {
		if !want.MatchString(dev.Output()) {
			t.Errorf("keyway-dev output lacks %s", want)
		}
	}

	resp, err := http.Get("http://" + proxy + "/demo/hello")
	if err != nil {
		t.Fatal(err)
	}
	var rep echo.Reply
	err = json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /demo/hello through the proxy: %s %v", resp.Status, err)
	}
	if rep.ClientSubject != "CN=keyway-gateway" || rep.SNI != "upstream.keyway.local" {
		t.Errorf("the demo upstream saw client %q and SNI %q, want CN=keyway-gateway and upstream.keyway.local", rep.ClientSubject, rep.SNI)
	}

	if err := dev.Interrupt(30 * time.Second); err != nil {
		t.Fatalf("Ctrl-C: %v", err)
	}
	if _, err := net.DialTimeout("tcp", proxy, time.Second); err == nil {
		t.Errorf("the proxy still listens on %s after keyway-dev stopped", proxy)
	}
}
