package harness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/natsperm"
	"keyway.dev/internal/testca"
)

// natsServers are the secured servers this test binary started, by client
// URL: the start functions look the URL they are given up here to pass the
// service its user, password file and CA.
var natsServers sync.Map // string → *NATSServer

// secure writes the server's TLS material, one random password per user of
// natsperm (0600), and the configuration file that serves TLS and grants
// each user its permissions; it registers n under its URL.
func (n *NATSServer) secure(tb testing.TB) {
	tb.Helper()
	ca := testca.New(tb, "keyway NATS CA")
	srv := ca.Server("localhost")
	n.CAFile = filepath.Join(n.dir, "ca.crt")
	files := map[string][]byte{"ca.crt": ca.CertPEM(), "server.crt": srv.CertPEM, "server.key": srv.KeyPEM}
	n.passwords = make(map[string]string)
	for _, u := range natsperm.Users(natsperm.Buckets{}) {
		pw := randomPassword(tb)
		n.passwords[u.Name] = pw
		files[u.Name+".password"] = []byte(pw + "\n")
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(n.dir, name), data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	conf := fmt.Sprintf("listen: %q\njetstream { store_dir: %q }\ntls {\n  cert_file: %q\n  key_file: %q\n  timeout: 2\n}\n%s",
		n.addr, filepath.Join(n.dir, "js"), filepath.Join(n.dir, "server.crt"), filepath.Join(n.dir, "server.key"),
		natsperm.Render(natsperm.Users(natsperm.Buckets{}), func(user string) string { return strconv.Quote(n.passwords[user]) }))
	n.confFile = filepath.Join(n.dir, "nats-server.conf")
	if err := os.WriteFile(n.confFile, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	natsServers.Store(n.URL, n)
	tb.Cleanup(func() { natsServers.Delete(n.URL) })
}

func randomPassword(tb testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// PasswordFile is the file holding user's password (natsperm.Policy,
// natsperm.Secrets or natsperm.Node).
func (n *NATSServer) PasswordFile(user string) string {
	return filepath.Join(n.dir, user+".password")
}

// Password is user's password.
func (n *NATSServer) Password(user string) string { return n.passwords[user] }

// Config is the connection configuration of user: the server's URL, its
// CA, the user and its password file.
func (n *NATSServer) Config(user string) natsconn.Config {
	return natsconn.Config{URL: n.URL, CAFile: n.CAFile, User: user, PasswordFile: n.PasswordFile(user), Name: "keyway-test " + user}
}

// Args are the flags that connect a service as user:
// --nats-ca, --nats-user, --nats-password-file.
func (n *NATSServer) Args(user string) []string {
	return []string{"--nats-ca", n.CAFile, "--nats-user", user, "--nats-password-file", n.PasswordFile(user)}
}

// Connect connects the test as user, with the service's own connection
// code, and closes the connection at cleanup.
func (n *NATSServer) Connect(tb testing.TB, user string) *nats.Conn {
	tb.Helper()
	nc, err := natsconn.Connect(tb.Context(), n.Config(user), slog.New(slog.DiscardHandler), natsconn.Handlers{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// NATSArgs are the flags that connect a service as user to the harness's
// server at natsURL ([NATSServer.Args]); none for a server the harness did
// not start.
func NATSArgs(natsURL, user string) []string {
	if v, ok := natsServers.Load(natsURL); ok {
		return v.(*NATSServer).Args(user)
	}
	return nil
}

// NATSConnect connects the test as user to the harness's server at natsURL
// (a plain connection to a server the harness did not start) and closes the
// connection at cleanup.
func NATSConnect(tb testing.TB, natsURL, user string) *nats.Conn {
	tb.Helper()
	if v, ok := natsServers.Load(natsURL); ok {
		return v.(*NATSServer).Connect(tb, user)
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
