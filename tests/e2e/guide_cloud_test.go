package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/testwait"
	"keyway.dev/tests/harness"
)

// The cloud backend guide's appendix, command for command: a root CA, the
// backend's certificate for api.example.com and the gateway's client
// certificate, all with the Common Name only (no SAN), as the guide writes
// them.
const cloudGuideOpenSSL = `
openssl genrsa -out ca.key 2048
openssl req -new -x509 -key ca.key -out ca.crt -days 3650 \
  -subj "/C=CN/O=Test/CN=RootCA"
openssl genrsa -out server.key 2048
openssl req -new -key server.key -out server.csr \
  -subj "/C=CN/O=Test/CN=api.example.com"
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key \
  -CAcreateserial -out server.crt -days 3650
openssl genrsa -out client.key 2048
openssl req -new -key client.key -out client.csr \
  -subj "/C=CN/O=Test/CN=Gateway"
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key \
  -CAcreateserial -out client.crt -days 3650
`

// The guide's nginx server block; only the paths and the listen address are
// this machine's, and the backend behind it is the test's.
const cloudGuideNginx = `
daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen %[2]s ssl;
        server_name api.example.com;

        # Server certificate
        ssl_certificate     %[1]s/server.crt;
        ssl_certificate_key %[1]s/server.key;

        # Enable client certificate verification (critical configuration)
        ssl_verify_client on;
        ssl_client_certificate %[1]s/ca.crt;

        location / {
            proxy_pass http://%[3]s;
        }
    }
}
`

// cloudGuide runs the guide's openssl commands in a new folder and starts
// its nginx backend in front of a plain HTTP backend; it returns the folder
// and nginx's address.
func cloudGuide(t *testing.T) (dir, addr string) {
	t.Helper()
	nginx := nginxBinary(t)
	dir = t.TempDir()
	sh := exec.Command("bash", "-euo", "pipefail", "-c", cloudGuideOpenSSL)
	sh.Dir = dir
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the guide's openssl commands: %v\n%s", err, out)
	}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the backend: %s\n", r.URL.Path)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	t.Cleanup(func() { backend.Close() })

	addr = harness.FreeAddr(t)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, cloudGuideNginx, dir, addr, ln.Addr()), 0o600); err != nil {
		t.Fatal(err)
	}
	p := harness.Start(t, "nginx", nginx, nil, "-p", dir, "-c", conf)
	// nginx says nothing when it listens: poll its port.
	testwait.Eventually(t, 10*time.Second, func() error {
		select {
		case <-p.Exited():
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited:\n%s\n%s", p.Output(), log)
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return fmt.Errorf("nginx does not listen on %s: %w\n%s\n%s", addr, err, p.Output(), log)
		}
		c.Close()
		return nil
	})
	return dir, addr
}

// nginxBinary is Debian's nginx (make test installs nginx-light with
// scripts/debian.sh when it is missing).
func nginxBinary(t *testing.T) string {
	t.Helper()
	harness.FullTier(t)
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	root, err := harness.Root()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(root, "scripts", "debian.sh"), "nginx-light").CombinedOutput(); err != nil {
		t.Fatalf("nginx is not installed, and installing it failed: %v\n%s", err, out)
	}
	return "/usr/sbin/nginx"
}

// cloudManifest is what the guide's form says, as Keyway resources: the
// service by name and address, mTLS with the gateway's certificate and the
// CA, and the SNI; the guide's files are pasted in as they are. extra adds
// config lines.
func cloudManifest(t *testing.T, dir, addr, clientCrt, clientKey, extra string) string {
	t.Helper()
	read := func(name string) string {
		if name == "" {
			return ""
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return "      " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n      ") + "\n"
	}
	cert := ""
	if clientCrt != "" {
		cert = "    certificate:\n      crt: |\n  " + strings.ReplaceAll(read(clientCrt), "\n      ", "\n        ") +
			"      key: |\n  " + strings.ReplaceAll(read(clientKey), "\n      ", "\n        ")
	}
	return fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: Service
metadata:
  name: order-service
spec:
  address: %s
---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata:
  name: order-service
spec:
  path: /test
  service: order-service
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata:
  name: order-service-mtls
spec:
  targetRef:
    kind: Service
    name: order-service
  policyRef:
    name: tls-outbound
  config:
    skipValidation: false
    sni: api.example.com
    trustedCA: |
%s%s%s`, addr, read("ca.crt"), cert, extra)
}

// TestCloudBackendGuide follows the cloud backend guide with its own files
// against its own nginx: the CN-only backend certificate is accepted with
// the one opt-in Keyway asks for, the probe and the data path get 200, and
// a client certificate from another CA, or none, is reported as what it is
// (client_certificate_rejected, no_client_certificate) by the probe and by
// the data path alike: never "ok".
func TestCloudBackendGuide(t *testing.T) {
	dir, nginxAddr := cloudGuide(t)
	w := newWorldEnv(t, nil, 1)
	px := w.proxies[0]

	// The guide's files without the opt-in: the CN-only backend
	// certificate is refused, and the fix names the opt-in.
	plain := w.write(t, "plain.yaml", cloudManifest(t, dir, nginxAddr, "client.crt", "client.key", ""))
	out, errOut, code := w.ctl(t, "validate", "-f", plain)
	if code == 0 || !strings.Contains(out+errOut, "legacy_common_name") || !strings.Contains(out+errOut, "legacyCommonName: true") {
		t.Fatalf("validate without the opt-in: exit %d, want legacy_common_name with the opt-in in its fix:\n%s%s", code, out, errOut)
	}

	// With it: a warning, a probe that reaches nginx's backend, and 200.
	good := w.write(t, "good.yaml", cloudManifest(t, dir, nginxAddr, "client.crt", "client.key", "    legacyCommonName: true\n"))
	out, errOut, code = w.ctl(t, "validate", "-f", good)
	if code != 0 {
		t.Fatalf("validate: exit %d\n%s%s", code, out, errOut)
	}
	if !regexp.MustCompile(`probe 127\.0\.0\.1:\d+ \(SNI api\.example\.com\): ok, TLS 1\.[23].*GET /: 200`).MatchString(out) {
		t.Errorf("validate does not report the probe's GET / 200:\n%s", out)
	}
	if !strings.Contains(out+errOut, "legacyCommonName") {
		t.Errorf("validate does not warn about legacyCommonName:\n%s%s", out, errOut)
	}
	if _, errOut, code := w.ctl(t, "apply", "-f", good); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, errOut)
	}
	eventually(t, "the node reaches the guide's backend", func() (bool, string) {
		code, body := get(t, px.URL+"/test")
		return code == http.StatusOK && strings.Contains(string(body), "hello from the backend: /test"), fmt.Sprintf("%d %s", code, body)
	})

	// A client certificate from another CA, made the guide's way.
	other := exec.Command("bash", "-euo", "pipefail", "-c", `
openssl genrsa -out other-ca.key 2048
openssl req -new -x509 -key other-ca.key -out other-ca.crt -days 3650 -subj "/C=CN/O=Other/CN=OtherCA"
openssl genrsa -out other.key 2048
openssl req -new -key other.key -out other.csr -subj "/C=CN/O=Other/CN=Gateway"
openssl x509 -req -in other.csr -CA other-ca.crt -CAkey other-ca.key -CAcreateserial -out other.crt -days 3650`)
	other.Dir = dir
	if out, err := other.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name, crt, key string
		reason         string
	}{
		{"a client certificate from another CA", "other.crt", "other.key", "client_certificate_rejected"},
		{"no client certificate", "", "", "no_client_certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := w.write(t, "bad.yaml", cloudManifest(t, dir, nginxAddr, tc.crt, tc.key, "    legacyCommonName: true\n"))
			out, errOut, code := w.ctl(t, "validate", "-f", m)
			if code == 0 || !strings.Contains(out+errOut, tc.reason) {
				t.Fatalf("validate: exit %d, want the probe to fail with %s:\n%s%s", code, tc.reason, out, errOut)
			}
			// apply probes as validate does, and stores nothing.
			before, _, _ := w.ctl(t, "get", "policybinding", "order-service-mtls", "-o", "json")
			if out, errOut, code := w.ctl(t, "apply", "-f", m); code == 0 || !strings.Contains(errOut, tc.reason) || !strings.Contains(errOut, "nothing applied") {
				t.Fatalf("apply: exit %d, want the probe to refuse it with %s:\n%s%s", code, tc.reason, out, errOut)
			}
			if after, _, _ := w.ctl(t, "get", "policybinding", "order-service-mtls", "-o", "json"); after != before || !strings.Contains(after, "order-service-mtls") {
				t.Fatalf("a refused apply changed the stored binding:\n%s\nthen\n%s", before, after)
			}
			if _, errOut, code := w.ctl(t, "apply", "--probe=false", "-f", m); code != 0 {
				t.Fatalf("apply --probe=false: exit %d\n%s", code, errOut)
			}
			eventually(t, "the node answers with the typed reason", func() (bool, string) {
				code, body := get(t, px.URL+"/test")
				return code == http.StatusBadGateway && strings.Contains(string(body), `"`+tc.reason+`"`), fmt.Sprintf("%d %s", code, body)
			})
			resp, err := harness.Operator(t).HTTP.Get(px.AdminURL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if code := resp.StatusCode; code != http.StatusOK || !regexp.MustCompile(`reason="`+tc.reason+`"`).Match(body) {
				t.Errorf("/metrics (%d) has no series with reason=%q", code, tc.reason)
			}
			if !strings.Contains(px.Output(), tc.reason) {
				t.Errorf("the node's log does not carry %s", tc.reason)
			}
		})
	}
}
