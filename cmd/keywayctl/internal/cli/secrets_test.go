package cli

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
)

// Flag mistakes are caught before any request: these run with a
// --secrets-server where nothing listens, so a request would fail with
// "cannot connect" instead.
func TestSecretsFlagErrors(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := "http://" + ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"put", "--keystore", "edge"}, "give --keystore and --alias"},
		{[]string{"put", "--keystore", "edge", "--alias", "gw", "--truststore", "cas"}, "not both"},
		{[]string{"put", "--keystore", "edge", "--alias", "gw"}, "needs --cert FILE and --key FILE, or --pki-role"},
		{[]string{"put", "--keystore", "edge", "--alias", "gw", "--cert", "a", "--key", "b", "--pki-role", "r"}, "not both"},
		{[]string{"put", "--keystore", "edge", "--alias", "gw", "--cert", "a", "--key", "b", "--usage", "both"}, `--usage "both": want client or server`},
		{[]string{"put", "--truststore", "cas"}, "needs --cert FILE"},
		{[]string{"put", "--keystore", "edge", "--alias", "gw", "--cert", "/nonexistent.pem", "--key", "b"}, "--cert: open /nonexistent.pem"},
		{[]string{"put", "--truststore", "cas", "--cert", "/dev/zero"}, "--cert: larger than 1048576 bytes"},
		{[]string{"get", "--keystore", "edge", "--alias", "gw", "-o", "name"}, "want table, yaml or json"},
		{[]string{"list", "-o", "xml"}, "want table, yaml or json"},
		{[]string{"delete"}, "give --keystore and --alias"},
		{[]string{"list"}, "is the secrets service running?"},
	} {
		var stdout, stderr bytes.Buffer
		err := Run(context.Background(), append([]string{"secrets", "--secrets-server", nowhere}, tc.args...), IO{Stdout: &stdout, Stderr: &stderr})
		if err == nil || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("keywayctl secrets %s: %v\nstderr: %s\nwant %q", strings.Join(tc.args, " "), err, stderr.String(), tc.want)
		}
	}
}

// A PEM on standard input is read up to the secrets API's bound, not
// without end.
func TestSecretsEndlessStdin(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"secrets", "--secrets-server", "http://127.0.0.1:1", "put", "--truststore", "cas", "--cert", "-"},
		IO{Stdin: zeros{}, Stdout: &stdout, Stderr: &stderr})
	if err == nil || !strings.Contains(stderr.String(), "--cert: standard input is over 1 MiB") {
		t.Errorf("keywayctl secrets put --cert - from an endless input: %v\nstderr: %s", err, stderr.String())
	}
}

// zeros is an input that never ends.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestSecretsServerFromEnvironment(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	err := Run(context.Background(), []string{"secrets", "list"}, IO{Stdout: &bytes.Buffer{}, Stderr: &stderr, Getenv: func(k string) string {
		if k == SecretsServerEnv {
			return "http://127.0.0.1:1"
		}
		return ""
	}})
	if err == nil || !strings.Contains(stderr.String(), "http://127.0.0.1:1") {
		t.Errorf("KEYWAY_SECRETS_SERVER not used: %v %s", err, stderr.String())
	}
}
