package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/internal/material"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/secrets/internal/app"
)

// replace writes data to path as a Secret volume or a careful operator
// does: beside it, then renamed over it.
func replace(t *testing.T, path string, data ...[]byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, bytes.Join(data, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// The internal CA is replaced under load, with the overlap a CA rotation
// takes: both bundles (the secrets service's client CAs, the nodes' CA)
// gain the new CA, the internal server certificate and the node's client
// certificate are reissued by it, and the old CA leaves both bundles. Each
// step is taken from the files, with no restart, while clients fetch
// material on new connections and on a kept one: no request fails.
func TestInternalCARotatesUnderLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldCA, newCA := testca.New(t, "internal CA 1"), testca.New(t, "internal CA 2")
	server := func(ca *testca.CA) *testca.KeyPair {
		return ca.Issue(testca.Options{DNSNames: []string{"keyway-secrets"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	}
	files := map[string]string{}
	for _, name := range []string{"secrets.crt", "secrets.key", "clients-ca.crt", "node.crt", "node.key", "node-ca.crt"} {
		files[name] = filepath.Join(dir, name)
	}
	srv, node := server(oldCA), oldCA.Client("proxy-node-1")
	replace(t, files["secrets.crt"], srv.CertPEM)
	replace(t, files["secrets.key"], srv.KeyPEM)
	replace(t, files["clients-ca.crt"], oldCA.CertPEM())
	replace(t, files["node.crt"], node.CertPEM)
	replace(t, files["node.key"], node.KeyPEM)
	replace(t, files["node-ca.crt"], oldCA.CertPEM())

	s := start(t, app.Config{Backend: "local", Dir: t.TempDir(),
		InternalCert: files["secrets.crt"], InternalKey: files["secrets.key"], InternalClientCA: files["clients-ca.crt"]})
	gw := testca.New(t, "edge CA").Client("gw")
	if _, err := s.API.PutAlias(context.Background(), connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM)})); err != nil {
		t.Fatal(err)
	}

	// The node's side, from its files: a client that opens a connection per
	// request, and the client a node uses, which keeps its connection.
	nodeFiles := material.Files{Cert: files["node.crt"], Key: files["node.key"], CA: files["node-ca.crt"]}
	fresh, err := material.HTTPClientFromFiles(nodeFiles)
	if err != nil {
		t.Fatal(err)
	}
	fresh.Transport.(*http.Transport).DisableKeepAlives = true
	freshAPI := secretsv1connect.NewMaterialServiceClient(fresh, s.Internal)
	kept, err := material.New(material.Config{URL: s.Internal, CertFile: nodeFiles.Cert, KeyFile: nodeFiles.Key, CAFile: nodeFiles.CA})
	if err != nil {
		t.Fatal(err)
	}

	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	deadline := time.Now().Add(90 * time.Second)
	load := func(fetch func() error) {
		defer wg.Done()
		for i := 0; i < 200_000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := fetch(); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, &err)
				continue
			}
			ok.Add(1)
		}
	}
	ctx := context.Background()
	for range 3 {
		wg.Add(1)
		go load(func() error {
			_, err := freshAPI.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
			return err
		})
	}
	wg.Add(1)
	go load(func() error {
		_, err := kept.Alias(ctx, secretref.Ref{Keystore: "edge", Alias: "gw"})
		return err
	})

	// Probes say when each side took a step. The service's: a client with
	// a certificate of one CA, trusting one CA, on a new connection.
	serviceAccepts := func(client *testca.KeyPair, trusts *testca.CA) error {
		c := material.NewServiceClient(s.Internal, &tls.Config{RootCAs: trusts.Pool(), ServerName: "keyway-secrets", Certificates: []tls.Certificate{client.TLS}})
		_, err := c.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
		return err
	}
	// The node's: servers of the test that the node's fresh client calls.
	probe := func(cert *testca.KeyPair, clientCA *testca.CA) string {
		p := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		p.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLS}}
		p.Config.ErrorLog = log.New(io.Discard, "", 0) // the refusals probes are for
		if clientCA != nil {
			p.TLS.ClientAuth, p.TLS.ClientCAs = tls.RequireAndVerifyClientCert, clientCA.Pool()
		}
		p.StartTLS()
		t.Cleanup(p.Close)
		return p.URL
	}
	nodeReaches := func(url string) error {
		resp, err := fresh.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	step := func(what string, done func() error) {
		t.Helper()
		if err := testwait.Poll(30*time.Second, done); err != nil {
			t.Fatalf("%s: not taken within 30s: %v", what, err)
		}
		t.Logf("%s: %d requests served so far, %d failed", what, ok.Load(), failed.Load())
	}
	waitLoad := func(n int64) {
		testwait.Until(t, 30*time.Second, "requests under load", func() bool { return ok.Load() >= n })
	}
	waitLoad(20)

	// 1. Both bundles trust both CAs.
	replace(t, files["clients-ca.crt"], oldCA.CertPEM(), newCA.CertPEM())
	replace(t, files["node-ca.crt"], oldCA.CertPEM(), newCA.CertPEM())
	newCAServer := probe(server(newCA), nil)
	step("the service accepts clients of the new CA", func() error { return serviceAccepts(newCA.Client("probe"), oldCA) })
	step("the node trusts servers of the new CA", func() error { return nodeReaches(newCAServer) })

	// 2. The internal server certificate is reissued by the new CA.
	srv2 := server(newCA)
	replace(t, files["secrets.key"], srv2.KeyPEM)
	replace(t, files["secrets.crt"], srv2.CertPEM)
	step("the service serves the new certificate", func() error { return serviceAccepts(newCA.Client("probe"), newCA) })

	// 3. The node's client certificate is reissued by the new CA.
	node2 := newCA.Client("proxy-node-1")
	replace(t, files["node.key"], node2.KeyPEM)
	replace(t, files["node.crt"], node2.CertPEM)
	newOnly := probe(server(newCA), newCA)
	step("the node presents the new certificate", func() error { return nodeReaches(newOnly) })

	// 4. The old CA leaves both bundles.
	replace(t, files["clients-ca.crt"], newCA.CertPEM())
	replace(t, files["node-ca.crt"], newCA.CertPEM())
	oldCAServer := probe(server(oldCA), nil)
	step("the service refuses clients of the old CA", func() error {
		if serviceAccepts(oldCA.Client("probe"), newCA) == nil {
			return errors.New("a client certificate of the old CA is still accepted")
		}
		return nil
	})
	step("the node refuses servers of the old CA", func() error {
		if nodeReaches(oldCAServer) == nil {
			return fmt.Errorf("a server of the old CA at %s is still trusted", oldCAServer)
		}
		return nil
	})
	before := ok.Load()
	waitLoad(before + 20)

	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed during the rotation; the first: %v", n, n+ok.Load(), *firstErr.Load())
	}
	t.Logf("%d requests, %d failed, through the CA rotation", ok.Load(), failed.Load())
}
