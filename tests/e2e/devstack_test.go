package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/devstack/echo"
	"keyway.dev/internal/ctlconfig"
	"keyway.dev/internal/material"
	"keyway.dev/tests/harness"
)

// `make run` is keyway-dev: it must come up, serve the sample binding
// through the proxy with the gateway's client certificate, and stop cleanly
// on Ctrl-C.
func TestLocalStack(t *testing.T) {
	bin := filepath.Dir(harness.Bin(t, "keyway-dev"))
	harness.Bin(t, "keyway-policy") // the launcher runs these as processes
	_, natsPort, _ := net.SplitHostPort(harness.FreeAddr(t))
	policy, proxy, admin, upstream, proxyTLS := harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t)
	secrets, secretsInternal := harness.FreeAddr(t), harness.FreeAddr(t)
	data := t.TempDir()
	port, _ := strconv.Atoi(natsPort)
	// keywayctl's config file: a user's would be ~/.config/keyway/config.yaml.
	ctlConfig := filepath.Join(t.TempDir(), "keyway", "config.yaml")

	dev := harness.Start(t, "keyway-dev", filepath.Join(bin, "keyway-dev"), regexp.MustCompile(`Ctrl-C stops everything`), // the last line of the banner
		"--bin", bin, "--data", data, "--nats-port", strconv.Itoa(port),
		"--policy", policy, "--proxy", proxy, "--proxy-admin", admin, "--upstream", upstream, "--proxy-tls", proxyTLS,
		"--secrets", secrets, "--secrets-internal", secretsInternal, "--keywayctl-config", ctlConfig)

	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`policybinding/demo-mtls created`),
		regexp.MustCompile(`probe 127\.0\.0\.1:\d+ \(SNI upstream\.keyway\.local\): ok`),
		regexp.MustCompile(`keywayctl --server https://` + regexp.QuoteMeta(policy) + ` get policybindings`),
		regexp.MustCompile(`export KEYWAY_CA=\S+api-ca\.crt KEYWAY_CERT=\S+operator\.crt KEYWAY_KEY=\S+operator\.key`),
		regexp.MustCompile(`buf curl --cacert \S+api-ca\.crt --cert \S+operator\.crt --key \S+operator\.key --list-methods https://` + regexp.QuoteMeta(policy)),
		regexp.MustCompile(`material \(mTLS\)\s+https://` + regexp.QuoteMeta(secretsInternal)),
		regexp.MustCompile(`proxy node cert\s+\S+proxy-node\.crt\s+key \S+proxy-node\.key`),
		regexp.MustCompile(`keywayctl: wrote context keyway-dev to ` + regexp.QuoteMeta(ctlConfig) + `; it is the current context`),
	} {
		if !want.MatchString(dev.Output()) {
			t.Errorf("keyway-dev output lacks %s", want)
		}
	}

	// The context keywayctl uses: the stack's URLs and operator identity.
	ctx, err := ctlconfig.Load(ctlConfig)
	if err != nil {
		t.Fatal(err)
	}
	pkiDir := filepath.Join(data, "pki")
	want := ctlconfig.Context{Name: "keyway-dev", Server: "https://" + policy, SecretsServer: "https://" + secrets,
		CA: filepath.Join(pkiDir, "api-ca.crt"), Cert: filepath.Join(pkiDir, "operator.crt"), Key: filepath.Join(pkiDir, "operator.key")}
	if got, _ := ctx.Context("keyway-dev"); got != want || ctx.CurrentContext != "keyway-dev" {
		t.Errorf("keywayctl config %s: %+v (current %q), want %+v", ctlConfig, got, ctx.CurrentContext, want)
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

	// The sample Listener: HTTPS with the dev CA's certificate for localhost;
	// a client certificate from the dev CA is verified when given.
	_, tlsPort, _ := net.SplitHostPort(proxyTLS)
	if curl, err := exec.LookPath("curl"); err == nil {
		pki := filepath.Join(data, "pki")
		for _, extra := range [][]string{nil, {"--cert", filepath.Join(pki, "client.crt"), "--key", filepath.Join(pki, "client.key")}} {
			args := append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "--cacert", filepath.Join(pki, "ca.crt"),
				"--resolve", "localhost:" + tlsPort + ":127.0.0.1", "https://localhost:" + tlsPort + "/demo/hello"}, extra...)
			out, errOut, code := harness.Run(t, curl, args...)
			if code != 0 || out != "200 2" {
				t.Errorf("curl %v: exit %d, %q %s", extra, code, out, errOut)
			}
		}
	}

	// /admin/ needs a verified client certificate and admits demo-client. It
	// serves Listener "public" only, so the plain-HTTP port has no such
	// route, and the sample applies without a warning about it.
	if resp, err := http.Get("http://" + proxy + "/admin/x"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /admin/ on the plain-HTTP port: %v %v, want 404 no_route", err, resp)
	} else {
		resp.Body.Close()
	}
	if strings.Contains(dev.Output(), "plain-HTTP port") {
		t.Errorf("applying the sample warned about the plain-HTTP port:\n%s", dev.Output())
	}
	if curl, err := exec.LookPath("curl"); err == nil {
		pki := filepath.Join(data, "pki")
		base := []string{"-sS", "--cacert", filepath.Join(pki, "ca.crt"), "--resolve", "localhost:" + tlsPort + ":127.0.0.1", "https://localhost:" + tlsPort + "/admin/x"}
		out, errOut, code := harness.Run(t, curl, append([]string{"-w", "\n%{http_code}"}, base...)...)
		if code != 0 || !strings.HasSuffix(out, "\n401") || !strings.Contains(out, `"client_certificate_required"`) {
			t.Errorf("/admin/ without a client certificate: exit %d, %q %s", code, out, errOut)
		}
		out, errOut, code = harness.Run(t, curl, append([]string{"--cert", filepath.Join(pki, "client.crt"), "--key", filepath.Join(pki, "client.key")}, base...)...)
		var rep echo.Reply
		if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !strings.Contains(rep.ForwardedClientCert, `Subject="CN=demo-client"`) {
			t.Errorf("/admin/ with demo-client's certificate: exit %d, %q %s", code, out, errOut)
		}
	}

	// The APIs answer the operator identity the banner names, and no one
	// without a credential.
	pki := filepath.Join(data, "pki")
	operator := []string{"KEYWAY_CA=" + filepath.Join(pki, "api-ca.crt"), "KEYWAY_CERT=" + filepath.Join(pki, "operator.crt"), "KEYWAY_KEY=" + filepath.Join(pki, "operator.key")}
	ctl := harness.Bin(t, "keywayctl")
	if out, errOut, code := harness.RunEnv(t, ctl, operator, "--server", "https://"+policy, "get", "policybindings"); code != 0 || !strings.Contains(out, "demo-mtls") {
		t.Errorf("keywayctl get policybindings as the operator: exit %d, %s%s", code, out, errOut)
	}
	if out, errOut, code := harness.Run(t, ctl, "--server", "https://"+policy, "--ca", filepath.Join(pki, "api-ca.crt"), "get", "policybindings"); code == 0 || !strings.Contains(errOut, "does not know who you are") {
		t.Errorf("keywayctl get policybindings without a certificate: exit %d, %s%s", code, out, errOut)
	}
	buf := harness.Tool(t, "buf", "KEYWAY_BUF")
	if out, errOut, code := harness.Run(t, buf, "curl", "--cacert", filepath.Join(pki, "api-ca.crt"), "--cert", filepath.Join(pki, "operator.crt"), "--key", filepath.Join(pki, "operator.key"),
		"--list-methods", "https://"+policy); code != 0 || !strings.Contains(out, "keyway.policy.v1.PolicyService/Apply") {
		t.Errorf("buf curl --list-methods as the banner shows it: exit %d, %s%s", code, out, errOut)
	}

	// The secrets service: keywayctl stores the gateway's key pair in the
	// local backend, and a proxy node's certificate files fetch it over mTLS.
	out, errOut, code := harness.RunEnv(t, ctl, operator, "secrets", "--secrets-server", "https://"+secrets, "put",
		"--keystore", "edge", "--alias", "gateway", "--cert", filepath.Join(pki, "gateway.crt"), "--key", filepath.Join(pki, "gateway.key"))
	if code != 0 || !strings.Contains(out, "alias edge/gateway stored") {
		t.Errorf("keywayctl secrets put: exit %d, %s%s", code, out, errOut)
	}
	material, err := material.NewServiceClientFromFiles("https://"+secretsInternal, material.Files{
		Cert: filepath.Join(pki, "proxy-node.crt"), Key: filepath.Join(pki, "proxy-node.key"), CA: filepath.Join(pki, "internal-ca.crt")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := material.FetchAlias(context.Background(), connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gateway"})); err != nil {
		t.Errorf("FetchAlias with the dev stack's proxy-node certificate: %v", err)
	}

	if err := dev.Interrupt(30 * time.Second); err != nil {
		t.Fatalf("Ctrl-C: %v", err)
	}
	if _, err := net.DialTimeout("tcp", proxy, time.Second); err == nil {
		t.Errorf("the proxy still listens on %s after keyway-dev stopped", proxy)
	}
}
