package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	_ "keyway.dev/gen/keyway/policy/v1"
	_ "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/access"
	"keyway.dev/internal/testca"
	"keyway.dev/tests/harness"
)

// outcome is what a caller gets from the access control.
type outcome string

const (
	admitted         outcome = "admitted"         // any answer but the two below
	unauthenticated  outcome = "Unauthenticated"  // 401 for plain HTTP
	permissionDenied outcome = "PermissionDenied" // 403 for plain HTTP
	handshake        outcome = "refused at the TLS handshake"
)

// matrixCaller is one column of the matrix.
type matrixCaller struct {
	name   string
	client *http.Client
	// roles the caller holds; nil for callers with no valid credential.
	roles []access.Role
	// valid says whether the credential is valid at all (an unknown token
	// or no credential is not).
	valid bool
	// refusedTLS: the port does not let it finish the handshake.
	refusedTLS bool
}

// readRoles is who may read: viewer and the roles that include it.
var readRoles = []access.Role{access.Viewer, access.Operator, access.SecretsAdmin}

// needs is, per procedure, the roles that admit a caller, as
// docs/design/secure-by-default.md states them. A procedure missing here
// fails the test: every RPC of the generated services is walked.
var needs = map[string][]access.Role{
	"keyway.policy.v1.PolicyService/Apply":        {access.Operator},
	"keyway.policy.v1.PolicyService/Delete":       {access.Operator},
	"keyway.policy.v1.PolicyService/Get":          readRoles,
	"keyway.policy.v1.PolicyService/List":         readRoles,
	"keyway.policy.v1.PolicyService/ListNodes":    readRoles,
	"keyway.policy.v1.PolicyService/GetRollout":   readRoles,
	"keyway.policy.v1.PolicyService/WatchRollout": readRoles,
	"keyway.policy.v1.PolicyService/History":      readRoles,
	"keyway.policy.v1.PolicyService/ListAudit":    readRoles,
	"keyway.policy.v1.PolicyService/Rollback":     {access.Operator},

	"keyway.secrets.v1.SecretsService/PutAlias":         {access.SecretsAdmin},
	"keyway.secrets.v1.SecretsService/PutTruststore":    {access.SecretsAdmin},
	"keyway.secrets.v1.SecretsService/DeleteAlias":      {access.SecretsAdmin},
	"keyway.secrets.v1.SecretsService/DeleteTruststore": {access.SecretsAdmin},
	"keyway.secrets.v1.SecretsService/GetAlias":         readRoles,
	"keyway.secrets.v1.SecretsService/GetTruststore":    readRoles,
	"keyway.secrets.v1.SecretsService/ListKeystores":    readRoles,
	"keyway.secrets.v1.SecretsService/ListTruststores":  readRoles,

	"keyway.secrets.v1.MaterialService/FetchAlias":      {access.Node},
	"keyway.secrets.v1.MaterialService/FetchTruststore": {access.Node},
}

// anyAuthenticated marks paths any caller with a valid credential may use.
var anyAuthenticated = []access.Role{"*"}

// TestAuthorisationMatrix calls every RPC of PolicyService, SecretsService
// and MaterialService, and every path of the APIs and of a node's admin
// port, through the real binaries, as every role, with no credential, with
// a certificate from another CA and with a wrong token, and checks the
// answer: Unauthenticated, PermissionDenied, or admitted.
func TestAuthorisationMatrix(t *testing.T) {
	natsURL, _ := harness.NATS(t)
	secrets := harness.StartSecrets(t, natsURL, nil)
	policyURL, _ := harness.Policy(t, natsURL, append([]string{"--secrets-server", secrets.URL}, secrets.ClientArgs(t, harness.PolicyCN)...)...)
	px := harness.StartProxy(t, natsURL, "matrix-1", "--pprof")
	pki := harness.Suite(t)

	// The APIs' callers: certificates from the operator CA and tokens,
	// per role; a certificate the policy binds to nothing; nothing; a
	// certificate from another CA; a token the policy does not list.
	var api []matrixCaller
	for _, r := range access.Roles {
		api = append(api,
			matrixCaller{name: string(r) + " (certificate)", client: harness.CallerWith(t, r).HTTP, roles: []access.Role{r}, valid: true},
			matrixCaller{name: string(r) + " (token)", client: harness.TokenClient(t, pki.Tokens[r]), roles: []access.Role{r}, valid: true})
	}
	api = append(api,
		matrixCaller{name: "no role", client: harness.CallerWith(t, harness.NoRole).HTTP, valid: true},
		matrixCaller{name: "no credential", client: harness.Anonymous(t)},
		matrixCaller{name: "another CA", client: harness.Stranger(t).HTTP},
		matrixCaller{name: "wrong token", client: harness.TokenClient(t, "not-a-token-anyone-was-given")})

	// MaterialService's port asks for a certificate from the internal CA:
	// per role one from there (same SPIFFE IDs), one bound to nothing;
	// everyone else is refused at the handshake.
	internal := func(name string) *http.Client {
		u, _ := url.Parse(harness.TrustDomain + name)
		kp := secrets.InternalCA.Issue(testca.Options{CommonName: "internal " + name, URIs: []*url.URL{u}})
		return tlsClient(&tls.Config{RootCAs: pki.Pool(), Certificates: []tls.Certificate{kp.TLS}})
	}
	var material []matrixCaller
	for _, r := range access.Roles {
		material = append(material, matrixCaller{name: string(r) + " (internal certificate)", client: internal(string(r)), roles: []access.Role{r}, valid: true})
	}
	material = append(material,
		matrixCaller{name: "no role (internal certificate)", client: internal(harness.NoRole), valid: true},
		matrixCaller{name: "operator (operator CA certificate)", client: harness.Operator(t).HTTP, refusedTLS: true},
		matrixCaller{name: "no credential", client: harness.Anonymous(t), refusedTLS: true},
		matrixCaller{name: "another CA", client: harness.Stranger(t).HTTP, refusedTLS: true},
		matrixCaller{name: "wrong token", client: harness.TokenClient(t, "not-a-token-anyone-was-given"), refusedTLS: true})

	cases := 0
	services := []struct {
		service, base string
		callers       []matrixCaller
	}{
		{"keyway.policy.v1.PolicyService", policyURL, api},
		{"keyway.secrets.v1.SecretsService", secrets.URL, api},
		{"keyway.secrets.v1.MaterialService", secrets.InternalURL, material},
	}
	for _, s := range services {
		for _, m := range serviceMethods(t, s.service) {
			procedure := s.service + "/" + string(m.Name())
			roles, ok := needs[procedure]
			if !ok {
				t.Errorf("%s is served but not in the matrix: add the roles the design gives it to needs", procedure)
				continue
			}
			for _, protocol := range []string{"connect", "grpc"} {
				for _, c := range s.callers {
					want := expect(c, roles)
					got, detail := callRPC(s.base, procedure, m.IsStreamingServer(), protocol, c.client)
					cases++
					if got != want {
						t.Errorf("%s %s as %s: %s (%s), want %s", protocol, procedure, c.name, got, detail, want)
					}
				}
			}
		}
	}
	// The plain paths every API serves, and the node's admin port.
	paths := []struct {
		base, path string
		roles      []access.Role // nil: open to anyone
	}{
		{policyURL, "/healthz", nil},
		{policyURL, "/metrics", readRoles},
		{policyURL, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", anyAuthenticated},
		{secrets.URL, "/healthz", nil},
		{secrets.URL, "/metrics", readRoles},
		{secrets.URL, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", anyAuthenticated},
		{px.AdminURL, "/healthz", nil},
		{px.AdminURL, "/status", readRoles},
		{px.AdminURL, "/metrics", readRoles},
		{px.AdminURL, "/debug/pprof/cmdline", []access.Role{access.Operator}},
		{policyURL, "/keyway.policy.v1.PolicyService/Drop", []access.Role{}}, // unknown: no one
	}
	for _, p := range paths {
		for _, c := range api {
			want := admitted
			if p.roles != nil {
				want = expect(c, p.roles)
			}
			got, detail := getPath(p.base+p.path, c.client)
			cases++
			if got != want {
				t.Errorf("GET %s%s as %s: %s (%s), want %s", p.base, p.path, c.name, got, detail, want)
			}
		}
	}
	t.Logf("authorisation matrix: %d cases (%d procedures and %d paths, Connect and gRPC for procedures)", cases, len(needs), len(paths))
	fmt.Printf("authorisation matrix: %d cases\n", cases)
}

// expect is what caller c must get from a procedure that roles admit.
func expect(c matrixCaller, roles []access.Role) outcome {
	switch {
	case c.refusedTLS:
		return handshake
	case !c.valid:
		return unauthenticated
	}
	for _, need := range roles {
		if need == "*" {
			return admitted
		}
		for _, held := range c.roles {
			if held == need {
				return admitted
			}
		}
	}
	return permissionDenied
}

func serviceMethods(t *testing.T, service string) []protoreflect.MethodDescriptor {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		t.Fatalf("%s: %v", service, err)
	}
	sd := d.(protoreflect.ServiceDescriptor)
	var out []protoreflect.MethodDescriptor
	for i := range sd.Methods().Len() {
		out = append(out, sd.Methods().Get(i))
	}
	return out
}

// callRPC calls procedure with an empty request (valid bytes for any
// message) and classifies the answer.
func callRPC(base, procedure string, stream bool, protocol string, hc *http.Client) (outcome, string) {
	timeout := 5 * time.Second
	if stream {
		// An admitted watch waits for a change: its deadline passing
		// means it was admitted (a refusal comes at once).
		timeout = 1500 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var opts []connect.ClientOption
	if protocol == "grpc" {
		opts = append(opts, connect.WithGRPC())
	}
	c := connect.NewClient[emptypb.Empty, emptypb.Empty](hc, base+"/"+procedure, opts...)
	var err error
	if stream {
		var s *connect.ServerStreamForClient[emptypb.Empty]
		if s, err = c.CallServerStream(ctx, connect.NewRequest(&emptypb.Empty{})); err == nil {
			if !s.Receive() {
				err = s.Err()
			}
			s.Close()
		}
	} else {
		_, err = c.CallUnary(ctx, connect.NewRequest(&emptypb.Empty{}))
	}
	return classify(err)
}

func classify(err error) (outcome, string) {
	if err == nil {
		return admitted, "ok"
	}
	msg := err.Error()
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated:
		return unauthenticated, msg
	case connect.CodePermissionDenied:
		return permissionDenied, msg
	}
	// With TLS 1.3 the client learns that the server refused its
	// certificate (or its lack of one) after its side of the handshake:
	// as an alert, or as the connection closing under its first write.
	for _, s := range []string{"tls:", "x509:", "broken pipe", "connection reset", "client conn could not be established", "EOF"} {
		if strings.Contains(msg, s) {
			return handshake, msg
		}
	}
	return admitted, connect.CodeOf(err).String() + ": " + msg
}

// getPath asks a plain path and classifies the status: 401, 403, anything else.
func getPath(rawURL string, hc *http.Client) (outcome, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return classify(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	resp.Body.Close()
	detail := fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return unauthenticated, detail
	case http.StatusForbidden:
		return permissionDenied, detail
	}
	return admitted, detail
}

func tlsClient(cfg *tls.Config) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = cfg
	t.ForceAttemptHTTP2 = true
	return &http.Client{Transport: t}
}

// --insecure-no-auth exists only on loopback: every binary refuses to
// serve without authentication on another address, and says so; on
// loopback it serves plain h2c and warns at start. Without it and without
// TLS flags, a service refuses to start and names the flags.
func TestInsecureNoAuthIsLoopbackOnly(t *testing.T) {
	natsURL, _ := harness.NATS(t)
	_, port, _ := strings.Cut(harness.FreeAddr(t), ":")
	for _, tc := range []struct {
		bin  string
		args []string
	}{
		{"keyway-policy", []string{"--nats", natsURL, "--listen", "0.0.0.0:" + port}},
		{"keyway-secrets", []string{"--nats", natsURL, "--listen", "0.0.0.0:" + port, "--internal-listen", "", "--dir", t.TempDir()}},
		{"keyway-proxy", []string{"--nats", natsURL, "--listen", harness.FreeAddr(t), "--admin-listen", "0.0.0.0:" + port, "--node-id", "n1"}},
	} {
		_, stderr, code := harness.Run(t, harness.Bin(t, tc.bin), append(tc.args, "--insecure-no-auth")...)
		if code == 0 || !strings.Contains(stderr, `--insecure-no-auth serves without authentication and binds loopback only, not "0.0.0.0:`+port+`"`) {
			t.Errorf("%s --insecure-no-auth on 0.0.0.0: exit %d, %s", tc.bin, code, stderr)
		}
		_, stderr, code = harness.Run(t, harness.Bin(t, tc.bin), tc.args...)
		if code == 0 || !strings.Contains(stderr, "give --tls-cert, --tls-key, --client-ca and --access-policy") {
			t.Errorf("%s without TLS flags: exit %d, %s", tc.bin, code, stderr)
		}
	}
	// On loopback: served, plain, with the warning.
	url, p := harness.Policy(t, natsURL, "--insecure-no-auth")
	if !strings.HasPrefix(url, "http://") || !strings.Contains(p.Output(), "authentication is off (--insecure-no-auth)") {
		t.Errorf("policy service with --insecure-no-auth on loopback: %s\n%s", url, p.Output())
	}
	if out, errOut, code := harness.Run(t, harness.Bin(t, "keywayctl"), "--server", url, "get", "services"); code != 0 {
		t.Errorf("keywayctl against --insecure-no-auth: exit %d, %s%s", code, out, errOut)
	}
}
