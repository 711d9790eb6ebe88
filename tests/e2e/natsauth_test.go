package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/natsperm"
	"keyway.dev/internal/nodekv"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testwait"
	"keyway.dev/tests/harness"
)

// natsStack is a secured nats-server with the buckets made by the services
// that own them: the policy service (configuration, node registry) and the
// secrets service (secret versions).
func natsStack(t *testing.T) *harness.NATSServer {
	t.Helper()
	n := harness.StartNATS(t)
	harness.Policy(t, n.URL)
	harness.StartSecrets(t, n.URL, nil)
	return n
}

// kvSubject is the subject a put of key into bucket publishes to.
func kvSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// Each service connects as its own user and may write only what it owns:
// every write here is tried through JetStream, as a compromised service
// would, and then looked for with the owner's user.
func TestNATSUsersWriteOnlyWhatTheyOwn(t *testing.T) {
	n := natsStack(t)
	ctx := context.Background()
	// The owners read back what the others tried to write.
	policyJS := mustJS(t, n.Connect(t, natsperm.Policy))
	owner := map[string]jetstream.KeyValue{
		configkv.Bucket:  mustKV(t, policyJS, configkv.Bucket),
		secretref.Bucket: mustKV(t, policyJS, secretref.Bucket),
		nodekv.Bucket:    mustKV(t, policyJS, nodekv.Bucket),
	}
	cases := []struct {
		name, user, bucket string
		allowed            bool
	}{
		{"node cannot write the configuration", natsperm.Node, configkv.Bucket, false},
		{"node cannot write secret versions", natsperm.Node, secretref.Bucket, false},
		{"secrets cannot write the configuration", natsperm.Secrets, configkv.Bucket, false},
		{"secrets cannot write the node registry", natsperm.Secrets, nodekv.Bucket, false},
		{"policy cannot write secret versions", natsperm.Policy, secretref.Bucket, false},
		{"policy cannot write the node registry", natsperm.Policy, nodekv.Bucket, false},
		// The same writes by the owners succeed: the refusals above are
		// the permissions', not a broken write.
		{"policy writes the configuration", natsperm.Policy, configkv.Bucket, true},
		{"secrets writes secret versions", natsperm.Secrets, secretref.Bucket, true},
		{"node writes the node registry", natsperm.Node, nodekv.Bucket, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			js := mustJS(t, n.Connect(t, tc.user))
			key := "Route.probe-" + tc.user
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, err := js.Publish(pctx, kvSubject(tc.bucket, key), []byte(`{"written-by":"`+tc.user+`"}`))
			if tc.allowed && err != nil {
				t.Fatalf("%s putting %s into %s: %v", tc.user, key, tc.bucket, err)
			}
			if !tc.allowed && err == nil {
				t.Fatalf("%s put %s into %s: the server acknowledged it", tc.user, key, tc.bucket)
			}
			_, err = owner[tc.bucket].Get(ctx, key)
			switch {
			case tc.allowed && err != nil:
				t.Errorf("reading %s back from %s: %v", key, tc.bucket, err)
			case !tc.allowed && !errors.Is(err, jetstream.ErrKeyNotFound):
				t.Errorf("%s holds %s written by %s (get: %v)", tc.bucket, key, tc.user, err)
			}
		})
	}
}

// Reads are granted as narrowly: the secrets service reads the
// configuration (to refuse deleting a secret that a resource uses) and
// cannot write it, no user subscribes to the buckets' subjects or another
// user's inbox, and a node opens no consumer on the registry it writes (it
// needs none, and a consumer's deliver subject is not checked against its
// creator's permissions).
func TestNATSUsersReadOnlyWhatTheyNeed(t *testing.T) {
	n := natsStack(t)
	ctx := context.Background()

	watch := func(t *testing.T, user string, buckets ...string) {
		t.Helper()
		js := mustJS(t, n.Connect(t, user))
		for _, b := range buckets {
			kv := mustKV(t, js, b)
			w, err := kv.WatchAll(ctx)
			if err != nil {
				t.Fatalf("watching %s as %s: %v", b, user, err)
			}
			select {
			case <-w.Updates(): // the initial values, or nil when empty
			case <-time.After(5 * time.Second):
				t.Errorf("watch of %s as %s delivered nothing", b, user)
			}
			_ = w.Stop()
		}
	}
	t.Run("node reads the configuration and secret versions", func(t *testing.T) {
		watch(t, natsperm.Node, configkv.Bucket, secretref.Bucket)
	})
	t.Run("secrets reads the configuration", func(t *testing.T) {
		watch(t, natsperm.Secrets, configkv.Bucket)
	})
	t.Run("node cannot create a consumer on the registry", func(t *testing.T) {
		js := mustJS(t, n.Connect(t, natsperm.Node))
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateConsumer(cctx, "KV_"+nodekv.Bucket, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
		if err == nil {
			t.Fatal("node created a consumer on the node registry")
		}
	})
	for _, tc := range []struct{ user, subject string }{
		{natsperm.Node, ">"},
		{natsperm.Node, kvSubject(configkv.Bucket, ">")},
		{natsperm.Secrets, kvSubject(configkv.Bucket, ">")},
		{natsperm.Node, natsconn.InboxPrefix(natsperm.Policy) + ".>"},
		{natsperm.Secrets, "_INBOX.>"},
	} {
		t.Run(tc.user+" cannot subscribe to "+tc.subject, func(t *testing.T) {
			violations := make(chan error, 1)
			cfg := n.Config(tc.user)
			tc2, err := natsconn.TLSConfig(cfg.CAFile)
			if err != nil {
				t.Fatal(err)
			}
			nc, err := nats.Connect(n.URL, nats.Secure(tc2), nats.UserInfo(tc.user, n.Password(tc.user)),
				nats.CustomInboxPrefix(natsconn.InboxPrefix(tc.user)),
				nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
					select {
					case violations <- err:
					default:
					}
				}))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.SubscribeSync(tc.subject); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-violations:
				if !errors.Is(err, nats.ErrPermissionViolation) {
					t.Errorf("subscribing to %s: %v, want a permissions violation", tc.subject, err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("%s subscribed to %s: no permissions violation", tc.user, tc.subject)
			}
		})
	}
}

// The server takes no plaintext connection and no connection without a
// user, or with a wrong password, or with a certificate it cannot verify.
func TestNATSRefusesPlaintextAndUnknownCallers(t *testing.T) {
	n := harness.StartNATS(t)
	caTLS, err := natsconn.TLSConfig(n.CAFile)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("plaintext", func(t *testing.T) {
		// What a client without TLS sees: the server's INFO demands TLS,
		// and a plain CONNECT with the right password is never answered:
		// the server closes the connection.
		host := strings.TrimPrefix(n.URL, "nats://")
		c, err := net.DialTimeout("tcp", host, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			TLSRequired  bool `json:"tls_required"`
			AuthRequired bool `json:"auth_required"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "INFO ")), &info); err != nil {
			t.Fatalf("INFO %q: %v", line, err)
		}
		if !info.TLSRequired || !info.AuthRequired {
			t.Errorf("INFO says tls_required=%v auth_required=%v, want both", info.TLSRequired, info.AuthRequired)
		}
		connect := `CONNECT {"verbose":true,"user":"node","pass":"` + n.Password(natsperm.Node) + `"}` + "\r\nPING\r\n"
		if _, err := c.Write([]byte(connect)); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(r)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server kept the plaintext connection open for 10s (read %q)", rest)
		}
		if strings.Contains(string(rest), "+OK") || strings.Contains(string(rest), "PONG") {
			t.Errorf("the server answered a plaintext CONNECT with %q", rest)
		}
	})
	for _, tc := range []struct {
		name string
		opts []nats.Option
		want error
	}{
		{"no user", []nats.Option{nats.Secure(caTLS)}, nats.ErrAuthorization},
		{"wrong password", []nats.Option{nats.Secure(caTLS), nats.UserInfo(natsperm.Policy, "not-the-password")}, nats.ErrAuthorization},
		{"another user's password", []nats.Option{nats.Secure(caTLS), nats.UserInfo(natsperm.Policy, n.Password(natsperm.Node))}, nats.ErrAuthorization},
		{"unverified server certificate", []nats.Option{nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}), nats.UserInfo(natsperm.Policy, n.Password(natsperm.Policy))}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(n.URL, append(tc.opts, nats.Timeout(5*time.Second))...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("connecting: %v, want %v", err, tc.want)
			}
			if tc.want == nil && !strings.Contains(err.Error(), "certificate") {
				t.Errorf("connecting: %v, want a certificate verification error", err)
			}
		})
	}
	t.Run("the right password over TLS", func(t *testing.T) {
		nc, err := nats.Connect(n.URL, nats.Secure(caTLS), nats.UserInfo(natsperm.Policy, n.Password(natsperm.Policy)), nats.Timeout(5*time.Second))
		if err != nil {
			t.Fatalf("policy connecting with its password: %v", err)
		}
		nc.Close()
	})
}

// Each service does its work with its own user only: an apply reaches a
// node, and a certificate put through the secrets API is published as a
// version the node follows and serves; the server refuses nothing on the
// way.
func TestNATSServicesWorkWithTheirUsers(t *testing.T) {
	s := harness.StartRotationStack(t, 1) // the apply of a binding with references, served by the node
	fp := s.Rotate(t)
	if _, err := s.WaitServed(s.Proxies[0], fp, time.Now(), 60*time.Second); err != nil {
		t.Fatalf("the node did not serve the certificate put through the secrets API: %v", err)
	}
	for _, line := range strings.Split(s.NATS.Process.Output(), "\n") {
		if strings.Contains(line, "Violation") {
			t.Errorf("nats-server refused a service: %s", line)
		}
	}
}

func mustJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func mustKV(t *testing.T, js jetstream.JetStream, bucket string) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatalf("opening bucket %s: %v", bucket, err)
	}
	return kv
}

// A service started with a wrong password keeps trying (it does not give
// up after the server's second refusal, as nats.go does by default) and
// connects once the password file is right: the file is read at every
// attempt, as a rotated Kubernetes Secret needs.
func TestNATSPasswordFileIsReadAtEveryAttempt(t *testing.T) {
	n := harness.StartNATS(t)
	cfg := n.Config(natsperm.Node)
	cfg.PasswordFile = filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(cfg.PasswordFile, []byte("stale-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := natsconn.Connect(context.Background(), cfg, slog.New(slog.DiscardHandler), natsconn.Handlers{})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Three refusals in the server's log: past the point where nats.go
	// would close the connection for good. Polling: the server is another
	// process.
	refusals := func() int { return strings.Count(n.Process.Output(), "authentication error") }
	testwait.Eventually(t, 30*time.Second, func() error {
		if r := refusals(); r < 3 {
			return fmt.Errorf("%d refused attempts, want 3:\n%s", r, n.Process.Output())
		}
		return nil
	})
	if nc.IsClosed() {
		t.Fatal("the connection gave up after refused passwords")
	}
	// Await the connection: its status listener is set before the fix.
	connected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(connected)
	if err := os.WriteFile(cfg.PasswordFile, []byte(n.Password(natsperm.Node)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !nc.IsConnected() {
		select {
		case <-connected:
		case <-time.After(30 * time.Second):
			t.Fatalf("not connected 30s after the password file was fixed (status %v)", nc.Status())
		}
	}
}
