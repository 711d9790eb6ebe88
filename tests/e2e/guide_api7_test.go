package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"keyway.dev/tests/harness"
)

// The API7 guide's certificates, command for command: an X.509 v1 root CA
// (no basicConstraints), a server certificate for test.com and a client
// certificate, both with the Common Name only.
const api7GuideOpenSSL = `
openssl genrsa -out ca.key 2048 && \
openssl req -new -sha256 -key ca.key -out ca.csr -subj "/CN=ROOTCA" && \
openssl x509 -req -days 36500 -sha256 -extensions v3_ca -signkey ca.key -in ca.csr -out ca.crt
openssl genrsa -out server.key 2048 && \
openssl req -new -sha256 -key server.key -out server.csr -subj "/CN=test.com" && \
openssl x509 -req -days 36500 -sha256 -extensions v3_req \
-CA ca.crt -CAkey ca.key -CAserial ca.srl -CAcreateserial \
-in server.csr -out server.crt
openssl genrsa -out client.key 2048 && \
openssl req -new -sha256 -key client.key -out client.csr -subj "/CN=CLIENT" && \
openssl x509 -req -days 36500 -sha256 -extensions v3_req \
-CA ca.crt -CAkey ca.key -CAserial ca.srl -CAcreateserial \
-in client.csr -out client.crt
`

// TestAPI7Guide follows the API7 guide with its own files: the server
// certificate with peer authentication becomes a Listener host for test.com
// whose client CA is the guide's v1 root; apply accepts both with warnings
// that say what they mean, and the guide's curl gets a 200 over HTTP/2 and
// HTTP/1.1, with -k as the guide writes it and with --cacert ca.crt; without
// a client certificate, or with one from another CA, it gets none.
func TestAPI7Guide(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	dir := t.TempDir()
	sh := exec.Command("bash", "-euo", "pipefail", "-c", api7GuideOpenSSL)
	sh.Dir = dir
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the guide's openssl commands: %v\n%s", err, out)
	}
	w := newWorldEnv(t, nil, 1)
	port := strings.TrimPrefix(harness.FreeAddr(t), "127.0.0.1:")
	pem := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return "          " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n          ") + "\n"
	}
	manifest := w.write(t, "api7.yaml", fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: Service
metadata:
  name: httpbin
spec:
  address: %s
---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata:
  name: ip
spec:
  path: /ip
  service: httpbin
  listeners: [public]
---
apiVersion: keyway.dev/v1alpha1
kind: Listener
metadata:
  name: public
spec:
  address: 127.0.0.1:%s
  hosts:
    - hostnames: [test.com]
      default: true
      certificate:
        crt: |
%s        key: |
%s      clientAuth: require-and-verify
      clientCAs: |
%s`, plainUpstream(t), port, pem("server.crt"), pem("server.key"), pem("ca.crt")))
	out, errOut, code := w.ctl(t, "apply", "-f", manifest)
	if code != 0 {
		t.Fatalf("apply of the guide's files: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"is an X.509 v1 certificate", "accepted as a trust anchor", "never accepted as an intermediate",
		"curl and other OpenSSL-based clients accept it, but browsers (Chrome, Firefox, Safari) and Go clients refuse it", "-copy_extensions copy",
	} {
		if !strings.Contains(out+errOut, want) {
			t.Errorf("apply does not warn %q:\n%s%s", want, out, errOut)
		}
	}

	resolve := "test.com:" + port + ":127.0.0.1"
	url := "https://test.com:" + port + "/ip"
	curl := func(args ...string) (string, error) {
		cmd := exec.Command("curl", append([]string{"-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code} %{http_version}"}, args...)...)
		cmd.Dir = dir
		var stderr strings.Builder
		cmd.Stderr = &stderr
		b, err := cmd.Output() // -w's line; -v's trace goes to stderr
		if err != nil {
			return string(b), fmt.Errorf("%w: %.400s", err, stderr.String())
		}
		return string(b), nil
	}
	eventually(t, "the node serves the guide's Listener", func() (bool, string) {
		got, err := curl("-k", "--resolve", resolve, url, "--cert", "client.crt", "--key", "client.key")
		return err == nil && strings.HasPrefix(got, "200"), got
	})
	for _, tc := range []struct {
		name string
		args []string
		want *regexp.Regexp
	}{
		// The guide's own command (with -i -k -v as written).
		{"the guide's curl", []string{"-ikv", "--resolve", resolve, url, "--cert", "client.crt", "--key", "client.key"}, regexp.MustCompile(`^200 2$`)},
		{"verifying the server with the guide's CA, HTTP/2", []string{"--cacert", "ca.crt", "--cert", "client.crt", "--key", "client.key", "--resolve", resolve, url}, regexp.MustCompile(`^200 2$`)},
		{"verifying the server with the guide's CA, HTTP/1.1", []string{"--http1.1", "--cacert", "ca.crt", "--cert", "client.crt", "--key", "client.key", "--resolve", resolve, url}, regexp.MustCompile(`^200 1\.1$`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := curl(tc.args...)
			if err != nil || !tc.want.MatchString(strings.TrimSpace(got)) {
				t.Errorf("curl %s: %q (%v), want %s", strings.Join(tc.args, " "), got, err, tc.want)
			}
		})
	}

	// Without a client certificate, or with one from another CA, no 200.
	other := exec.Command("bash", "-euo", "pipefail", "-c", `
openssl genrsa -out other-ca.key 2048 && openssl req -new -sha256 -key other-ca.key -out other-ca.csr -subj "/CN=OTHERCA" && \
openssl x509 -req -days 365 -sha256 -signkey other-ca.key -in other-ca.csr -out other-ca.crt
openssl genrsa -out other.key 2048 && openssl req -new -sha256 -key other.key -out other.csr -subj "/CN=CLIENT" && \
openssl x509 -req -days 365 -sha256 -CA other-ca.crt -CAkey other-ca.key -CAcreateserial -in other.csr -out other.crt`)
	other.Dir = dir
	if b, err := other.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, b)
	}
	for name, args := range map[string][]string{
		"no client certificate":                {"--cacert", "ca.crt", "--resolve", resolve, url},
		"a client certificate from another CA": {"--cacert", "ca.crt", "--cert", "other.crt", "--key", "other.key", "--resolve", resolve, url},
	} {
		if got, err := curl(args...); err == nil && strings.HasPrefix(got, "200") {
			t.Errorf("%s: curl got %q", name, got)
		}
	}
}

// plainUpstream serves 200 on plain HTTP on loopback until the test ends.
func plainUpstream(t *testing.T) string {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "{\"origin\": %q}\n", r.RemoteAddr)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
