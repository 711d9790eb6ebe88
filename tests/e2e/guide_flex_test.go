package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"keyway.dev/devstack/echo"
)

// The Flex guide (Transport Layer Security Policy - Outbound) prints its
// YAML and no openssl commands: it asks for a trusted CA, a client key pair
// of 2048 bits or more, and an upstream certificate with a dNSName SAN.
// These are the openssl commands that make them so, for a test upstream on
// localhost.
const flexGuideOpenSSL = `
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 -subj "/CN=Upstream CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
openssl req -newkey rsa:2048 -nodes -keyout upstream.key -out upstream.csr -subj "/CN=localhost" \
  -addext subjectAltName=DNS:localhost
openssl x509 -req -in upstream.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -copy_extensions copy -out upstream.crt
openssl req -newkey rsa:2048 -nodes -keyout gateway.key -out gateway.csr -subj "/CN=flex-gateway"
openssl x509 -req -in gateway.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -out gateway.crt
`

// The guide's two samples, exactly as printed (seeds/001, "Resource
// Configuration Examples").
const (
	flexGuideTLS = `apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata:
  name: tls-outbound
spec:
  targetRef:
    kind: Service
    name: ingress-test-outbound-upstream
  policyRef:
    name: tls-outbound
  config:
    skipValidation: true
    certificate:
      key: |
        # -----BEGIN PRIVATE KEY-----
        # insert certificate key
        # -----END PRIVATE KEY-----
      crt: |
        # -----BEGIN CERTIFICATE-----
        # insert certificate
        # -----END CERTIFICATE-----
`
	flexGuideMTLS = `apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata:
  name: mtls-outbound
spec:
  targetRef:
    kind: Service
    name: ingress-test-outbound-upstream
  policyRef:
    name: tls-outbound
  config:
    skipValidation: false
    trustedCA: |
      # -----BEGIN CERTIFICATE-----
      # insert certificate
      # -----END CERTIFICATE-----
    certificate:
      key: |
        # -----BEGIN PRIVATE KEY-----
        # insert certificate key
        # -----END PRIVATE KEY-----
      crt: |
        # -----BEGIN CERTIFICATE-----
        # insert certificate
        # -----END CERTIFICATE-----
    alpn:
      - http/1.1
      - h2
    minversion: "1.1"
    maxversion: "1.3"
    ciphers:
      - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
      - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
      - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
      - TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
      - TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
      - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
`
)

// flexGuideInstance is the API instance the guide's binding assumes: its
// upstream service "upstream" is the Service ingress-test-outbound-upstream
// that the binding targets (Flex names an instance's services so). It is
// Flex's declarative ApiInstance, with the test upstream's port.
const flexGuideInstance = `apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata:
  name: ingress-test-outbound
spec:
  address: http://0.0.0.0:8081
  services:
    upstream:
      address: https://localhost:%s
`

// pasteFlexPEM does what the guide says with "# insert certificate": the
// PEM replaces the three commented lines of each block, at their indent, in
// order: trustedCA (if any), certificate.key, certificate.crt.
func pasteFlexPEM(t *testing.T, sample, dir string, files ...string) string {
	t.Helper()
	block := regexp.MustCompile(`(?m)^( *)# -----BEGIN ([A-Z ]+)-----\n *# insert [a-z ]+\n *# -----END [A-Z ]+-----$`)
	i := 0
	out := block.ReplaceAllStringFunc(sample, func(m string) string {
		indent := block.FindStringSubmatch(m)[1]
		b, err := os.ReadFile(filepath.Join(dir, files[i]))
		if err != nil {
			t.Fatal(err)
		}
		i++
		return indent + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n"+indent)
	})
	if i != len(files) {
		t.Fatalf("pasted %d PEM files into the sample, want %d", i, len(files))
	}
	return out
}

// mtlsUpstream serves HTTPS on loopback with cert and key, demanding a
// client certificate from the CA in caFile, until the test ends; it returns
// the port.
func mtlsUpstream(t *testing.T, dir, cert, key, caFile string) string {
	t.Helper()
	kp, err := tls.LoadX509KeyPair(filepath.Join(dir, cert), filepath.Join(dir, key))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}}
	if caFile != "" {
		b, err := os.ReadFile(filepath.Join(dir, caFile))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(b)
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	up, err := echo.Start("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	_, port, _ := strings.Cut(up.Addr(), ":")
	return port
}

// curlStatus runs curl against url and returns "CODE BODY".
func curlStatus(t *testing.T, url string) string {
	t.Helper()
	out, err := exec.Command("curl", "-sS", "--max-time", "10", "-w", " %{http_code}", url).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("curl: %v: %s", err, out)
	}
	s := string(out)
	i := strings.LastIndexByte(s, ' ')
	return s[i+1:] + " " + s[:i]
}

// TestFlexGuide follows the Flex outbound TLS guide with its own YAML
// through the real binaries: the API instance and its https upstream
// first (TLS verified against the system roots, as Flex: the upstream's
// private CA is refused, never sent plain HTTP); the samples as printed,
// whose commented-out PEM lines are refused at their lines with the fix;
// the skipValidation sample with the gateway's key pair pasted in (a
// warning, and 200); then the mutual TLS sample with the CA and key pair
// pasted in (200, the upstream sees the gateway's certificate).
func TestFlexGuide(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	dir := t.TempDir()
	sh := exec.Command("bash", "-euo", "pipefail", "-c", flexGuideOpenSSL)
	sh.Dir = dir
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	port := mtlsUpstream(t, dir, "upstream.crt", "upstream.key", "ca.crt")
	w := newWorldEnv(t, nil, 1)
	px := w.proxies[0]

	// 1. The API instance. Its https upstream is TLS from the start.
	api := w.write(t, "api.yaml", fmt.Sprintf(flexGuideInstance, port))
	out, errOut, code := w.ctl(t, "apply", "-f", api)
	if code != 0 {
		t.Fatalf("apply api.yaml: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"note: " + api + ":1:1: Flex ApiInstance ingress-test-outbound → Service ingress-test-outbound-upstream at https://localhost:" + port +
			" (TLS verified against the system's trusted roots, as Flex does, until a tls-outbound PolicyBinding targets it), Route ingress-test-outbound-0 (/).",
		"0.0.0.0:8081 is not opened", "start keyway-proxy with --listen 0.0.0.0:8081",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("apply api.yaml does not note %q:\n%s", want, errOut)
		}
	}
	eventually(t, "the upstream's private CA is refused against the system roots", func() (bool, string) {
		got := curlStatus(t, px.URL+"/anything")
		return strings.HasPrefix(got, "502 ") && strings.Contains(got, `"unknown_authority"`) && strings.Contains(got, "system trusted roots"), got
	})

	// 2. The samples as printed: their PEM lines are commented out.
	for _, tc := range []struct {
		name, sample string
		want         []string
	}{
		{"tls-outbound.yaml", flexGuideTLS, []string{":15:9: spec.config.certificate.key: the PEM block is commented out with '#'", ":19:9: spec.config.certificate.crt: the PEM block is commented out with '#'"}},
		{"mtls-outbound.yaml", flexGuideMTLS, []string{":14:7: spec.config.trustedCA: the PEM block is commented out with '#'", ":19:9: spec.config.certificate.key", ":23:9: spec.config.certificate.crt"}},
	} {
		f := w.write(t, tc.name, tc.sample)
		out, errOut, code := w.ctl(t, "apply", "-f", f)
		if code == 0 {
			t.Fatalf("apply of %s as printed succeeded:\n%s", tc.name, out)
		}
		for _, want := range append(tc.want, "remove the '#' (and the space after it) from the start of each line of the block", `in place of the placeholder "# insert …" line`) {
			if !strings.Contains(errOut, want) {
				t.Errorf("apply of %s as printed: no %q in:\n%s", tc.name, want, errOut)
			}
		}
	}

	// 3. The first sample with the gateway's key pair pasted in: the
	// upstream is not verified (a warning), the gateway presents its
	// certificate.
	tlsFile := w.write(t, "tls-outbound.yaml", pasteFlexPEM(t, flexGuideTLS, dir, "gateway.key", "gateway.crt"))
	out, errOut, code = w.ctl(t, "apply", "-f", tlsFile)
	if code != 0 {
		t.Fatalf("apply of the guide's tls-outbound sample: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "spec.config.skipValidation: skipValidation is true: upstream certificates will not be verified") {
		t.Errorf("no skipValidation warning:\n%s", errOut)
	}
	eventually(t, "the node reaches the upstream with the gateway's certificate", func() (bool, string) {
		got := curlStatus(t, px.URL+"/anything")
		return strings.HasPrefix(got, "200 ") && strings.Contains(got, `"clientSubject":"CN=flex-gateway"`), got
	})

	// 4. The mutual TLS sample, verifying the upstream with the CA. A
	// Service takes one tls-outbound binding: the first goes.
	if out, errOut, code := w.ctl(t, "delete", "policybinding", "tls-outbound"); code != 0 {
		t.Fatalf("delete: exit %d\n%s%s", code, out, errOut)
	}
	mtls := w.write(t, "mtls-outbound.yaml", pasteFlexPEM(t, flexGuideMTLS, dir, "ca.crt", "gateway.key", "gateway.crt"))
	out, errOut, code = w.ctl(t, "apply", "-f", mtls)
	if code != 0 {
		t.Fatalf("apply of the guide's mtls-outbound sample: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"note: " + mtls + ":1:1: Flex PolicyBinding mtls-outbound (tls-outbound) → PolicyBinding mtls-outbound on Service ingress-test-outbound-upstream, as written",
		// minversion "1.1" with TLS 1.2 suites only.
		"TLS 1.1 cannot be negotiated",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("apply of the mtls-outbound sample: no %q in:\n%s", want, errOut)
		}
	}
	if !strings.Contains(out, "policybinding/mtls-outbound created") {
		t.Errorf("apply: %s", out)
	}
	eventually(t, "mutual TLS to the upstream, verified with the guide's CA", func() (bool, string) {
		got := curlStatus(t, px.URL+"/anything")
		return strings.HasPrefix(got, "200 ") && strings.Contains(got, `"clientSubject":"CN=flex-gateway"`) && strings.Contains(got, `"sni":"localhost"`), got
	})
	if out, errOut, code := w.ctl(t, "validate", "-f", mtls); code != 0 || !regexp.MustCompile(`probe localhost:\d+ \(SNI localhost\): ok, TLS 1\.3.*GET /: 200.*client certificate requested and sent`).MatchString(out) {
		t.Errorf("validate: exit %d\n%s%s", code, out, errOut)
	}
}

// TestFlexServiceSystemRoots: a Flex https:// Service with no tls-outbound
// binding is verified against the system's trusted roots: the proxy node
// (started with SSL_CERT_FILE naming a test CA, which Go's system pool reads
// on Linux) reaches the upstream that CA signed over TLS, and refuses the
// one another CA signed as unknown_authority.
func TestFlexServiceSystemRoots(t *testing.T) {
	dir := t.TempDir()
	sh := exec.Command("bash", "-euo", "pipefail", "-c", flexGuideOpenSSL+`
openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 365 -subj "/CN=Other CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
openssl req -newkey rsa:2048 -nodes -keyout other.key -out other.csr -subj "/CN=localhost" -addext subjectAltName=DNS:localhost
openssl x509 -req -in other.csr -CA other-ca.crt -CAkey other-ca.key -CAcreateserial -days 365 -copy_extensions copy -out other.crt
`)
	sh.Dir = dir
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	trusted := mtlsUpstream(t, dir, "upstream.crt", "upstream.key", "")
	stranger := mtlsUpstream(t, dir, "other.crt", "other.key", "")
	w := newWorldEnv(t, []string{"SSL_CERT_FILE=" + filepath.Join(dir, "ca.crt")}, 1)
	px := w.proxies[0]
	m := w.write(t, "services.yaml", fmt.Sprintf(`apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata:
  name: roots
spec:
  address: http://127.0.0.1:8081
  services:
    trusted:
      address: https://localhost:%s
      routes:
        - rules:
            - path: /trusted/.*
    stranger:
      address: https://localhost:%s
      routes:
        - rules:
            - path: /stranger/.*
`, trusted, stranger))
	if out, errOut, code := w.ctl(t, "apply", "-f", m); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	eventually(t, "the upstream of the CA in SSL_CERT_FILE is reached over TLS", func() (bool, string) {
		code, body := get(t, px.URL+"/trusted/x")
		return code == 200 && strings.Contains(string(body), `"sni":"localhost"`) && strings.Contains(string(body), `"tlsVersion":"TLS 1.3"`), fmt.Sprintf("%d %s", code, body)
	})
	code, body := get(t, px.URL+"/stranger/x")
	if code != 502 || !strings.Contains(string(body), `"unknown_authority"`) || !strings.Contains(string(body), "system trusted roots") {
		t.Errorf("another CA's upstream: %d %s, want 502 unknown_authority naming the system roots", code, body)
	}
	eventually(t, "the node logs the reason and the system roots", func() (bool, string) {
		return strings.Contains(px.Output(), "reason=unknown_authority") && strings.Contains(px.Output(), "system trusted roots"), ""
	})
}
