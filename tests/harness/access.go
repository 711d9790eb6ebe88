package harness

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"keyway.dev/internal/access"
	"keyway.dev/internal/devca"
	"keyway.dev/internal/testca"
)

// SPIFFE IDs of the suite's callers, one per role, and of a caller that
// holds none.
const (
	TrustDomain = "spiffe://keyway.test/"
	NoRole      = "norole"
)

// PolicyCN and NodeOU are how the access policy recognises the services'
// own identities (certificates from the internal CA): keyway-policy holds
// viewer and secrets-admin on the secrets API and node on MaterialService;
// any certificate with OU keyway-node holds node.
const (
	PolicyCN = "keyway-policy"
	NodeOU   = "keyway-node"
)

// PKI is the suite's certificates and access policy, made once per test
// binary: every service the harness starts serves its API with them.
type PKI struct {
	Dir string
	// ServerCA issues the services' API certificates and the secrets
	// service's internal certificates (server and clients): callers trust
	// it for every API.
	ServerCA *devca.CA
	// OperatorCA issues callers' certificates; OtherCA is trusted by no
	// service.
	OperatorCA, OtherCA *devca.CA
	// Files: ServerCAFile is the ServerCA's certificate, OperatorCAFile
	// the policy service's and proxy admin's --client-ca,
	// SecretsClientCAFile the secrets API's (operator and internal CA),
	// PolicyFile the access policy.
	ServerCAFile, OperatorCAFile, SecretsClientCAFile, PolicyFile string
	// ServerCert and ServerKey are the APIs' certificate: 127.0.0.1, ::1
	// and localhost.
	ServerCert, ServerKey string
	// Tokens are bearer tokens, one per role, listed (as digests) in the
	// policy.
	Tokens map[access.Role]string

	mu      sync.Mutex
	callers map[string]*Caller
}

var (
	suiteOnce sync.Once
	suite     *PKI
	suiteErr  error
)

// Suite is the suite's PKI, made at the first call.
func Suite(tb testing.TB) *PKI {
	tb.Helper()
	suiteOnce.Do(func() { suite, suiteErr = makePKI() })
	if suiteErr != nil {
		tb.Fatalf("harness: making the suite PKI: %v", suiteErr)
	}
	return suite
}

func makePKI() (*PKI, error) {
	dir, err := os.MkdirTemp("", "keyway-pki-")
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, Tokens: map[access.Role]string{}, callers: map[string]*Caller{}}
	if p.ServerCA, err = devca.New("keyway internal CA"); err != nil {
		return nil, err
	}
	if p.OperatorCA, err = devca.New("keyway operator CA"); err != nil {
		return nil, err
	}
	if p.OtherCA, err = devca.New("someone else's CA"); err != nil {
		return nil, err
	}
	server, err := p.ServerCA.Issue(devca.Options{CommonName: "keyway-api", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
	if err != nil {
		return nil, err
	}
	policy := "apiVersion: keyway.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: test-suite}\nspec:\n  bindings:\n"
	for _, role := range access.Roles {
		token := fmt.Sprintf("test-token-%s-%d", role, time.Now().UnixNano())
		p.Tokens[role] = token
		policy += fmt.Sprintf("    - role: %s\n      subjects:\n        - spiffeID: %s%s\n        - tokenSHA256: %s\n", role, TrustDomain, role, access.TokenDigest(token))
		switch role {
		case access.Operator:
			// The operator of keywayctl and buf curl in the tests holds
			// every role but node, as `make run`'s does.
		case access.Node:
			policy += fmt.Sprintf("        - cn: %s\n        - ou: %s\n", PolicyCN, NodeOU)
		default:
			policy += fmt.Sprintf("        - cn: %s\n", PolicyCN)
		}
		if role != access.Node {
			policy += fmt.Sprintf("        - spiffeID: %soperator-all\n", TrustDomain)
		}
	}
	join := func(pems ...[]byte) []byte { return slices.Concat(pems...) }
	files := map[string][]byte{
		"server-ca.crt":         p.ServerCA.CertPEM(),
		"operator-ca.crt":       p.OperatorCA.CertPEM(),
		"secrets-client-ca.crt": join(p.OperatorCA.CertPEM(), p.ServerCA.CertPEM()),
		"access-policy.yaml":    []byte(policy),
		"api.crt":               server.CertPEM,
		"api.key":               server.KeyPEM,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	if _, err := access.LoadPolicy(filepath.Join(dir, "access-policy.yaml")); err != nil {
		return nil, fmt.Errorf("the suite's access policy: %w", err)
	}
	p.ServerCAFile, p.OperatorCAFile = filepath.Join(dir, "server-ca.crt"), filepath.Join(dir, "operator-ca.crt")
	p.SecretsClientCAFile, p.PolicyFile = filepath.Join(dir, "secrets-client-ca.crt"), filepath.Join(dir, "access-policy.yaml")
	p.ServerCert, p.ServerKey = filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	return p, nil
}

// ServerArgs are the flags that serve an API with the suite's
// certificate, clientCA and access policy.
func (p *PKI) ServerArgs(clientCA string) []string {
	return []string{"--tls-cert", p.ServerCert, "--tls-key", p.ServerKey, "--client-ca", clientCA, "--access-policy", p.PolicyFile}
}

// Pool is a pool holding the ServerCA: what callers trust.
func (p *PKI) Pool() *x509.CertPool { return p.ServerCA.Pool() }

// Caller is an identity that calls the APIs: its certificate files and
// what each client needs to present them.
type Caller struct {
	// ID is the certificate's SPIFFE ID.
	ID string
	// CertFile and KeyFile are the client certificate and key; CAFile
	// the CA of the services' certificates.
	CertFile, KeyFile, CAFile string
	// TLS is the client configuration (trusts the suite's server CA,
	// presents the certificate, h2 and http/1.1 by ALPN).
	TLS *tls.Config
	// HTTP is an HTTP client with TLS (keep-alive, HTTP/2 when the server
	// offers it).
	HTTP *http.Client
	// Args are keywayctl's flags (--ca, --cert, --key); Env the same as
	// environment variables (KEYWAY_CA, KEYWAY_CERT, KEYWAY_KEY), for
	// `keywayctl secrets put`, whose --cert and --key are the alias's.
	Args, Env []string
	// BufArgs are buf curl's flags (--cacert, --cert, --key); CurlArgs
	// curl's.
	BufArgs, CurlArgs []string
}

// Operator is the suite's operator: viewer, operator and secrets-admin,
// as `make run`'s operator.
func Operator(tb testing.TB) *Caller {
	tb.Helper()
	return Suite(tb).caller(tb, "operator-all", Suite(tb).OperatorCA)
}

// CallerWith is a caller whose certificate (from the operator CA) the
// access policy binds to role alone; [NoRole] gives one it binds to
// nothing.
func CallerWith(tb testing.TB, role access.Role) *Caller {
	tb.Helper()
	return Suite(tb).caller(tb, string(role), Suite(tb).OperatorCA)
}

// Stranger is a caller whose certificate comes from a CA no service
// trusts.
func Stranger(tb testing.TB) *Caller {
	tb.Helper()
	return Suite(tb).caller(tb, "stranger", Suite(tb).OtherCA)
}

// Anonymous is a client that trusts the services but presents no
// credential.
func Anonymous(tb testing.TB) *http.Client {
	tb.Helper()
	return httpClient(&tls.Config{RootCAs: Suite(tb).Pool(), MinVersion: tls.VersionTLS12})
}

// TokenClient is a client that presents token as a bearer token.
func TokenClient(tb testing.TB, token string) *http.Client {
	tb.Helper()
	c := Anonymous(tb)
	c.Transport = bearer{token: token, next: c.Transport}
	return c
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func httpClient(cfg *tls.Config) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	t.ForceAttemptHTTP2 = true
	t.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: t}
}

func (p *PKI) caller(tb testing.TB, name string, ca *devca.CA) *Caller {
	tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.callers[name]; ok {
		return c
	}
	id := TrustDomain + name
	u, _ := url.Parse(id)
	kp := testca.From(tb, ca).Issue(testca.Options{CommonName: "test " + name, URIs: []*url.URL{u}})
	c := &Caller{ID: id, CertFile: filepath.Join(p.Dir, name+".crt"), KeyFile: filepath.Join(p.Dir, name+".key"), CAFile: p.ServerCAFile}
	for f, data := range map[string][]byte{c.CertFile: kp.CertPEM, c.KeyFile: kp.KeyPEM} {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	c.TLS = &tls.Config{RootCAs: p.Pool(), Certificates: []tls.Certificate{kp.TLS}, MinVersion: tls.VersionTLS12}
	c.HTTP = httpClient(c.TLS)
	c.Args = []string{"--ca", c.CAFile, "--cert", c.CertFile, "--key", c.KeyFile}
	c.Env = []string{"KEYWAY_CA=" + c.CAFile, "KEYWAY_CERT=" + c.CertFile, "KEYWAY_KEY=" + c.KeyFile}
	c.BufArgs = []string{"--cacert", c.CAFile, "--cert", c.CertFile, "--key", c.KeyFile}
	c.CurlArgs = c.BufArgs
	p.callers[name] = c
	return c
}

// serverArgs adds the suite's TLS and access flags to a service's
// arguments, unless they ask for --insecure-no-auth; it returns the
// arguments and the API's URL scheme.
func serverArgs(tb testing.TB, clientCA func(*PKI) string, args []string) ([]string, string) {
	tb.Helper()
	if slices.Contains(args, "--insecure-no-auth") {
		return args, "http"
	}
	p := Suite(tb)
	return append(p.ServerArgs(clientCA(p)), args...), "https"
}

// client is the HTTP client that reaches url: TLS trusting the suite's
// server CA for https, the default client for http.
func client(tb testing.TB, rawURL string) *http.Client {
	if strings.HasPrefix(rawURL, "https://") {
		return Anonymous(tb)
	}
	return http.DefaultClient
}
