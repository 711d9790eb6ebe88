package cli

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// get says where a key applied inline went, on stderr, and leaves stdout as
// apply reads it.
func TestGetNotesMovedKeys(t *testing.T) {
	t.Parallel()
	rs := stored(t)
	cert, err := structpb.NewValue(map[string]any{"keystore": "keyway-inline", "alias": "pb-orders-mtls-0123456789ab"})
	if err != nil {
		t.Fatal(err)
	}
	rs[3].GetPolicyBinding().Spec.Config.Fields["certificate"] = cert
	rs = append(rs, &policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
		Metadata: &policyv1.ObjectMeta{Name: "public"},
		Spec: &policyv1.ListenerSpec{Address: "0.0.0.0:8443", Hosts: []*policyv1.ListenerHost{{
			Hostnames: []string{"api.example.com"}, Certificate: &policyv1.KeyPair{Keystore: "edge", Alias: "api"},
		}, {
			Hostnames: []string{"www.example.com"}, Certificate: &policyv1.KeyPair{Keystore: "keyway-inline", Alias: "lst-public-ba9876543210"},
		}}},
	}}})
	server := (&fakePolicyService{stored: rs}).serve(t)
	for _, format := range []string{"table", "yaml"} {
		stdout, stderr, err := keywayctl(t, server, "", "get", "all", "-o", format)
		if err != nil {
			t.Fatalf("%s: %v\n%s", format, err, stderr)
		}
		for _, want := range []string{
			`note: policybinding/orders-mtls: the private key applied inline at spec.config.certificate was moved into the secrets service, keystore "keyway-inline" alias "pb-orders-mtls-0123456789ab"`,
			`note: listener/public: the private key applied inline at spec.hosts[1].certificate was moved into the secrets service, keystore "keyway-inline" alias "lst-public-ba9876543210"`,
		} {
			if !strings.Contains(stderr, want) {
				t.Errorf("-o %s: stderr lacks %q:\n%s", format, want, stderr)
			}
		}
		if strings.Contains(stderr, `"edge"`) || strings.Contains(stdout, "note:") {
			t.Errorf("-o %s: a note for a reference the operator made, or a note on stdout:\n%s\n%s", format, stdout, stderr)
		}
	}
	if _, stderr, _ := keywayctl(t, server, "", "get", "all", "-o", "json"); stderr != "" {
		t.Errorf("-o json: stderr %q, want nothing", stderr)
	}
}
