package access_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"keyway.dev/internal/access"
	"keyway.dev/internal/testca"
)

const goodPolicy = `apiVersion: keyway.dev/v1alpha1
kind: AccessPolicy
metadata: {name: default}
spec:
  bindings:
    - role: operator
      subjects:
        - spiffeID: spiffe://keyway.local/operator
        - cn: ci-bot
        - tokenSHA256: %s
    - role: viewer
      subjects:
        - ou: auditors
`

func TestParsePolicyGivesRoles(t *testing.T) {
	t.Parallel()
	token := "s3cret-token"
	p, err := access.ParsePolicy([]byte(strings.Replace(goodPolicy, "%s", access.TokenDigest(token), 1)))
	if err != nil {
		t.Fatal(err)
	}
	ca := testca.New(t, "operator CA")
	id, _ := url.Parse("spiffe://keyway.local/operator")
	cases := []struct {
		name string
		opts testca.Options
		want string
	}{
		{"spiffe", testca.Options{CommonName: "x", URIs: []*url.URL{id}}, "operator"},
		{"cn", testca.Options{CommonName: "ci-bot"}, "operator"},
		{"ou", testca.Options{CommonName: "y", OU: []string{"auditors"}}, "viewer"},
		{"both", testca.Options{CommonName: "ci-bot", OU: []string{"auditors"}}, "viewer,operator"},
		{"nobody", testca.Options{CommonName: "mallory"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := join(p.CertificateRoles(ca.Issue(tc.opts).Cert))
			if got != tc.want {
				t.Errorf("roles %q, want %q", got, tc.want)
			}
		})
	}
	if roles, ok := p.TokenRoles(token); !ok || join(roles) != "operator" {
		t.Errorf("token roles %v %v, want operator", roles, ok)
	}
	if _, ok := p.TokenRoles("s3cret-tokem"); ok {
		t.Error("a wrong token is known")
	}
	// The same policy as JSON.
	js := `{"apiVersion":"keyway.dev/v1alpha1","kind":"AccessPolicy","spec":{"bindings":[{"role":"node","subjects":[{"cn":"proxy-node"}]}]}}`
	jp, err := access.ParsePolicy([]byte(js))
	if err != nil || join(jp.CertificateRoles(ca.Client("proxy-node").Cert)) != "node" {
		t.Errorf("JSON policy: %v", err)
	}
}

func join(roles []access.Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}

func TestParsePolicyRefusesWithFieldAndFix(t *testing.T) {
	t.Parallel()
	head := "apiVersion: keyway.dev/v1alpha1\nkind: AccessPolicy\nspec:\n  bindings:\n"
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"empty", "", []string{"the file is empty"}},
		{"not yaml", "{", []string{"not YAML or JSON"}},
		{"api version", "apiVersion: v1\nkind: AccessPolicy\nspec: {bindings: []}\n", []string{`apiVersion: "v1" is not supported; write apiVersion: keyway.dev/v1alpha1`}},
		{"kind", "apiVersion: keyway.dev/v1alpha1\nkind: Route\nspec: {bindings: []}\n", []string{`kind: "Route" is not an access policy`}},
		{"no spec", "apiVersion: keyway.dev/v1alpha1\nkind: AccessPolicy\n", []string{"spec: is missing"}},
		{"unknown top field", "apiVersion: keyway.dev/v1alpha1\nkind: AccessPolicy\nspecs: {}\n", []string{`specs: unknown field "specs"`, `did you mean "spec"?`}},
		{"unknown role", head + "    - role: admin\n      subjects: [{cn: a}]\n", []string{`spec.bindings[0].role: "admin" is not a role; give one of viewer, operator, secrets-admin, node`}},
		{"near role", head + "    - role: secretsadmin\n      subjects: [{cn: a}]\n", []string{`did you mean "secrets-admin"?`}},
		{"no subjects", head + "    - role: viewer\n", []string{"spec.bindings[0].subjects: is empty"}},
		{"unknown subject field", head + "    - role: viewer\n      subjects: [{commonName: a}]\n", []string{`spec.bindings[0].subjects[0].commonName: unknown field "commonName"`}},
		{"two fields", head + "    - role: viewer\n      subjects: [{cn: a, ou: b}]\n", []string{"spec.bindings[0].subjects[0]: the subject sets cn and ou"}},
		{"raw token", head + "    - role: viewer\n      subjects: [{tokenSHA256: hunter2}]\n", []string{"spec.bindings[0].subjects[0].tokenSHA256: is 7 characters long", "sha256sum"}},
		{"bad spiffe", head + "    - role: viewer\n      subjects: [{spiffeID: 'spiffe://Keyway.local/x'}]\n", []string{"spec.bindings[0].subjects[0].spiffeID", "uppercase"}},
		{"cn as dn", head + "    - role: viewer\n      subjects: [{cn: 'CN=ops'}]\n", []string{"spec.bindings[0].subjects[0].cn", `write "ops"`}},
		{"all at once", head + "    - role: admin\n      subjects: [{cm: a}]\n", []string{"spec.bindings[0].role", "spec.bindings[0].subjects[0].cm"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := access.ParsePolicy([]byte(tc.doc))
			var ve *access.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v, want a ValidationError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
