package node_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
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

	"keyway.dev/common/material"
	"keyway.dev/common/testca"
	"keyway.dev/proxy/internal/secrets"
)

var (
	secretsBinOnce sync.Once
	secretsBin     string
	secretsBinErr  error
)

// keywaySecrets is the real keyway-secrets binary: $KEYWAY_BIN/keyway-secrets
// (make test builds it), or built once for this test binary.
func keywaySecrets(tb testing.TB) string {
	tb.Helper()
	secretsBinOnce.Do(func() {
		if d := os.Getenv("KEYWAY_BIN"); d != "" {
			if p := filepath.Join(d, "keyway-secrets"); fileExists(p) {
				secretsBin = p
				return
			}
		}
		dir, err := os.MkdirTemp("", "keyway-secrets-bin-")
		if err != nil {
			secretsBinErr = err
			return
		}
		secretsBin = filepath.Join(dir, "keyway-secrets")
		out, err := exec.Command("go", "build", "-o", secretsBin, "keyway.dev/secrets/cmd/keyway-secrets").CombinedOutput()
		if err != nil {
			secretsBinErr = fmt.Errorf("building keyway-secrets: %v\n%s", err, out)
		}
	})
	if secretsBinErr != nil {
		tb.Fatal(secretsBinErr)
	}
	return secretsBin
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// realSecrets is the real secrets service as a process, with the local
// directory backend, publishing versions to the test's NATS server. It can
// be stopped and started again on the same ports and directory.
type realSecrets struct {
	api      secretsv1connect.SecretsServiceClient
	internal string
	ca       *testca.CA
	args     []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	logged strings.Builder
}

func startRealSecrets(t *testing.T, natsURL string) *realSecrets {
	t.Helper()
	dir := t.TempDir()
	ca := testca.New(t, "Keyway internal CA")
	server := ca.Server("127.0.0.1")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	api, internal := freeAddr(t), freeAddr(t)
	r := &realSecrets{
		api: secretsv1connect.NewSecretsServiceClient(client, "http://"+api), internal: "https://" + internal, ca: ca,
		args: []string{"--listen", api, "--internal-listen", internal,
			"--internal-cert", write("internal.crt", server.CertPEM), "--internal-key", write("internal.key", server.KeyPEM),
			"--internal-client-ca", write("ca.crt", ca.CertPEM()), "--nats", natsURL, "--backend", "local", "--dir", filepath.Join(dir, "store")},
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			r.mu.Lock()
			t.Logf("--- keyway-secrets ---\n%s", r.logged.String())
			r.mu.Unlock()
		}
	})
	r.start(t)
	return r
}

// start runs the process and waits until it serves.
func (r *realSecrets) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(keywaySecrets(t), r.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			r.mu.Lock()
			r.logged.WriteString(sc.Text() + "\n")
			r.mu.Unlock()
			if strings.Contains(sc.Text(), "secrets service serving") {
				once.Do(func() { close(ready) })
			}
		}
		_ = cmd.Wait()
		close(done)
	}()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	select {
	case <-ready:
	case <-done:
		t.Fatal("keyway-secrets exited before serving")
	case <-time.After(60 * time.Second):
		t.Fatal("keyway-secrets not ready after 60s")
	}
}

// stop ends the process (SIGTERM, then SIGKILL after 10s).
func (r *realSecrets) stop() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
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

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// source is a node's Source over the real service's internal port, with a
// client certificate from its internal CA.
func (r *realSecrets) source(t *testing.T) *secrets.Source {
	kp := r.ca.Client("proxy-node")
	c := material.NewWithTLS(r.internal, &tls.Config{Certificates: []tls.Certificate{kp.TLS}, RootCAs: r.ca.Pool(), MinVersion: tls.VersionTLS13}, 0)
	return secrets.New(c, secrets.Options{RetryInterval: 100 * time.Millisecond})
}

func (r *realSecrets) putAlias(t *testing.T, keystore, alias string, kp *testca.KeyPair, usage secretsv1.Usage) {
	t.Helper()
	if _, err := r.api.PutAlias(context.Background(), connect.NewRequest(&secretsv1.PutAliasRequest{
		Keystore: keystore, Alias: alias, CertificatePem: string(kp.CertPEM), PrivateKeyPem: string(kp.KeyPEM), Usage: usage,
	})); err != nil {
		t.Fatalf("PutAlias %s/%s: %v", keystore, alias, err)
	}
}

func (r *realSecrets) putTruststore(t *testing.T, name string, ca *testca.CA) {
	t.Helper()
	if _, err := r.api.PutTruststore(context.Background(), connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: name, CertificatesPem: string(ca.CertPEM())})); err != nil {
		t.Fatalf("PutTruststore %s: %v", name, err)
	}
}
