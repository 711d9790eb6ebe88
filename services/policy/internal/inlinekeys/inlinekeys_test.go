package inlinekeys_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testca"
	"keyway.dev/policy/internal/inlinekeys"
)

func TestAliasNames(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "CA")
	a, b := ca.Client("a"), ca.Client("b")
	long := strings.Repeat("x", 64)
	tests := []struct {
		name       string
		kind, res  string
		key        []byte
		wantPrefix string
	}{
		{"binding", model.KindPolicyBinding, "orders-mtls", a.Cert.RawSubjectPublicKeyInfo, "pb-orders-mtls-"},
		{"listener", model.KindListener, "public", a.Cert.RawSubjectPublicKeyInfo, "lst-public-"},
		{"longest name", model.KindListener, long, b.Cert.RawSubjectPublicKeyInfo, "lst-" + long[:38] + "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := inlinekeys.AliasName(tt.kind, tt.res, tt.key)
			if err := secretref.CheckName(got); err != nil {
				t.Errorf("%q breaks the secrets service's rules: %v", got, err)
			}
			if !strings.HasPrefix(got, tt.wantPrefix) {
				t.Errorf("%q, want prefix %q", got, tt.wantPrefix)
			}
			if again := inlinekeys.AliasName(tt.kind, tt.res, tt.key); again != got {
				t.Errorf("not deterministic: %q then %q", got, again)
			}
		})
	}
	if inlinekeys.AliasName(model.KindPolicyBinding, "x", a.Cert.RawSubjectPublicKeyInfo) == inlinekeys.AliasName(model.KindPolicyBinding, "x", b.Cert.RawSubjectPublicKeyInfo) {
		t.Error("two keys share an alias")
	}
	// Names that differ only past the cut still get different aliases.
	if inlinekeys.AliasName(model.KindListener, long+"a", a.Cert.RawSubjectPublicKeyInfo) == inlinekeys.AliasName(model.KindListener, long+"b", a.Cert.RawSubjectPublicKeyInfo) {
		t.Error("two long names share an alias")
	}
}

func TestFindReplaceRefs(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "CA")
	gw, srv := ca.Client("gw"), ca.Server("api.example.com")
	cfg, err := structpb.NewStruct(map[string]any{"trustedCA": string(ca.CertPEM()),
		"certificate": map[string]any{"key": string(gw.KeyPEM), "crt": string(gw.CertPEM)}})
	if err != nil {
		t.Fatal(err)
	}
	pb := &policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
		Metadata: &policyv1.ObjectMeta{Name: "orders-mtls"},
		Spec:     &policyv1.PolicyBindingSpec{PolicyRef: &policyv1.PolicyRef{Name: "tls-outbound"}, Config: cfg},
	}}}
	// Two hosts, one key, two chains (the second with the CA appended):
	// two aliases.
	lst := &policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
		Metadata: &policyv1.ObjectMeta{Name: "public"},
		Spec: &policyv1.ListenerSpec{Hosts: []*policyv1.ListenerHost{
			{Certificate: &policyv1.KeyPair{Crt: string(srv.CertPEM), Key: string(srv.KeyPEM)}},
			{Certificate: &policyv1.KeyPair{Crt: string(srv.CertPEM) + string(ca.CertPEM()), Key: string(srv.KeyPEM)}},
			{Certificate: &policyv1.KeyPair{Keystore: "edge", Alias: "api"}},
		}},
	}}}
	for _, tc := range []struct {
		r      *policyv1.Resource
		kind   string
		server bool
		n      int
	}{{pb, model.KindPolicyBinding, false, 1}, {lst, model.KindListener, true, 2}} {
		pairs := inlinekeys.Find(tc.r)
		if len(pairs) != tc.n {
			t.Fatalf("%s: %d pairs, want %d", tc.kind, len(pairs), tc.n)
		}
		refs, err := inlinekeys.Plan(tc.kind, "x", pairs)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[secretref.Ref]bool{}
		for i, p := range pairs {
			if p.Server != tc.server {
				t.Errorf("%s %s: server %v, want %v", tc.kind, p.Field, p.Server, tc.server)
			}
			if seen[refs[i]] {
				t.Errorf("%s: two pairs share %v", tc.kind, refs[i])
			}
			seen[refs[i]] = true
			p.Replace(refs[i])
		}
		if got := inlinekeys.Find(tc.r); len(got) != 0 {
			t.Errorf("%s: %d inline pairs left after Replace", tc.kind, len(got))
		}
		moved := inlinekeys.Refs(tc.r)
		if len(moved) != tc.n {
			t.Errorf("%s: Refs found %d, want %d (and not the operator's own edge/api)", tc.kind, len(moved), tc.n)
		}
		if strings.Contains(tc.r.String(), "PRIVATE KEY") {
			t.Errorf("%s: a key is left in the resource", tc.kind)
		}
	}
}
