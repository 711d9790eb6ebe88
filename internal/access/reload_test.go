package access_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keyway.dev/internal/access"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
)

// The policy API, the secrets API and a proxy node's admin port are each
// served by an access.Server (their --tls-cert, --tls-key and --client-ca
// are these flags): for each API's table, a caller whose certificate comes
// from a new operator CA is refused while --client-ca holds the old CA
// only, and admitted once the file holds both, with no restart and no
// SIGHUP; callers from the old CA, on new connections and on a kept one,
// see no failure meanwhile; once the old CA leaves the file, a new
// connection from the old CA is refused. A server certificate written
// over --tls-cert and --tls-key is served at the next handshake, as the
// internal ports' are.
func TestClientCAAndServerCertificateReloadFromFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		service string
		table   access.Table
	}{
		{"policy API", access.PolicyAPI()},
		{"secrets API", access.SecretsAPI()},
		{"proxy admin port", access.NodeAdmin(false)},
	} {
		t.Run(tc.service, func(t *testing.T) {
			t.Parallel()
			rotateCallersCA(t, tc.table)
		})
	}
}

func rotateCallersCA(t *testing.T, table access.Table) {
	dir := t.TempDir()
	serverCA, oldCA, newCA := testca.New(t, "server CA"), testca.New(t, "operator CA 2026"), testca.New(t, "operator CA 2027")
	write := func(name string, data ...[]byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		// As an operator or a Secret volume replaces it: whole, at once.
		tmp := p + ".new"
		if err := os.WriteFile(tmp, bytes.Join(data, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	server := serverCA.Server("localhost")
	opts := access.Options{
		CertFile: write("api.crt", server.CertPEM), KeyFile: write("api.key", server.KeyPEM),
		ClientCAFile: write("client-ca.crt", oldCA.CertPEM()),
		PolicyFile:   write("policy.yaml", []byte(policyDoc(""))),
	}
	srv, err := access.NewServer(opts, "127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+access.MetricsPath, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics\n") })
	hs := &http.Server{Handler: srv.Handler(table, mux), Protocols: srv.Protocols()}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	metricsURL := "https://" + ln.Addr().String() + access.MetricsPath

	viewer := func(ca *testca.CA) *testca.KeyPair {
		u, _ := url.Parse("spiffe://test/viewer")
		return ca.Issue(testca.Options{CommonName: "viewer", URIs: []*url.URL{u}})
	}
	// client presents cert; keep false opens a connection per request.
	var served atomic.Pointer[tls.ConnectionState]
	client := func(cert *testca.KeyPair, keep bool) *http.Client {
		cfg := &tls.Config{RootCAs: serverCA.Pool(), Certificates: []tls.Certificate{cert.TLS},
			VerifyConnection: func(cs tls.ConnectionState) error { served.Store(&cs); return nil }}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, DisableKeepAlives: !keep}, Timeout: 10 * time.Second}
	}
	get := func(c *http.Client) error {
		resp, err := c.Get(metricsURL)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}

	oldViewer, newViewer := viewer(oldCA), viewer(newCA)
	if err := get(client(oldViewer, false)); err != nil {
		t.Fatalf("a viewer from the CA in --client-ca: %v", err)
	}
	if err := get(client(newViewer, false)); err == nil {
		t.Fatal("a viewer from a CA not in --client-ca was admitted")
	}

	// Callers from the old CA, one connection per request and one kept
	// connection, while the bundle changes.
	var ok, failed atomic.Int64
	var lastErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, keep := range []bool{false, false, true} {
		wg.Go(func() {
			c := client(oldViewer, keep)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := get(c); err != nil {
					failed.Add(1)
					lastErr.Store(&err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	write("client-ca.crt", oldCA.CertPEM(), newCA.CertPEM())
	testwait.Eventually(t, 10*time.Second, func() error { return get(client(newViewer, false)) })
	testwait.Until(t, 10*time.Second, "requests after the new CA was admitted", func() bool { return ok.Load() > 50 })
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests from the old CA's caller failed while the bundle gained the new CA; last: %v", n, n+ok.Load(), *lastErr.Load())
	}
	t.Logf("%d requests, 0 failed, while --client-ca gained the new CA", ok.Load())
	if got := len(srv.ClientCAs()); got != 2 {
		t.Errorf("ClientCAs holds %d certificates, want 2", got)
	}

	// The old CA leaves: a new connection from it is refused, the new
	// CA's caller stays admitted.
	write("client-ca.crt", newCA.CertPEM())
	testwait.Eventually(t, 10*time.Second, func() error {
		if get(client(oldViewer, false)) == nil {
			return errors.New("the old CA's caller is still admitted")
		}
		return nil
	})
	if err := get(client(newViewer, false)); err != nil {
		t.Fatalf("the new CA's caller after the old CA left: %v", err)
	}

	// The server certificate: renewed in its files, served without SIGHUP.
	renewed := serverCA.Server("localhost")
	write("api.crt", renewed.CertPEM)
	write("api.key", renewed.KeyPEM)
	testwait.Eventually(t, 10*time.Second, func() error {
		if err := get(client(newViewer, false)); err != nil {
			return err
		}
		if cs := served.Load(); !cs.PeerCertificates[0].Equal(renewed.Cert) {
			return errors.New("the old server certificate is still served")
		}
		return nil
	})
	if !srv.Certificate().Equal(renewed.Cert) {
		t.Error("Certificate() (the api-server expiry metric and events) does not name the renewed certificate")
	}
}

// SIGHUP's reload (Server.Reload) takes the files at once, and a bundle
// that does not parse is refused with the flag named while the CAs in
// force stay.
func TestReloadTakesClientCAAtOnceAndKeepsTheLastGood(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	serverCA, oldCA, newCA := testca.New(t, "server CA"), testca.New(t, "operator CA 2026"), testca.New(t, "operator CA 2027")
	server := serverCA.Server("localhost")
	write := func(name string, data ...[]byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Join(data, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srv, err := access.NewServer(access.Options{
		CertFile: write("api.crt", server.CertPEM), KeyFile: write("api.key", server.KeyPEM),
		ClientCAFile: write("ca.crt", oldCA.CertPEM()), PolicyFile: write("policy.yaml", []byte(policyDoc(""))),
	}, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.crt", oldCA.CertPEM(), newCA.CertPEM())
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.ClientCAs()); n != 2 {
		t.Fatalf("after Reload, %d client CAs, want 2", n)
	}
	write("ca.crt", []byte("not a certificate\n"))
	err = srv.Reload()
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("--client-ca")) {
		t.Fatalf("Reload of a bundle without a certificate: %v, want an error naming --client-ca", err)
	}
	if n := len(srv.ClientCAs()); n != 2 {
		t.Fatalf("after a refused reload, %d client CAs, want the 2 in force", n)
	}
}
