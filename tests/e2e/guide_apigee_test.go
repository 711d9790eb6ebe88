package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"keyway.dev/internal/testca"
	"keyway.dev/internal/vaulttest"
	"keyway.dev/tests/harness"
)

// The Apigee guide's Step 1, command for command, as the guide writes them
// (its page breaks the long ones with "\" at the ends of lines). The
// gateway's CSR is made interactively: the user presses Enter at each of
// openssl's questions. The server's subject is written in single quotes,
// so the shell keeps "${SERVER_HOST}" as it is.
const apigeeGuideOpenSSL = `
openssl req \
  -new \
  -x509 \
  -nodes \
  -days 365 \
  -subj '/CN=my-ca' \
  -keyout RootCA.key \
  -out RootCA.pem
openssl genrsa -out my_gateway.key 2048
openssl req -new -key my_gateway.key -out my_gateway.csr
openssl x509 -req -in my_gateway.csr -CA RootCA.pem \
  -CAkey RootCA.key -set_serial 01 -out my_gateway.pem -days 365 -sha256
openssl genrsa -out my_server.key 2048
openssl req -new -key my_server.key -subj '/CN=${SERVER_HOST}' -out my_server.csr
openssl x509 -req -in my_server.csr -CA RootCA.pem \
  -CAkey RootCA.key -set_serial 01 -out my_server.pem -days 365 -sha256
`

// The guide's targetservers.json, as written: the label, the trailing
// comma, the '}' that closes the target server before "protocol", and the
// ellipsis.
const apigeeGuideTargetServers = `#targetservers.json [ { "name": "mymtlstarget", "description": "An example use mTLS", "host": "foo", "port": 8080, "isEnabled": true, "sSLInfo": { "enabled": true, "clientAuthEnabled": true, "keyStore": "mtls_keystore", "keyAlias": "mtls_alias", "trustStore": "mtls_truststore", "ignoreValidationErrors": false, "protocols": [ "1.2" ], } }, "protocol": "HTTP" }, … ]`

// The guide's configurable proxy operation (GET /foo to mymtlstarget) as
// the README's Keyway Route.
const apigeeGuideRoute = "apiVersion: keyway.dev/v1alpha1\nkind: Route\nmetadata: {name: mtlsoperation}\nspec: {path: /foo, methods: [GET], service: mymtlstarget}\n"

// apigeeUser runs keywayctl in the guide's folder as a user of the README
// does: the services from KEYWAY_SERVER and KEYWAY_SECRETS_SERVER, the
// operator's credentials from the environment, no keywayctl config.
type apigeeUser struct {
	dir string
	env []string
}

func (u apigeeUser) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(harness.Bin(t, "keywayctl"), args...)
	cmd.Dir = u.dir
	cmd.Env = harness.Environ(t, u.env...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if _, ok := errors.AsType[*exec.ExitError](err); !ok {
			t.Fatalf("keywayctl %s: %v", strings.Join(args, " "), err)
		}
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

func (u apigeeUser) write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(u.dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (u apigeeUser) openssl(t *testing.T, script string) {
	t.Helper()
	sh := exec.Command("bash", "-euo", "pipefail", "-c", script)
	sh.Dir = u.dir
	sh.Stdin = strings.NewReader(strings.Repeat("\n", 32)) // Enter at every question
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the guide's openssl commands: %v\n%s", err, out)
	}
}

// apigeeBackend is the guide's mTLS target: it serves my_server.pem (read
// at each handshake, so a reissued certificate is served at once), wants a
// client certificate from RootCA.pem, and answers as the guide's helloworld
// proxy does. It records the SHA-256 of the last client certificate.
type apigeeBackend struct {
	addr   string
	mu     sync.Mutex
	client string
}

func (b *apigeeBackend) lastClient() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.client
}

func startApigeeBackend(t *testing.T, dir string) *apigeeBackend {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(dir, "RootCA.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("RootCA.pem holds no certificate")
	}
	b := &apigeeBackend{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				sum := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
				b.mu.Lock()
				b.client = hex.EncodeToString(sum[:])
				b.mu.Unlock()
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{ "message": "Hello world!" }`)
		}),
		TLSConfig: &tls.Config{
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				c, err := tls.LoadX509KeyPair(filepath.Join(dir, "my_server.pem"), filepath.Join(dir, "my_server.key"))
				return &c, err
			},
			ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs:  pool,
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return b
}

// fingerprintFile is the SHA-256 of the first certificate of a PEM file.
func fingerprintFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:])
}

// TestApigeeGuide follows Apigee's southbound mTLS guide with Keyway: the
// guide's openssl commands as written, its targetservers.json as written
// (refused with each problem at its line and column, in one run, and then
// imported with the deletions those errors name), its keystore, alias and
// truststore stored with keywayctl secrets put in Vault, keywayctl import
// apigee, and a request through the proxy node that reaches the guide's
// backend with mTLS and gets its 200. On the way, the guide's deploy-time
// errors as Keyway reports them: a missing keystore and truststore, a
// missing alias (the guide's own certificate update), an expired
// certificate, and the server certificate whose Common Name is the
// unexpanded "${SERVER_HOST}".
func TestApigeeGuide(t *testing.T) {
	dir := t.TempDir()
	u := apigeeUser{dir: dir}
	u.openssl(t, apigeeGuideOpenSSL)
	// "you should have eight new files in your directory"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range entries {
		files = append(files, e.Name())
	}
	sort.Strings(files)
	if got, want := strings.Join(files, " "), "RootCA.key RootCA.pem my_gateway.csr my_gateway.key my_gateway.pem my_server.csr my_server.key my_server.pem"; got != want {
		t.Fatalf("the guide's commands made %s, want %s", got, want)
	}

	natsURL, _ := harness.NATS(t)
	vault := harness.Vault(t, false)
	secrets := harness.StartSecrets(t, natsURL, []string{"VAULT_TOKEN=" + vaulttest.Token}, "--backend", "vault", "--vault-addr", vault.Addr)
	policyURL, _ := harness.PolicyEnv(t, natsURL, nil, secrets.PolicyArgs(t, "keyway-policy")...)
	px := harness.StartProxyEnv(t, natsURL, "node-1", nil, secrets.ClientArgs(t, "node-1")...)
	u.env = append([]string{"KEYWAY_SERVER=" + policyURL, "KEYWAY_SECRETS_SERVER=" + secrets.URL, "KEYWAYCONFIG=" + filepath.Join(dir, "no-config.yaml")}, harness.Operator(t).Env...)
	backend := startApigeeBackend(t, dir)
	_, port, _ := net.SplitHostPort(backend.addr)

	// The guide's targetservers.json as written: every problem, at its
	// place, in one run; nothing is sent.
	u.write(t, "targetservers.json", apigeeGuideTargetServers)
	_, errOut, code := u.run(t, "import", "apigee", "targetservers.json")
	want := strings.Join([]string{
		"error: targetservers.json:1:1: `#targetservers.json` is a comment, and JSON has no comments: delete it (a guide's excerpt names its file so; the name is not part of the file)",
		`error: targetservers.json:1:335: a ',' before '}' (a trailing comma), which JSON does not allow: delete it`,
		`error: targetservers.json:1:342: "protocol" is a field outside any object: the '}' at 1:339 closed the object that opened at 1:23 before it; delete that '}' (or move the field inside)`,
		`error: targetservers.json:1:364: … stands for "more of the same" in a guide's excerpt, and is not JSON: delete it and the ',' before it (at 1:362)`,
		`error: nothing imported from targetservers.json: 4 problems`,
	}, "\n")
	if code == 0 || strings.TrimSpace(errOut) != want {
		t.Fatalf("import of the guide's file: exit %d\n%s\nwant:\n%s", code, errOut, want)
	}

	// With those deletions, and the guide's placeholders for the backend
	// ("foo", 8080) made this machine's.
	fixed := strings.NewReplacer(
		"#targetservers.json ", "",
		`"1.2" ], } }, "protocol"`, `"1.2" ] }, "protocol"`,
		", … ]", " ]",
		`"host": "foo"`, `"host": "localhost"`,
		`"port": 8080`, `"port": `+port,
	).Replace(apigeeGuideTargetServers)
	u.write(t, "targetservers.json", fixed)
	col := func(s string) int {
		i := strings.Index(fixed, s)
		if i < 0 {
			t.Fatalf("%q is not in %s", s, fixed)
		}
		return i + 1
	}

	// Missing Keystore and Missing Truststore: before Step 2, at the
	// fields that name them, with the command that stores them.
	_, errOut, code = u.run(t, "import", "apigee", "targetservers.json")
	for _, w := range []string{
		fmt.Sprintf(`error: targetservers.json:1:%d: targetServer[0] "mymtlstarget" sSLInfo.keyStore: keystore "mtls_keystore" does not exist in the secrets service`, col(`"mtls_keystore"`)),
		"create it by storing the key pair in it (`keywayctl secrets put --keystore mtls_keystore --alias mtls_alias --cert CERT.pem --key KEY.pem`), or fix the name",
		fmt.Sprintf(`error: targetservers.json:1:%d: targetServer[0] "mymtlstarget" sSLInfo.trustStore: truststore "mtls_truststore" does not exist in the secrets service`, col(`"mtls_truststore"`)),
		"store the CA bundle under that name (`keywayctl secrets put --truststore mtls_truststore --cert CA.pem`), or fix the name",
		"error: nothing applied: 2 problems",
	} {
		if code == 0 || !strings.Contains(errOut, w) {
			t.Errorf("import before the stores exist: exit %d, stderr lacks %q:\n%s", code, w, errOut)
		}
	}
	if strings.Contains(errOut, "PutAlias") || strings.Contains(errOut, "SecretsService") || strings.Contains(errOut, "converted") {
		t.Errorf("the errors name an RPC or the converted YAML:\n%s", errOut)
	}

	// Invalid certificate for alias: an expired one is refused when it is
	// stored, before any deployment.
	expired := testca.New(t, "my-ca").Expired("old-gateway")
	u.write(t, "expired.pem", string(expired.CertPEM))
	u.write(t, "expired.key", string(expired.KeyPEM))
	if _, errOut, code := u.run(t, "secrets", "put", "--keystore", "mtls_keystore", "--alias", "mtls_alias", "--cert", "expired.pem", "--key", "expired.key"); code == 0 || !strings.Contains(errOut, "expired") || !strings.Contains(errOut, "nothing was stored") {
		t.Errorf("secrets put of an expired certificate: exit %d\n%s", code, errOut)
	}

	// Step 2, the Keyway way: the keystore with its alias, and the
	// truststore.
	for _, args := range [][]string{
		{"secrets", "put", "--keystore", "mtls_keystore", "--alias", "mtls_alias", "--cert", "my_gateway.pem", "--key", "my_gateway.key"},
		{"secrets", "put", "--truststore", "mtls_truststore", "--cert", "RootCA.pem"},
	} {
		if out, errOut, code := u.run(t, args...); code != 0 {
			t.Fatalf("keywayctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
	}

	// Step 4: deploy. The guide's server certificate as its command makes
	// it has the Common Name "${SERVER_HOST}", which names no host: the
	// live probe, on by default, refuses the import before anything is
	// stored, and says why.
	out, errOut, code := u.run(t, "import", "apigee", "targetservers.json")
	if code == 0 || !strings.Contains(errOut, "san_mismatch") || !strings.Contains(errOut, `"${SERVER_HOST}" is a shell variable that was never expanded`) || !strings.Contains(errOut, "nothing applied") {
		t.Fatalf("import with the guide's server certificate: exit %d, want the probe's refusal naming ${SERVER_HOST}\n%s%s", code, out, errOut)
	}
	if out, _, code := u.run(t, "get", "services"); code != 0 || strings.Contains(out, "mymtlstarget") {
		t.Fatalf("after a refused import, get services: exit %d\n%s", code, out)
	}

	// As the guide means it: the server certificate for the backend's
	// host. Then Step 4 again, and Step 5: verify.
	u.openssl(t, strings.ReplaceAll(`
openssl req -new -key my_server.key -subj '/CN=${SERVER_HOST}' -out my_server.csr
openssl x509 -req -in my_server.csr -CA RootCA.pem \
  -CAkey RootCA.key -set_serial 01 -out my_server.pem -days 365 -sha256
`, "${SERVER_HOST}", "localhost"))
	out, errOut, code = u.run(t, "import", "apigee", "targetservers.json")
	if code != 0 || !strings.Contains(out, "service/mymtlstarget created") || !strings.Contains(out, "policybinding/mymtlstarget-tls created") {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	u.write(t, "route.yaml", apigeeGuideRoute)
	if out, errOut, code := u.run(t, "apply", "-f", "route.yaml"); code != 0 {
		t.Fatalf("apply of the route: exit %d\n%s%s", code, out, errOut)
	}
	eventually(t, "the guide's backend answers through the node", func() (bool, string) {
		code, body := get(t, px.URL+"/foo")
		return code == http.StatusOK && string(body) == `{ "message": "Hello world!" }`, fmt.Sprintf("%d %s", code, body)
	})
	if got, want := backend.lastClient(), fingerprintFile(t, filepath.Join(dir, "my_gateway.pem")); got != want {
		t.Errorf("the backend saw client certificate %s, want my_gateway.pem (%s)", got, want)
	}

	// Update a certificate for your proxy: a new key pair, the guide's
	// targetservers.json naming "new_mtls_alias". Before the alias is
	// stored: Missing Alias, with the aliases that do exist.
	u.openssl(t, `
openssl genrsa -out my_gateway2.key 2048
openssl req -new -key my_gateway2.key -out my_gateway2.csr
openssl x509 -req -in my_gateway2.csr -CA RootCA.pem \
  -CAkey RootCA.key -set_serial 02 -out my_gateway2.pem -days 365 -sha256
`)
	updated := strings.Replace(fixed, `"keyAlias": "mtls_alias"`, `"keyAlias": "new_mtls_alias"`, 1)
	u.write(t, "targetservers.json", updated)
	_, errOut, code = u.run(t, "import", "apigee", "targetservers.json")
	aliasCol := strings.Index(updated, `"new_mtls_alias"`) + 1
	if w := fmt.Sprintf(`error: targetservers.json:1:%d: targetServer[0] "mymtlstarget" sSLInfo.keyAlias: alias "new_mtls_alias" does not exist in keystore "mtls_keystore" (`, aliasCol); code == 0 || !strings.Contains(errOut, w) ||
		!strings.Contains(errOut, `"mtls_alias"`) || !strings.Contains(errOut, "`keywayctl secrets put --keystore mtls_keystore --alias new_mtls_alias --cert CERT.pem --key KEY.pem`") {
		t.Errorf("import naming an alias not stored: exit %d, want %q and the fix:\n%s", code, w, errOut)
	}
	if out, errOut, code := u.run(t, "secrets", "put", "--keystore", "mtls_keystore", "--alias", "new_mtls_alias", "--cert", "my_gateway2.pem", "--key", "my_gateway2.key"); code != 0 {
		t.Fatalf("secrets put of the new alias: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := u.run(t, "import", "apigee", "targetservers.json"); code != 0 || !strings.Contains(out, "policybinding/mymtlstarget-tls updated") {
		t.Fatalf("import with the new alias: exit %d\n%s%s", code, out, errOut)
	}
	newFP := fingerprintFile(t, filepath.Join(dir, "my_gateway2.pem"))
	eventually(t, "the backend sees the new client certificate", func() (bool, string) {
		code, body := get(t, px.URL+"/foo")
		return code == http.StatusOK && backend.lastClient() == newFP, fmt.Sprintf("%d %s, client %s", code, body, backend.lastClient())
	})
}
