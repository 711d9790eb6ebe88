package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/access"
	"keyway.dev/internal/testca"
)

// secured serves the fake behind the real access control over TLS, and
// returns its URL and the files of a viewer's certificate, an operator's
// token and the server CA.
type securedFiles struct {
	url, ca, viewerCert, viewerKey, operatorToken string
}

func (f *fakePolicyService) serveSecured(t *testing.T) securedFiles {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	serverCA, operatorCA := testca.New(t, "server CA"), testca.New(t, "operator CA")
	srvCert := serverCA.Server("localhost")
	id, _ := url.Parse("spiffe://test/viewer")
	viewer := operatorCA.Issue(testca.Options{CommonName: "viewer", URIs: []*url.URL{id}})
	token := "operator-token"
	policy := fmt.Sprintf("apiVersion: keyway.dev/v1alpha1\nkind: AccessPolicy\nspec:\n  bindings:\n"+
		"    - {role: viewer, subjects: [{spiffeID: 'spiffe://test/viewer'}]}\n"+
		"    - {role: operator, subjects: [{tokenSHA256: %s}]}\n", access.TokenDigest(token))
	opts := access.Options{CertFile: write("s.crt", srvCert.CertPEM), KeyFile: write("s.key", srvCert.KeyPEM),
		ClientCAFile: write("op-ca.crt", operatorCA.CertPEM()), PolicyFile: write("policy.yaml", []byte(policy))}
	srv, err := access.NewServer(opts, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(policyv1connect.NewPolicyServiceHandler(f))
	hs := &http.Server{Handler: srv.Handler(access.PolicyAPI(), mux), Protocols: srv.Protocols()}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return securedFiles{url: "https://" + ln.Addr().String(), ca: write("ca.crt", serverCA.CertPEM()),
		viewerCert: write("v.crt", viewer.CertPEM), viewerKey: write("v.key", viewer.KeyPEM), operatorToken: write("op.token", []byte(token+"\n"))}
}

func TestCredentialsReachTheServiceAndRefusalsSayWhatToDo(t *testing.T) {
	t.Parallel()
	f := &fakePolicyService{}
	s := f.serveSecured(t)
	manifest := filepath.Join(t.TempDir(), "svc.yaml")
	if err := os.WriteFile(manifest, []byte(appYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(env map[string]string, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := Run(context.Background(), args, IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
		return errOut.String(), err
	}
	viewer := []string{"--ca", s.ca, "--cert", s.viewerCert, "--key", s.viewerKey}
	for _, protocol := range []string{"connect", "grpc"} {
		cases := []struct {
			name string
			env  map[string]string
			args []string
			ok   bool
			want string
		}{
			{"no credential", nil, []string{"--ca", s.ca, "get", "svc"}, false, "does not know who you are: no credential"},
			{"untrusted server", nil, []string{"get", "svc"}, false, "is not signed by a CA keywayctl trusts: give --ca (env KEYWAY_CA)"},
			{"viewer reads", nil, append(append([]string{}, viewer...), "get", "svc"), true, ""},
			{"viewer by env", map[string]string{CAEnv: s.ca, CertEnv: s.viewerCert, KeyEnv: s.viewerKey}, []string{"get", "svc"}, true, ""},
			{"viewer writes", nil, append(append([]string{}, viewer...), "apply", "-f", manifest), false, "permission denied by the policy service: /keyway.policy.v1.PolicyService/Apply needs the operator role; you are spiffe://test/viewer (certificate)"},
			{"operator token writes", nil, []string{"--ca", s.ca, "--token-file", s.operatorToken, "apply", "-f", manifest}, true, ""},
			{"half a key pair", nil, []string{"--ca", s.ca, "--cert", s.viewerCert, "get", "svc"}, false, "has no key: give --key"},
			{"token over http", nil, []string{"--server", strings.Replace(s.url, "https", "http", 1), "--token-file", s.operatorToken, "get", "svc"}, false, "a bearer token would cross the network in the clear"},
		}
		for _, tc := range cases {
			t.Run(protocol+"/"+tc.name, func(t *testing.T) {
				args := append([]string{"--protocol", protocol}, tc.args...)
				if !strings.Contains(strings.Join(args, " "), "--server") {
					args = append([]string{"--server", s.url}, args...)
				}
				stderr, err := run(tc.env, args...)
				if tc.ok != (err == nil) || !strings.Contains(stderr, tc.want) {
					t.Errorf("keywayctl %s: %v\n%s\nwant ok=%v and %q", strings.Join(args, " "), err, stderr, tc.ok, tc.want)
				}
			})
		}
	}
}
