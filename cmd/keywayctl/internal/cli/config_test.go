package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"keyway.dev/internal/ctlconfig"
	"keyway.dev/internal/testca"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"
)

// run runs keywayctl in process with exactly the environment env.
func run(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = Run(context.Background(), args, IO{
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut,
		Getenv: func(k string) string { return env[k] },
		Now:    func() time.Time { return now },
	})
	return out.String(), errOut.String(), err
}

// configFile writes a keywayctl config and returns its path.
func configFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const twoContexts = `currentContext: dev
contexts:
  - name: dev
    server: https://dev:8081
    secretsServer: https://dev:8082
    ca: pki/api-ca.crt
    cert: /pki/operator.crt
    key: /pki/operator.key
  - name: ci
    server: https://ci:8081
    token: ci-token
`

// Precedence, per setting: flag, then environment, then the context
// (--context, else currentContext), then the default.
func TestResolveSettings(t *testing.T) {
	t.Parallel()
	path := configFile(t, twoContexts)
	dir := filepath.Dir(path)
	for _, tc := range []struct {
		name  string
		flags map[string]string
		env   map[string]string
		want  connSettings
	}{
		{name: "no file: defaults", env: map[string]string{"HOME": t.TempDir()},
			want: connSettings{Server: DefaultServer, SecretsServer: DefaultSecretsServer}},
		{name: "no HOME, no KEYWAYCONFIG: defaults", env: map[string]string{},
			want: connSettings{Server: DefaultServer, SecretsServer: DefaultSecretsServer}},
		{name: "current context, relative path resolved against the file's folder", env: map[string]string{"KEYWAYCONFIG": path},
			want: connSettings{File: path, Context: "dev", Server: "https://dev:8081", SecretsServer: "https://dev:8082",
				CA: filepath.Join(dir, "pki/api-ca.crt"), Cert: "/pki/operator.crt", Key: "/pki/operator.key"}},
		{name: "--keywayconfig over KEYWAYCONFIG", flags: map[string]string{"keywayconfig": path}, env: map[string]string{"KEYWAYCONFIG": "/nonexistent"},
			want: connSettings{File: path, Context: "dev", Server: "https://dev:8081", SecretsServer: "https://dev:8082",
				CA: filepath.Join(dir, "pki/api-ca.crt"), Cert: "/pki/operator.crt", Key: "/pki/operator.key"}},
		{name: "--context over currentContext; unset fields default", flags: map[string]string{"context": "ci"}, env: map[string]string{"KEYWAYCONFIG": path},
			want: connSettings{File: path, Context: "ci", Server: "https://ci:8081", SecretsServer: DefaultSecretsServer, Token: "ci-token"}},
		{name: "environment over context",
			env:  map[string]string{"KEYWAYCONFIG": path, ServerEnv: "https://env:1", SecretsServerEnv: "https://env:2", "KEYWAY_CA": "/env/ca", "KEYWAY_CERT": "/env/crt", "KEYWAY_KEY": "/env/key"},
			want: connSettings{File: path, Context: "dev", Server: "https://env:1", SecretsServer: "https://env:2", CA: "/env/ca", Cert: "/env/crt", Key: "/env/key"}},
		{name: "flags over environment",
			flags: map[string]string{"server": "https://flag:1", "secrets-server": "https://flag:2", "ca": "/flag/ca", "cert": "/flag/crt", "key": "/flag/key"},
			env:   map[string]string{"KEYWAYCONFIG": path, ServerEnv: "https://env:1", SecretsServerEnv: "https://env:2", "KEYWAY_CA": "/env/ca", "KEYWAY_CERT": "/env/crt", "KEYWAY_KEY": "/env/key"},
			want:  connSettings{File: path, Context: "dev", Server: "https://flag:1", SecretsServer: "https://flag:2", CA: "/flag/ca", Cert: "/flag/crt", Key: "/flag/key"}},
		{name: "one flag overrides one field only", flags: map[string]string{"server": "https://flag:1"}, env: map[string]string{"KEYWAYCONFIG": path},
			want: connSettings{File: path, Context: "dev", Server: "https://flag:1", SecretsServer: "https://dev:8082",
				CA: filepath.Join(dir, "pki/api-ca.crt"), Cert: "/pki/operator.crt", Key: "/pki/operator.key"}},
		{name: "--token-file replaces the context's token", flags: map[string]string{"context": "ci", "token-file": "/flag/token"}, env: map[string]string{"KEYWAYCONFIG": path},
			want: connSettings{File: path, Context: "ci", Server: "https://ci:8081", SecretsServer: DefaultSecretsServer, TokenFile: "/flag/token"}},
		{name: "KEYWAY_TOKEN_FILE replaces the context's token", flags: map[string]string{"context": "ci"}, env: map[string]string{"KEYWAYCONFIG": path, "KEYWAY_TOKEN_FILE": "/env/token"},
			want: connSettings{File: path, Context: "ci", Server: "https://ci:8081", SecretsServer: DefaultSecretsServer, TokenFile: "/env/token"}},
		{name: "an empty flag clears a context's setting", flags: map[string]string{"ca": ""}, env: map[string]string{"KEYWAYCONFIG": path},
			want: connSettings{File: path, Context: "dev", Server: "https://dev:8081", SecretsServer: "https://dev:8082",
				Cert: "/pki/operator.crt", Key: "/pki/operator.key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			flags := tc.flags
			if flags == nil {
				flags = map[string]string{}
			}
			got, err := resolveSettings(settingsInput{flags: flags, getenv: func(k string) string { return tc.env[k] }})
			if err != nil {
				t.Fatal(err)
			}
			got.from, tc.want.from = nil, nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// Errors name the file, the field or flag, and the fix.
func TestResolveSettingsErrors(t *testing.T) {
	t.Parallel()
	path := configFile(t, twoContexts)
	missing := filepath.Join(t.TempDir(), "none.yaml")
	dangling := configFile(t, "currentContext: gone\ncontexts:\n  - name: dev\n    server: https://dev:8081\n")
	broken := configFile(t, "contexts:\n  - name: dev\n    sever: https://dev:8081\n")
	for _, tc := range []struct {
		name  string
		flags map[string]string
		env   map[string]string
		want  []string
	}{
		{"context asked, no file", map[string]string{"context": "prod"}, map[string]string{"KEYWAYCONFIG": missing},
			[]string{"--context prod: there is no keywayctl config at " + missing, "keywayctl config set-context prod --server URL"}},
		{"context asked, no HOME", map[string]string{"context": "prod"}, map[string]string{},
			[]string{"--context prod: finding keywayctl's config file: neither KEYWAYCONFIG nor HOME is set"}},
		{"unknown context", map[string]string{"context": "prod"}, map[string]string{"KEYWAYCONFIG": path},
			[]string{`--context: no context "prod" in ` + path + "; the contexts are dev, ci"}},
		{"dangling currentContext", nil, map[string]string{"KEYWAYCONFIG": dangling},
			[]string{"currentContext of " + dangling, `no context "gone"`, "the contexts are dev", "keywayctl config use-context NAME"}},
		{"broken file", nil, map[string]string{"KEYWAYCONFIG": broken},
			[]string{broken + `:3: contexts[0]."sever": unknown field`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			flags := tc.flags
			if flags == nil {
				flags = map[string]string{}
			}
			_, err := resolveSettings(settingsInput{flags: flags, getenv: func(k string) string { return tc.env[k] }})
			if err == nil {
				t.Fatal("resolved")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// The files a context names are checked when a command connects, and the
// message says which setting named them.
func TestTLSClientErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	emptyToken := filepath.Join(dir, "empty-token")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	os.WriteFile(emptyToken, []byte("\n"), 0o600)
	ctxFrom := map[string]string{"ca": `context "dev" of /c.yaml`, "cert": "KEYWAY_CERT", "token-file": "--token-file"}
	for _, tc := range []struct {
		name string
		s    connSettings
		want string
	}{
		{"CA missing", connSettings{CA: filepath.Join(dir, "none.crt"), from: ctxFrom}, `context "dev" of /c.yaml ` + filepath.Join(dir, "none.crt") + ": open"},
		{"CA not PEM", connSettings{CA: notPEM}, "--ca " + notPEM + ": no PEM certificate in the file"},
		{"cert without key", connSettings{Cert: notPEM, from: ctxFrom}, "KEYWAY_CERT " + notPEM + " has no key: give --key (or KEYWAY_KEY) too"},
		{"key not a key", connSettings{Cert: notPEM, Key: notPEM, from: ctxFrom}, "client certificate (KEYWAY_CERT " + notPEM + ", --key " + notPEM + ")"},
		{"empty token file", connSettings{TokenFile: emptyToken, from: ctxFrom}, "--token-file " + emptyToken + ": want one bearer token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := tlsClient(tc.s, "connect")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// The config commands: set-context makes and changes contexts (absolute
// paths, mode 0600), get-contexts lists them, use-context and
// current-context select and show, view redacts, delete-context removes.
func TestConfigCommands(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	env := map[string]string{"HOME": home}
	path := filepath.Join(home, ".config", "keyway", "config.yaml")
	wd, _ := os.Getwd()

	out, _, err := run(t, env, "config", "set-context", "dev", "--server", "https://127.0.0.1:8081", "--secrets-server", "https://127.0.0.1:8082",
		"--ca", "testdata-ca.crt", "--cert", "op.crt", "--key", "op.key")
	if err != nil {
		t.Fatal(err)
	}
	if want := `Context "dev" created in ` + path + "; it is the current context.\n"; out != want {
		t.Errorf("set-context said %q, want %q", out, want)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %o, want 600", path, st.Mode().Perm())
	}
	c, err := ctlconfig.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := ctlconfig.Context{Name: "dev", Server: "https://127.0.0.1:8081", SecretsServer: "https://127.0.0.1:8082",
		CA: filepath.Join(wd, "testdata-ca.crt"), Cert: filepath.Join(wd, "op.crt"), Key: filepath.Join(wd, "op.key")}
	if got, _ := c.Context("dev"); got != want {
		t.Errorf("stored %+v\nwant   %+v", got, want)
	}

	// A second context, with a token written in the file by hand.
	if err := ctlconfig.Update(path, func(c *ctlconfig.Config) error {
		c.Set(ctlconfig.Context{Name: "ci", Server: "https://ci.example.com", Token: "tok-very-secret"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Changing one setting keeps the others.
	if _, _, err := run(t, env, "config", "set-context", "dev", "--ca="); err != nil {
		t.Fatal(err)
	}
	c, _ = ctlconfig.Load(path)
	if got, _ := c.Context("dev"); got.CA != "" || got.Cert != want.Cert || got.Server != want.Server {
		t.Errorf("after --ca=: %+v", got)
	}

	out, _, err = run(t, env, "config", "get-contexts")
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if len(rows) != 3 || strings.Join(strings.Fields(rows[0]), " ") != "CURRENT NAME SERVER SECRETS-SERVER AUTH" ||
		strings.Join(strings.Fields(rows[1]), " ") != "* dev https://127.0.0.1:8081 https://127.0.0.1:8082 client certificate" ||
		strings.Join(strings.Fields(rows[2]), " ") != "ci https://ci.example.com - token" {
		t.Errorf("get-contexts:\n%s", out)
	}

	out, _, err = run(t, env, "config", "get-contexts", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CurrentContext string `json:"currentContext"`
		Contexts       []struct {
			Name, Server, Auth, Token string
			Current                   bool
		} `json:"contexts"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("get-contexts -o json is not JSON: %v\n%s", err, out)
	}
	if list.CurrentContext != "dev" || len(list.Contexts) != 2 || !list.Contexts[0].Current || list.Contexts[1].Auth != "token" || list.Contexts[1].Token != ctlconfig.Redacted {
		t.Errorf("get-contexts -o json: %+v", list)
	}

	for _, format := range []string{"yaml", "json"} {
		out, _, err = run(t, env, "config", "view", "-o", format)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "tok-very-secret") || !strings.Contains(out, ctlconfig.Redacted) || !strings.Contains(out, "https://ci.example.com") {
			t.Errorf("config view -o %s shows the token or not the context:\n%s", format, out)
		}
	}
	if out, _, _ = run(t, env, "config", "get-contexts", "-o", "yaml"); strings.Contains(out, "tok-very-secret") {
		t.Errorf("get-contexts -o yaml shows the token:\n%s", out)
	}

	if out, _, err = run(t, env, "config", "use-context", "ci"); err != nil || !strings.Contains(out, `Switched to context "ci"`) {
		t.Errorf("use-context ci: %q %v", out, err)
	}
	if out, _, err = run(t, env, "config", "current-context"); err != nil || out != "ci\n" {
		t.Errorf("current-context: %q %v", out, err)
	}
	_, stderr, err := run(t, env, "config", "use-context", "prod")
	if err == nil || !strings.Contains(stderr, `no context "prod" in `+path+"; the contexts are dev, ci") {
		t.Errorf("use-context prod: %v %s", err, stderr)
	}

	_, stderr, err = run(t, env, "config", "delete-context", "ci")
	if err != nil || !strings.Contains(stderr, `"ci" was the current context`) {
		t.Errorf("delete-context ci: %v %s", err, stderr)
	}
	_, stderr, err = run(t, env, "config", "current-context")
	if err == nil || !strings.Contains(stderr, path+" names no current context; select one with keywayctl config use-context NAME (contexts: dev)") {
		t.Errorf("current-context with none: %v %s", err, stderr)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("after the changes, mode %o", st.Mode().Perm())
	}
}

func TestConfigCommandErrors(t *testing.T) {
	t.Parallel()
	path := configFile(t, twoContexts)
	env := map[string]string{"KEYWAYCONFIG": path}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"config", "set-context", "x", "--server", "127.0.0.1:8081"}, `--server "127.0.0.1:8081": want an https:// URL`},
		{[]string{"config", "set-context", "x", "--cert", "a.crt"}, "contexts[2].key: missing: cert is set"},
		{[]string{"config", "set-context", "bad name"}, `contexts[2].name: "bad name": a name is letters, digits`},
		{[]string{"config", "set-context"}, "want keywayctl config set-context NAME (got 0 arguments)"},
		{[]string{"config", "delete-context", "prod"}, `no context "prod" in ` + path},
		{[]string{"config", "view", "-o", "table"}, `-o "table": want yaml or json`},
		{[]string{"config", "get-contexts", "-o", "wide"}, `-o "wide": want table, json or yaml`},
	} {
		_, stderr, err := run(t, env, tc.args...)
		if err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("keywayctl %s: %v\nstderr: %s\nwant %q", strings.Join(tc.args, " "), err, stderr, tc.want)
		}
	}
	// Nothing was written by the failed commands.
	if b, _ := os.ReadFile(path); string(b) != twoContexts {
		t.Errorf("the file changed:\n%s", b)
	}
}

// seen records what a TLS server saw of each request: the client
// certificate's subject and the Authorization header.
type seen struct {
	mu       sync.Mutex
	subjects []string
	auth     []string
	protos   []string
}

func (s *seen) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		subject := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			subject = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		s.subjects = append(s.subjects, subject)
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.protos = append(s.protos, r.Proto)
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (s *seen) last() (subject, auth, proto string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.subjects) == 0 {
		return "", "", ""
	}
	n := len(s.subjects) - 1
	return s.subjects[n], s.auth[n], s.protos[n]
}

// tlsServer serves h over TLS (HTTP/1.1 and h2) with a certificate from
// apiCA, asking for a client certificate from clientCA.
func tlsServer(t *testing.T, apiCA, clientCA *testca.CA, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{apiCA.Server("localhost").TLS},
		ClientCAs:    clientCA.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

func writePEM(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A context is all keywayctl needs: it trusts the context's CA, presents
// the context's client certificate, and sends the token of its token file,
// to the policy service (both protocols) and to the secrets service.
func TestContextConnects(t *testing.T) {
	t.Parallel()
	apiCA, operatorCA := testca.New(t, "api-ca"), testca.New(t, "operator-ca")
	operator := operatorCA.Client("operator")
	pki := t.TempDir()
	caFile := writePEM(t, pki, "api-ca.crt", apiCA.CertPEM())
	certFile := writePEM(t, pki, "operator.crt", operator.CertPEM)
	keyFile := writePEM(t, pki, "operator.key", operator.KeyPEM)
	tokenFile := writePEM(t, pki, "token", []byte("automation-token-1\n"))

	policySeen, secretsSeen := &seen{}, &seen{}
	fake := &fakePolicyService{stored: []*policyv1.Resource{}}
	mux := http.NewServeMux()
	mux.Handle(policyv1connect.NewPolicyServiceHandler(fake))
	policyURL := tlsServer(t, apiCA, operatorCA, policySeen.wrap(mux))
	smux := http.NewServeMux()
	smux.Handle(secretsv1connect.NewSecretsServiceHandler(secretsv1connect.UnimplementedSecretsServiceHandler{}))
	secretsURL := tlsServer(t, apiCA, operatorCA, secretsSeen.wrap(smux))

	home := t.TempDir()
	env := map[string]string{"HOME": home}
	if _, _, err := run(t, env, "config", "set-context", "test", "--server", policyURL, "--secrets-server", secretsURL,
		"--ca", caFile, "--cert", certFile, "--key", keyFile); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, env, "config", "set-context", "bot", "--server", policyURL, "--ca", caFile, "--token-file", tokenFile); err != nil {
		t.Fatal(err)
	}

	for _, protocol := range []string{"connect", "grpc"} {
		_, stderr, err := run(t, env, "get", "services", "--protocol", protocol)
		if err != nil {
			t.Fatalf("get services over %s with the current context: %v\n%s", protocol, err, stderr)
		}
		subject, auth, proto := policySeen.last()
		if subject != "operator" || auth != "" {
			t.Errorf("%s: the server saw client certificate %q and Authorization %q; want operator and none", protocol, subject, auth)
		}
		if protocol == "grpc" && proto != "HTTP/2.0" {
			t.Errorf("grpc went over %s", proto)
		}
	}

	if _, stderr, err := run(t, env, "--context", "bot", "get", "services"); err != nil {
		t.Fatalf("get services with --context bot: %v\n%s", err, stderr)
	}
	if subject, auth, _ := policySeen.last(); subject != "" || auth != "Bearer automation-token-1" {
		t.Errorf("--context bot: the server saw client certificate %q and Authorization %q; want none and the token file's token", subject, auth)
	}

	// The secrets commands use the context's secretsServer. The server is
	// a bare handler with no methods: what matters is who reached it.
	_, stderr, _ := run(t, env, "secrets", "list")
	if subject, _, _ := secretsSeen.last(); subject != "operator" {
		t.Errorf("secrets list: the secrets server saw client certificate %q; stderr: %s", subject, stderr)
	}

	// Without the context's CA the server's certificate is not trusted:
	// the CA really is what makes the connection.
	if _, stderr, err := run(t, env, "--ca", writePEM(t, pki, "other-ca.crt", testca.New(t, "other").CertPEM()), "get", "services"); err == nil ||
		!strings.Contains(stderr, "signed by") {
		t.Errorf("get services trusting another CA: %v %s", err, stderr)
	}
}

// A token never crosses plain HTTP.
func TestTokenRefusedOverHTTP(t *testing.T) {
	t.Parallel()
	tokenFile := writePEM(t, t.TempDir(), "token", []byte("t0k3n"))
	f := &fakePolicyService{}
	url := f.serve(t)
	_, stderr, err := run(t, map[string]string{ServerEnv: url, "KEYWAY_TOKEN_FILE": tokenFile}, "get", "services")
	if err == nil || !strings.Contains(stderr, "KEYWAY_SERVER "+url+": a bearer token would cross the network in the clear; use an https:// URL") {
		t.Errorf("token over http: %v %s", err, stderr)
	}
}
