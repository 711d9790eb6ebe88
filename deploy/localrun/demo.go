package localrun

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Demo is an operator's first request through the run: a server and a
// client key pair and two CA bundles stored in the secrets service (Vault
// KV), an upstream that asks for a client certificate, and a Service,
// Route, Listener and tls-outbound PolicyBinding applied with keywayctl.
// A request to https://api.keyway.test:PORT/hello with the client's
// certificate reaches the upstream, which answers with the common name of
// the certificate the proxy presented to it.
type Demo struct {
	// Files by name: gw.crt/.key (the gateway's client certificate to the
	// upstream), api.crt/.key (the Listener's), client.crt/.key (a caller's),
	// api-ca.crt (the CA of api.crt, for --cacert), upstream-ca.crt,
	// clients-ca.crt.
	Files map[string]string
	// ListenerAddr is the Listener's address, which every proxy node binds
	// (SO_REUSEPORT).
	ListenerAddr string
	// Hostname is the Listener's SNI name.
	Hostname string

	apiCA  *x509.Certificate
	server *http.Server
}

// Hello is what the upstream answers to the demo's request.
const Hello = "upstream saw client certificate CN=gw"

// StartDemo sets the demo up in dir with bin/keywayctl and the operator's
// context. The upstream runs in this process until Close.
func (c *Cluster) StartDemo(ctx context.Context, dir string) (*Demo, error) {
	d := &Demo{Files: map[string]string{}, Hostname: "api.keyway.test"}
	cas := map[string]*ca{}
	for _, name := range []string{"upstream", "clients", "api"} {
		made, err := newCA("demo " + name + " CA")
		if err != nil {
			return nil, err
		}
		cas[name] = made
	}
	d.apiCA = cas["api"].cert
	write := func(name string, data []byte) error {
		d.Files[name] = filepath.Join(dir, name)
		return os.WriteFile(d.Files[name], data, 0o600)
	}
	for _, kp := range []struct {
		name, ca string
		l        leaf
	}{
		{"gw", "upstream", leaf{cn: "gw", client: true}},
		{"upstream", "upstream", leaf{cn: "upstream", dns: []string{"upstream"}, server: true}},
		{"api", "api", leaf{cn: d.Hostname, dns: []string{d.Hostname}, server: true}},
		{"client", "clients", leaf{cn: "client", client: true}},
	} {
		pair, err := cas[kp.ca].issue(kp.l)
		if err != nil {
			return nil, err
		}
		if err := write(kp.name+".crt", pair.cert); err != nil {
			return nil, err
		}
		if err := write(kp.name+".key", pair.key); err != nil {
			return nil, err
		}
	}
	for name, c := range cas {
		if err := write(name+"-ca.crt", c.pem); err != nil {
			return nil, err
		}
	}

	pool := x509.NewCertPool()
	pool.AddCert(cas["upstream"].cert)
	cert, err := tls.LoadX509KeyPair(d.Files["upstream.crt"], d.Files["upstream.key"])
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}
	d.server = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "upstream saw client certificate CN=%s", r.TLS.PeerCertificates[0].Subject.CommonName) //nolint:gosec // plain text, not HTML
	})}
	go func() { _ = d.server.Serve(ln) }()
	if d.ListenerAddr, err = freePort(); err != nil {
		d.Close()
		return nil, err
	}

	f := d.Files
	for _, args := range [][]string{
		{"secrets", "put", "--keystore", "edge", "--alias", "gw", "--cert", f["gw.crt"], "--key", f["gw.key"], "--usage", "client"},
		{"secrets", "put", "--keystore", "edge", "--alias", "api", "--cert", f["api.crt"], "--key", f["api.key"], "--usage", "server"},
		{"secrets", "put", "--truststore", "upstream-cas", "--cert", f["upstream-ca.crt"]},
		{"secrets", "put", "--truststore", "clients", "--cert", f["clients-ca.crt"]},
	} {
		if _, err := c.Keywayctl(ctx, args...); err != nil {
			d.Close()
			return nil, err
		}
	}
	resources := fmt.Sprintf(demoResources, ln.Addr(), d.ListenerAddr, d.Hostname)
	f["hello.yaml"] = filepath.Join(dir, "hello.yaml")
	if err := os.WriteFile(f["hello.yaml"], []byte(resources), 0o600); err != nil {
		d.Close()
		return nil, err
	}
	if _, err := c.Keywayctl(ctx, "apply", "-f", f["hello.yaml"], "--wait", "--timeout", "30s"); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

const demoResources = `apiVersion: keyway.dev/v1alpha1
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
  address: %s
  hosts:
    - hostnames: [%s]
      default: true
      certificate: {keystore: edge, alias: api}
      clientAuth: require-and-verify
      clientTruststore: clients
`

// Close stops the upstream.
func (d *Demo) Close() { d.server.Close() }

// URL is the demo request's URL.
func (d *Demo) URL() string {
	_, port, _ := net.SplitHostPort(d.ListenerAddr)
	return "https://" + d.Hostname + ":" + port + "/hello"
}

// Curl is the curl command that sends the demo request.
func (d *Demo) Curl() string {
	_, port, _ := net.SplitHostPort(d.ListenerAddr)
	return fmt.Sprintf("curl --cacert %s --cert %s --key %s --resolve %s:%s:127.0.0.1 %s",
		d.Files["api-ca.crt"], d.Files["client.crt"], d.Files["client.key"], d.Hostname, port, d.URL())
}

// Client is an HTTP client that does what Curl does (withCert) or the same
// without a client certificate.
func (d *Demo) Client(withCert bool) (*http.Client, error) {
	pool := x509.NewCertPool()
	pool.AddCert(d.apiCA)
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if withCert {
		cert, err := tls.LoadX509KeyPair(d.Files["client.crt"], d.Files["client.key"])
		if err != nil {
			return nil, err
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	dial := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: conf,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dial.DialContext(ctx, network, d.ListenerAddr) // curl's --resolve
		},
	}}, nil
}

// Keywayctl runs Options.Bin/keywayctl with the operator's context and
// returns its output; an exit status other than 0 is an error holding the
// output.
func (c *Cluster) Keywayctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.opts.Bin, "keywayctl"), args...) //nolint:gosec // the launcher's own keywayctl with its caller's arguments
	cmd.Env = []string{"KEYWAYCONFIG=" + c.operator.Config, "HOME=" + filepath.Dir(c.operator.Config)}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("keywayctl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
