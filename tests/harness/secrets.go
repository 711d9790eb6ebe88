package harness

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"keyway.dev/common/testca"
)

// Secrets is a running keyway-secrets with the local-directory backend: its
// API (SecretsService, plain HTTP) and its internal mTLS port
// (MaterialService), whose certificates come from an internal test CA.
type Secrets struct {
	*Process
	APIURL      string // http://addr
	InternalURL string // https://addr
	// Internal is the internal CA: it signs the internal port's
	// certificate and the client certificates it accepts.
	Internal *testca.CA
	dir      string
}

// StartSecrets starts keyway-secrets against natsURL, polling its backend
// every pollInterval ("" for the default).
func StartSecrets(tb testing.TB, natsURL, pollInterval string) *Secrets {
	tb.Helper()
	s := &Secrets{Internal: testca.New(tb, "Keyway internal CA"), dir: tb.TempDir()}
	server := s.Internal.Server("127.0.0.1")
	cert, key := s.write(tb, "internal.crt", server.CertPEM), s.write(tb, "internal.key", server.KeyPEM)
	ca := s.write(tb, "internal-ca.crt", s.Internal.CertPEM())
	api, internal := FreeAddr(tb), FreeAddr(tb)
	args := []string{"--listen", api, "--internal-listen", internal, "--internal-cert", cert, "--internal-key", key,
		"--internal-client-ca", ca, "--nats", natsURL, "--backend", "local", "--dir", filepath.Join(s.dir, "store")}
	if pollInterval != "" {
		args = append(args, "--poll-interval", pollInterval)
	}
	s.Process = Start(tb, "keyway-secrets", Bin(tb, "keyway-secrets"), regexp.MustCompile(`secrets service serving`), args...)
	s.APIURL, s.InternalURL = "http://"+api, "https://"+internal
	return s
}

// ClientArgs issues a client certificate from the internal CA for name and
// returns the flags that give it to keyway-proxy or keyway-policy.
func (s *Secrets) ClientArgs(tb testing.TB, name string) []string {
	tb.Helper()
	kp := s.Internal.Client(name)
	return []string{
		"--secrets-internal-url", s.InternalURL,
		"--secrets-cert", s.write(tb, name+".crt", kp.CertPEM),
		"--secrets-key", s.write(tb, name+".key", kp.KeyPEM),
		"--secrets-ca", s.write(tb, "internal-ca.crt", s.Internal.CertPEM()),
	}
}

func (s *Secrets) write(tb testing.TB, name string, data []byte) string {
	tb.Helper()
	p := filepath.Join(s.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}
