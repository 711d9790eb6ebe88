package identity_test

import (
	"strings"
	"testing"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/identity"
)

// The messages themselves are checked where rules are written: model's
// Route tests and access's policy tests. Here: which field a problem names,
// and that a valid rule comes back normalized.
func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        *policyv1.IdentityRule
		want      identity.Rule
		wantField string // "" with wantMsg: the rule as a whole
		wantMsg   string
	}{
		{name: "dnsName lowercased", in: &policyv1.IdentityRule{DnsName: "Admin.Example.com"}, want: identity.Rule{DNSName: "admin.example.com"}},
		{name: "uri normalized", in: &policyv1.IdentityRule{Uri: "HTTPS://clients.example.com/x"}, want: identity.Rule{URI: "https://clients.example.com/x"}},
		{name: "empty", in: &policyv1.IdentityRule{}, wantMsg: "the rule is empty"},
		{name: "two fields", in: &policyv1.IdentityRule{Cn: "a", Ou: "b"}, wantMsg: "the rule sets cn and ou"},
		{name: "bad spiffeID", in: &policyv1.IdentityRule{SpiffeId: "spiffe://example.org"}, wantField: "spiffeID", wantMsg: "has no path"},
		{name: "bad spkiSHA256", in: &policyv1.IdentityRule{SpkiSha256: "abc"}, wantField: "spkiSHA256", wantMsg: "is neither base64 nor 64 hex digits"},
		{name: "long value quoted by prefix", in: &policyv1.IdentityRule{SpiffeId: "https://" + strings.Repeat("a", 4096)}, wantField: "spiffeID", wantMsg: "bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, problems := identity.Parse(tt.in)
			if tt.wantMsg == "" {
				if len(problems) > 0 || got.String() != tt.want.String() {
					t.Fatalf("Parse = %v, %+v; want %v", got, problems, tt.want)
				}
				return
			}
			if len(problems) != 1 || problems[0].Field != tt.wantField || !strings.Contains(problems[0].Message, tt.wantMsg) {
				t.Fatalf("Parse problems = %+v; want one at %q containing %q", problems, tt.wantField, tt.wantMsg)
			}
		})
	}
}
