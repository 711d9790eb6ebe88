package localrun

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tools finds Keyway's binaries ($KEYWAY_BIN, else the repository's bin/,
// as `make build` leaves them) and the pinned NATS and Vault binaries
// ($KEYWAY_NATS_SERVER, $KEYWAY_VAULT, else scripts/tool.sh).
func tools(t *testing.T) (bin string, images map[string]string) {
	t.Helper()
	bin = os.Getenv("KEYWAY_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin")
	}
	for _, b := range []string{"keyway-policy", "keyway-secrets", "keyway-proxy", "keywayctl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("%v: run `make build` (or set KEYWAY_BIN)", err)
		}
	}
	tool := func(env, name string) string {
		if p := os.Getenv(env); p != "" {
			return p
		}
		out, err := exec.Command("../../scripts/tool.sh", name).Output()
		if err != nil {
			t.Fatalf("%s is not set and scripts/tool.sh %s failed: %v", env, name, err)
		}
		return strings.TrimSpace(string(out))
	}
	return bin, map[string]string{"nats": tool("KEYWAY_NATS_SERVER", "nats-server"), "hashicorp/vault": tool("KEYWAY_VAULT", "vault")}
}

// TestManifestsServeThroughMTLS runs deploy/kubernetes as local processes,
// each with its container's arguments and environment from the rendered
// manifests (package doc), then does what an operator does first: stores a
// server and a client key pair and two CA bundles in the secrets service
// (Vault KV behind AppRole), applies a Service, Route, Listener and
// tls-outbound binding with keywayctl, and sends a request with a client
// certificate through a proxy node to an upstream that asks for one. A
// manifest that lacks what its service needs fails here.
//
// NATS runs as the manifest has it, three servers: the configuration
// bucket has 3 replicas and JetStream's cluster needs its quorum. Vault,
// the secrets, policy and proxy workloads are scaled to one replica (make
// prod-local runs them all).
func TestManifestsServeThroughMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("full tier: runs NATS, Vault and Keyway's services as processes")
	}
	bin, images := tools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := Start(ctx, Options{
		Manifests: "../kubernetes",
		WorkDir:   t.TempDir(),
		Bin:       bin,
		Images:    images,
		Replicas:  map[string]int{"vault": 1, "keyway-secrets": 1, "keyway-policy": 1, "keyway-proxy": 1},
		Log:       testLog{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Logf("every pod ready in %s", time.Since(start).Round(time.Millisecond))

	s := newScenario(t, c)
	s.store(t, bin)
	s.apply(t, bin)

	// What curl --cert client.crt --key client.key --cacert api-ca.crt
	// https://api.keyway.test:PORT/hello does.
	resp, err := s.client(true).Get("https://api.keyway.test:" + s.listenerPort + "/hello")
	if err != nil {
		t.Fatalf("a request with a client certificate through the proxy: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "upstream saw client certificate CN=gw" {
		t.Fatalf("through the proxy: %d %q, want 200 and the upstream's answer to the gateway's client certificate", resp.StatusCode, body)
	}
	// Without a client certificate the Listener refuses the handshake.
	if resp, err := s.client(false).Get("https://api.keyway.test:" + s.listenerPort + "/hello"); err == nil {
		resp.Body.Close()
		t.Fatalf("a request without a client certificate: %d, want a refused handshake", resp.StatusCode)
	}
	t.Logf("up and serving through mTLS in %s", time.Since(start).Round(time.Millisecond))
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// scenario is the operator's first request: its key pairs and CAs, an
// upstream that asks for a client certificate, and a Listener's port.
type scenario struct {
	c                    *Cluster
	dir                  string
	upstreamCA, clientCA *ca
	apiCA                *ca
	files                map[string]string
	upstream             string
	listenerPort         string
}

func newScenario(t *testing.T, c *Cluster) *scenario {
	t.Helper()
	s := &scenario{c: c, dir: t.TempDir(), files: map[string]string{}}
	var err error
	for _, to := range []struct {
		ca   **ca
		name string
	}{{&s.upstreamCA, "upstream CA"}, {&s.clientCA, "clients CA"}, {&s.apiCA, "api CA"}} {
		if *to.ca, err = newCA(to.name); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, data []byte) {
		s.files[name] = filepath.Join(s.dir, name)
		if err := os.WriteFile(s.files[name], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, kp := range []struct {
		name string
		ca   *ca
		l    leaf
	}{
		{"gw", s.upstreamCA, leaf{cn: "gw", client: true}},                                            // the gateway's client certificate to the upstream
		{"upstream", s.upstreamCA, leaf{cn: "upstream", dns: []string{"upstream"}, server: true}},     // the upstream's server certificate
		{"api", s.apiCA, leaf{cn: "api.keyway.test", dns: []string{"api.keyway.test"}, server: true}}, // the Listener's
		{"client", s.clientCA, leaf{cn: "client", client: true}},                                      // the caller's
	} {
		pair, err := kp.ca.issue(kp.l)
		if err != nil {
			t.Fatal(err)
		}
		write(kp.name+".crt", pair.cert)
		write(kp.name+".key", pair.key)
	}
	write("upstream-ca.crt", s.upstreamCA.pem)
	write("clients-ca.crt", s.clientCA.pem)

	// The upstream: TLS, asks for a client certificate of the upstream CA.
	pool := x509.NewCertPool()
	pool.AddCert(s.upstreamCA.cert)
	cert, err := tls.LoadX509KeyPair(s.files["upstream.crt"], s.files["upstream.key"])
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw client certificate CN=%s", r.TLS.PeerCertificates[0].Subject.CommonName)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	s.upstream = ln.Addr().String()

	free, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	_, s.listenerPort, _ = net.SplitHostPort(free)
	return s
}

// keywayctl runs bin/keywayctl with the run's operator context.
func (s *scenario) keywayctl(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "keywayctl"), args...)
	cmd.Env = []string{"KEYWAYCONFIG=" + s.c.Operator().Config, "HOME=" + s.dir}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("keywayctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// store puts the key pairs and CAs in the secrets service.
func (s *scenario) store(t *testing.T, bin string) {
	t.Helper()
	f := s.files
	s.keywayctl(t, bin, "secrets", "put", "--keystore", "edge", "--alias", "gw", "--cert", f["gw.crt"], "--key", f["gw.key"], "--usage", "client")
	s.keywayctl(t, bin, "secrets", "put", "--keystore", "edge", "--alias", "api", "--cert", f["api.crt"], "--key", f["api.key"], "--usage", "server")
	s.keywayctl(t, bin, "secrets", "put", "--truststore", "upstream-cas", "--cert", f["upstream-ca.crt"])
	s.keywayctl(t, bin, "secrets", "put", "--truststore", "clients", "--cert", f["clients-ca.crt"])
}

// apply applies the resources and waits until every live node serves them.
func (s *scenario) apply(t *testing.T, bin string) {
	t.Helper()
	resources := fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: Service
metadata: {name: hello}
spec:
  address: %s
---
apiVersion: keyway.dev/v1alpha1
kind: PolicyBinding
metadata: {name: hello-mtls}
spec:
  targetRef: {kind: Service, name: hello}
  policyRef: {name: tls-outbound}
  config:
    skipValidation: false
    trustedCA: {truststore: upstream-cas}
    certificate: {keystore: edge, alias: gw}
    sni: upstream
---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata: {name: hello}
spec:
  path: /hello
  service: hello
---
apiVersion: keyway.dev/v1alpha1
kind: Listener
metadata: {name: public}
spec:
  address: 127.0.0.1:%s
  hosts:
    - hostnames: [api.keyway.test]
      default: true
      certificate: {keystore: edge, alias: api}
      clientAuth: require-and-verify
      clientTruststore: clients
`, s.upstream, s.listenerPort)
	path := filepath.Join(s.dir, "hello.yaml")
	if err := os.WriteFile(path, []byte(resources), 0o600); err != nil {
		t.Fatal(err)
	}
	s.keywayctl(t, bin, "apply", "-f", path, "--wait", "--timeout", "30s")
}

// client is curl with --cacert api-ca.crt, and with --cert and --key when
// withCert.
func (s *scenario) client(withCert bool) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(s.apiCA.cert)
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(s.files["client.crt"], s.files["client.key"])
		if err != nil {
			panic(err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	dial := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: conf,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, _ := net.SplitHostPort(addr) // --resolve api.keyway.test:PORT:127.0.0.1
			return dial.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
		},
	}}
}
