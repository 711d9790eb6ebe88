// Package vaulttest runs the real Vault binary for tests: in dev mode, an
// in-memory server on a free loopback port, unsealed, with KV v2 at
// secret/ and, when asked, a PKI mount with a root CA ([Start]); or as
// production runs it, servers on raft that join each other, initialised
// and unsealed by the test, with AppRole ([StartRaft]). The binary comes
// from $KEYWAY_VAULT (make test sets it) or scripts/tool.sh vault, which
// builds it into the cache the first time (about 20 minutes).
//
// The Vault binary belongs to the full tier (make test): under go test
// -short (make test-fast) every test that asks for it is skipped, so the
// unit tier never builds or starts Vault.
package vaulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

	"keyway.dev/internal/testwait"
)

// Token is the dev server's root token.
const Token = "keyway-test-root"

// Options shape the server.
type Options struct {
	// PKI mounts pki/ with an internal root CA.
	PKI bool
}

// Server is a running Vault dev server.
type Server struct {
	// Addr is http://127.0.0.1:PORT.
	Addr  string
	Token string

	tb     testing.TB
	bin    string
	listen string
	home   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

// SkipReason is the message a test skipped under -short carries.
const SkipReason = "needs the real Vault binary: runs in the full tier (make test), skipped under -short (make test-fast)"

// Binary is the path of the vault binary: $KEYWAY_VAULT, or what
// scripts/tool.sh vault prints. Under -short it skips the test
// ([SkipReason]).
func Binary(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("vaulttest: " + SkipReason)
	}
	if p := os.Getenv("KEYWAY_VAULT"); p != "" {
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("vaulttest: no go.work above the working directory, and KEYWAY_VAULT is not set")
		}
		dir = parent
	}
	out, err := exec.Command(filepath.Join(dir, "scripts", "tool.sh"), "vault").Output()
	if err != nil {
		tb.Fatalf("vaulttest: scripts/tool.sh vault: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// Start runs a dev server for the test's lifetime and waits until it is
// healthy. Under -short it skips the test ([SkipReason]).
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if testing.Short() {
		tb.Skip("vaulttest: " + SkipReason)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	s := &Server{Addr: "http://" + listen, Token: Token, tb: tb, bin: Binary(tb), listen: listen, home: tb.TempDir()}
	s.start()
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			s.mu.Lock()
			tb.Logf("--- output of vault ---\n%s", s.out.String())
			s.mu.Unlock()
		}
	})
	if opts.PKI {
		s.EnablePKI()
	}
	return s
}

func (s *Server) start() {
	s.tb.Helper()
	cmd := exec.Command(s.bin, "server", "-dev", "-dev-root-token-id="+s.Token, "-dev-listen-address="+s.listen)
	// The dev server writes the token to ~/.vault-token: keep it in the
	// test's folder.
	cmd.Env = append(os.Environ(), "HOME="+s.home, "VAULT_ADDR=", "VAULT_TOKEN=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = &lockedWriter{mu: &s.mu, w: out}, &lockedWriter{mu: &s.mu, w: out}
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("vaulttest: starting %s: %v", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.out, s.done = cmd, out, done
	s.mu.Unlock()
	// Vault says nothing machine-readable when it is up: poll its health.
	testwait.Eventually(s.tb, 60*time.Second, func() error {
		select {
		case <-done:
			s.mu.Lock()
			defer s.mu.Unlock()
			s.tb.Fatalf("vaulttest: vault exited before it was healthy:\n%s", out.String())
		default:
		}
		resp, err := http.Get(s.Addr + "/v1/sys/health")
		if err != nil {
			return fmt.Errorf("vaulttest: vault at %s: %w", s.Addr, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("vaulttest: vault at %s: health %s", s.Addr, resp.Status)
		}
		return nil
	})
}

// Stop stops the server (SIGTERM, then SIGKILL after 10 seconds). A dev
// server keeps nothing: a restarted one is empty.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	stopProcess(cmd, done)
}

// stopProcess stops a Vault server started as cmd, whose exit closes done:
// SIGTERM, then SIGKILL after 10 seconds. Nothing when it was never
// started or has exited.
func stopProcess(cmd *exec.Cmd, done <-chan struct{}) {
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart starts a new, empty dev server on the same address and token.
func (s *Server) Restart(opts Options) {
	s.tb.Helper()
	s.Stop()
	s.start()
	if opts.PKI {
		s.EnablePKI()
	}
}

// EnablePKI mounts pki/ (longest TTL ten years) and generates a root CA.
func (s *Server) EnablePKI() {
	s.tb.Helper()
	s.Write("sys/mounts/pki", map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"}})
	s.Write("pki/root/generate/internal", map[string]any{"common_name": "Keyway test PKI root", "ttl": "87600h", "key_type": "ec", "key_bits": 256})
}

// Role creates a PKI role that issues any name, for client and server
// authentication, with ECDSA P-256 keys.
func (s *Server) Role(name string, maxTTL time.Duration) {
	s.tb.Helper()
	s.Write("pki/roles/"+name, map[string]any{
		"allow_any_name": true, "enforce_hostnames": false, "client_flag": true, "server_flag": true,
		"key_type": "ec", "key_bits": 256, "max_ttl": maxTTLString(maxTTL), "not_before_duration": "30s",
	})
}

// Write POSTs body to /v1/path with the root token and fails the test on
// an error status. It returns the answer's "data" object, if any.
func (s *Server) Write(path string, body map[string]any) map[string]any {
	s.tb.Helper()
	data, err := s.Do(context.Background(), http.MethodPost, path, body)
	if err != nil {
		s.tb.Fatalf("vaulttest: %v", err)
	}
	return data
}

// Do sends one request to /v1/path with the root token. It returns the
// answer's "data" object, or an error for a status of 400 or more.
func (s *Server) Do(ctx context.Context, method, path string, body map[string]any) (map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.Addr+"/v1/"+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Vault-Token", s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, raw)
	}
	var parsed struct {
		Data map[string]any `json:"data"`
	}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &parsed); err != nil {
			return nil, fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
		}
	}
	return parsed.Data, nil
}

// Output is what the server printed so far.
func (s *Server) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// maxTTLString is the role's max_ttl: the mount's when zero.
func maxTTLString(d time.Duration) string {
	if d <= 0 {
		return "87600h"
	}
	return d.String()
}
