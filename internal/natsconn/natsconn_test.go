package natsconn_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/envflag"
	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/testca"
)

func write(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A configuration mistake is an error at start that names the flag, not a
// connection that retries forever without a chance.
func TestConnectRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "nats CA")
	caFile := write(t, "ca.crt", ca.CertPEM())
	pwFile := write(t, "password", []byte("s3cret\n"))
	for _, tc := range []struct {
		name string
		cfg  natsconn.Config
		want string
	}{
		{"missing CA file", natsconn.Config{CAFile: filepath.Join(t.TempDir(), "nope.crt")}, "--nats-ca"},
		{"CA file without certificates", natsconn.Config{CAFile: write(t, "empty.crt", []byte("not PEM"))}, "holds no PEM certificate"},
		{"password without user", natsconn.Config{CAFile: caFile, PasswordFile: pwFile}, "--nats-user"},
		{"user without password", natsconn.Config{CAFile: caFile, User: "node"}, "--nats-password-file"},
		{"missing password file", natsconn.Config{User: "node", PasswordFile: filepath.Join(t.TempDir(), "nope")}, "--nats-password-file"},
		{"empty password file", natsconn.Config{User: "node", PasswordFile: write(t, "empty", []byte(" \n"))}, "is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.URL = "nats://127.0.0.1:1"
			nc, err := natsconn.Connect(context.Background(), tc.cfg, slog.New(slog.DiscardHandler), natsconn.Handlers{})
			if err == nil {
				nc.Close()
				t.Fatal("Connect accepted the configuration")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestTLSConfig(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "nats CA")
	tc, err := natsconn.TLSConfig(write(t, "ca.crt", ca.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2", tc.MinVersion)
	}
	if tc.InsecureSkipVerify || tc.RootCAs == nil {
		t.Errorf("the server's certificate is not verified against the CA file")
	}
	// The pool holds the CA and nothing else: a certificate of another CA
	// does not verify.
	other := testca.New(t, "other CA").Server("localhost")
	if _, err := other.Cert.Verify(x509Opts(tc)); err == nil {
		t.Error("a certificate of another CA verifies against the pool")
	}
	if _, err := ca.Server("localhost").Cert.Verify(x509Opts(tc)); err != nil {
		t.Errorf("the CA's own server certificate does not verify: %v", err)
	}
}

// Reconnect waits grow from BaseDelay to MaxDelay and are spread: a fleet
// that lost the same server does not come back in step.
func TestReconnectDelay(t *testing.T) {
	t.Parallel()
	for attempts, span := range map[int]time.Duration{1: natsconn.BaseDelay, 2: 2 * natsconn.BaseDelay, 3: 4 * natsconn.BaseDelay, 10: natsconn.MaxDelay, 1000: natsconn.MaxDelay} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := natsconn.ReconnectDelay(attempts)
			if d < span/2 || d > span {
				t.Fatalf("attempt %d: wait %v outside [%v, %v]", attempts, d, span/2, span)
			}
			seen[d] = true
		}
		if len(seen) < 50 {
			t.Errorf("attempt %d: only %d distinct waits in 200: not jittered", attempts, len(seen))
		}
	}
}

func TestRegisterFlags(t *testing.T) {
	t.Setenv("KEYWAY_NATS_USER", "node")
	t.Setenv("KEYWAY_NATS_PASSWORD_FILE", "/run/secrets/nats")
	t.Setenv("KEYWAY_NATS_CA", "")
	var c natsconn.Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := envflag.Parse(fs, envflag.Prefix, []string{"--nats-ca", "/etc/nats/ca.crt"}, nil); err != nil {
		t.Fatal(err)
	}
	want := natsconn.Config{CAFile: "/etc/nats/ca.crt", User: "node", PasswordFile: "/run/secrets/nats"}
	if c != want {
		t.Errorf("flags and environment gave %+v, want %+v", c, want)
	}
}

func TestInboxPrefix(t *testing.T) {
	t.Parallel()
	if got := natsconn.InboxPrefix("node"); got != "_INBOX.node" {
		t.Errorf("InboxPrefix(node) = %q", got)
	}
	if got := natsconn.InboxPrefix(""); got != "_INBOX" {
		t.Errorf("InboxPrefix() = %q, want nats.go's default", got)
	}
}

func x509Opts(tc *tls.Config) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: tc.RootCAs, DNSName: "localhost"}
}
