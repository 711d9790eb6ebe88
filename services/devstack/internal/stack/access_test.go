package stack

import (
	"crypto/tls"
	"path/filepath"
	"slices"
	"testing"

	"keyway.dev/internal/access"
)

// The stack's access policy gives the operator viewer, operator and
// secrets-admin; the policy service viewer, secrets-admin and node; a
// proxy node node alone.
func TestAccessPolicyRoles(t *testing.T) {
	data := t.TempDir()
	p, err := loadOrMakePKI(filepath.Join(data, "pki"), data)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := access.LoadPolicy(p.access.policyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(crt, key string) []access.Role {
		pair, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			t.Fatal(err)
		}
		return policy.CertificateRoles(pair.Leaf)
	}
	for _, tc := range []struct {
		name     string
		crt, key string
		want     []access.Role
	}{
		{"operator", p.access.operatorCert, p.access.operatorKey, []access.Role{access.Viewer, access.Operator, access.SecretsAdmin}},
		{"policy service", p.access.policyClientCert, p.access.policyClientKey, []access.Role{access.Viewer, access.SecretsAdmin, access.Node}},
		{"proxy node", p.nodeCert, p.nodeKey, []access.Role{access.Node}},
	} {
		if got := leaf(tc.crt, tc.key); !slices.Equal(got, tc.want) {
			t.Errorf("%s holds %v, want %v", tc.name, got, tc.want)
		}
	}
}
