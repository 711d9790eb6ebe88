package materialtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/internal/material"
	"keyway.dev/internal/testca"
)

// Service is the real secrets service, the keyway-secrets binary, run as a
// process with its local-directory backend and publishing versions to the
// test's NATS server: what consumers' tests use when they need the real
// thing rather than [Fake].
type Service struct {
	// API is SecretsService on APIURL; InternalURL serves MaterialService
	// over mTLS with certificates from Internal.
	API         secretsv1connect.SecretsServiceClient
	APIURL      string
	InternalURL string
	Internal    *testca.CA
	args        []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	logged strings.Builder
}

var (
	binOnce sync.Once
	bin     string
	binErr  error
)

// Binary is the keyway-secrets binary: $KEYWAY_BIN/keyway-secrets (make
// test builds it), or built once per test binary from the workspace.
func Binary(tb testing.TB) string {
	tb.Helper()
	binOnce.Do(func() {
		if d := os.Getenv("KEYWAY_BIN"); d != "" {
			if p := filepath.Join(d, "keyway-secrets"); fileExists(p) {
				bin = p
				return
			}
		}
		dir, err := os.MkdirTemp("", "keyway-secrets-bin-")
		if err != nil {
			binErr = err
			return
		}
		bin = filepath.Join(dir, "keyway-secrets")
		if out, err := exec.Command("go", "build", "-o", bin, "keyway.dev/secrets/cmd/keyway-secrets").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("building keyway-secrets: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		tb.Fatal(binErr)
	}
	return bin
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// StartService starts keyway-secrets against natsURL and stops it when the
// test ends; its output is logged if the test failed.
func StartService(tb testing.TB, natsURL string) *Service {
	tb.Helper()
	dir := tb.TempDir()
	ca := testca.New(tb, "Keyway internal CA")
	server := ca.Server("127.0.0.1")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			tb.Fatal(err)
		}
		return p
	}
	s := &Service{Internal: ca}
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			s.mu.Lock()
			tb.Logf("--- keyway-secrets ---\n%s", s.logged.String())
			s.mu.Unlock()
		}
	})
	// The ports are free when chosen, and may be taken by another test's
	// process before keyway-secrets binds them: then new ones are chosen.
	for attempt := 1; ; attempt++ {
		api, internal := freeAddr(tb), freeAddr(tb)
		s.API = secretsv1connect.NewSecretsServiceClient(http.DefaultClient, "http://"+api)
		s.APIURL, s.InternalURL = "http://"+api, "https://"+internal
		s.args = []string{"--listen", api, "--internal-listen", internal,
			"--internal-cert", write("internal.crt", server.CertPEM), "--internal-key", write("internal.key", server.KeyPEM),
			"--internal-client-ca", write("ca.crt", ca.CertPEM()), "--nats", natsURL, "--backend", "local", "--dir", filepath.Join(dir, "store"),
			// The API without authentication: these tests are about material;
			// tests/e2e runs the services with access control.
			"--insecure-no-auth"}
		if s.start(tb) {
			return s
		}
		s.mu.Lock()
		taken := strings.Contains(s.logged.String(), "address already in use")
		s.mu.Unlock()
		if !taken || attempt == 3 {
			tb.Fatal("materialtest: keyway-secrets exited before serving")
		}
		tb.Logf("materialtest: a port was taken before keyway-secrets bound it; choosing others (attempt %d)", attempt+1)
	}
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Start runs the process (again, after Stop: same ports and directory) and
// waits until it serves.
func (s *Service) Start(tb testing.TB) {
	tb.Helper()
	if !s.start(tb) {
		tb.Fatal("materialtest: keyway-secrets exited before serving")
	}
}

// start runs the process and waits until it serves; it reports false when
// the process exited first.
func (s *Service) start(tb testing.TB) bool {
	tb.Helper()
	cmd := exec.Command(Binary(tb), s.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			s.mu.Lock()
			s.logged.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			if strings.Contains(sc.Text(), "secrets service serving") {
				once.Do(func() { close(ready) })
			}
		}
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	select {
	case <-ready:
		return true
	case <-done:
		return false
	case <-time.After(60 * time.Second):
		tb.Fatal("materialtest: keyway-secrets not ready after 60s")
	}
	return false
}

// Stop ends the process: SIGTERM, then SIGKILL after 10s.
func (s *Service) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Client is a MaterialService client with a certificate from the internal
// CA.
func (s *Service) Client(tb testing.TB, name string) *material.Client {
	tb.Helper()
	kp := s.Internal.Client(name)
	return material.NewWithTLS(s.InternalURL, &tls.Config{Certificates: []tls.Certificate{kp.TLS}, RootCAs: s.Internal.Pool(), MinVersion: tls.VersionTLS13}, 0)
}

// ClientFiles writes a client certificate from the internal CA, its key and
// the CA to dir, for a process's --secrets-cert, --secrets-key, --secrets-ca.
func (s *Service) ClientFiles(tb testing.TB, dir, name string) material.Config {
	tb.Helper()
	kp := s.Internal.Client(name)
	write := func(file string, data []byte) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			tb.Fatal(err)
		}
		return p
	}
	return material.Config{URL: s.InternalURL, CertFile: write(name+".crt", kp.CertPEM), KeyFile: write(name+".key", kp.KeyPEM), CAFile: write("internal-ca.crt", s.Internal.CertPEM())}
}

// PutAlias stores kp as the next version of keystore/alias through the API.
func (s *Service) PutAlias(tb testing.TB, keystore, alias string, kp *testca.KeyPair, usage secretsv1.Usage) {
	tb.Helper()
	if _, err := s.API.PutAlias(context.Background(), connect.NewRequest(&secretsv1.PutAliasRequest{
		Keystore: keystore, Alias: alias, CertificatePem: string(kp.CertPEM), PrivateKeyPem: string(kp.KeyPEM), Usage: usage,
	})); err != nil {
		tb.Fatalf("materialtest: PutAlias %s/%s: %v", keystore, alias, err)
	}
}

// PutTruststore stores ca's certificate as the next version of a truststore.
func (s *Service) PutTruststore(tb testing.TB, name string, ca *testca.CA) {
	tb.Helper()
	if _, err := s.API.PutTruststore(context.Background(), connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: name, CertificatesPem: string(ca.CertPEM())})); err != nil {
		tb.Fatalf("materialtest: PutTruststore %s: %v", name, err)
	}
}
