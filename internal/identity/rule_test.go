package identity_test

import (
	"crypto/sha256"
	"crypto/x509"
	"net/url"
	"testing"

	"keyway.dev/internal/identity"
	"keyway.dev/internal/testca"
)

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parsing %q: %v", s, err)
	}
	return u
}

func TestRuleMatches(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	billing := ca.Issue(testca.Options{
		CommonName: "billing",
		DNSNames:   []string{"Billing.Example.com"},
		URIs: []*url.URL{
			mustURL(t, "spiffe://example.org/ns/prod/sa/billing"),
			mustURL(t, "https://clients.example.com/billing"),
		},
		OU: []string{"payments", "ops"},
	}).Cert
	wildcard := ca.Issue(testca.Options{CommonName: "any", DNSNames: []string{"*.example.com"}}).Cert
	deep := ca.Issue(testca.Options{CommonName: "deep", DNSNames: []string{"a.b.example.com"}}).Cert
	apex := ca.Issue(testca.Options{CommonName: "apex", DNSNames: []string{"example.com"}}).Cert
	cnOnly := ca.CNOnly("billing.example.com").Cert
	odd := ca.Issue(testca.Options{CommonName: "odd", URIs: []*url.URL{
		mustURL(t, "spiffe://example.org"),
		mustURL(t, "spiffe://example.org/*"),
		mustURL(t, "spiffe://other.org/ns/prod/sa/billing"),
		mustURL(t, "spiffe://user@example.org/ns/prod/sa/billing"),
		mustURL(t, "spiffe://example.org:443/x"),
	}}).Cert
	spki := sha256.Sum256(billing.RawSubjectPublicKeyInfo)

	tests := []struct {
		name string
		rule identity.Rule
		cert *x509.Certificate
		want bool
	}{
		{"dnsName exact", identity.Rule{DNSName: "billing.example.com"}, billing, true},
		{"dnsName ignores case", identity.Rule{DNSName: "BILLING.example.COM"}, billing, true},
		{"dnsName other name", identity.Rule{DNSName: "orders.example.com"}, billing, false},
		{"dnsName not from the CN", identity.Rule{DNSName: "billing.example.com"}, cnOnly, false},
		{"dnsName exact rule, wildcard SAN", identity.Rule{DNSName: "billing.example.com"}, wildcard, false},
		{"dnsName wildcard, one label more", identity.Rule{DNSName: "*.example.com"}, billing, true},
		{"dnsName wildcard, same wildcard SAN", identity.Rule{DNSName: "*.example.com"}, wildcard, true},
		{"dnsName wildcard, two labels more", identity.Rule{DNSName: "*.example.com"}, deep, false},
		{"dnsName wildcard, the apex", identity.Rule{DNSName: "*.example.com"}, apex, false},
		{"dnsName wildcard, other wildcard SAN", identity.Rule{DNSName: "*.b.example.com"}, wildcard, false},
		{"uri exact", identity.Rule{URI: "https://clients.example.com/billing"}, billing, true},
		{"uri prefix only", identity.Rule{URI: "https://clients.example.com/"}, billing, false},
		{"uri matches a SPIFFE ID too", identity.Rule{URI: "spiffe://example.org/ns/prod/sa/billing"}, billing, true},
		{"spiffeID exact", identity.Rule{SPIFFEID: "spiffe://example.org/ns/prod/sa/billing"}, billing, true},
		{"spiffeID other path", identity.Rule{SPIFFEID: "spiffe://example.org/ns/prod/sa/orders"}, billing, false},
		{"spiffeID is not an https URI", identity.Rule{SPIFFEID: "https://clients.example.com/billing"}, billing, false},
		{"spiffeID trust domain", identity.Rule{SPIFFEID: "spiffe://example.org/*"}, billing, true},
		{"spiffeID other trust domain", identity.Rule{SPIFFEID: "spiffe://example.com/*"}, billing, false},
		{"spiffeID trust domain, only invalid IDs", identity.Rule{SPIFFEID: "spiffe://example.org/*"}, odd, false},
		{"spiffeID wildcard literally in the certificate", identity.Rule{SPIFFEID: "spiffe://example.org/*"}, odd, false},
		{"spiffeID other trust domain, same path", identity.Rule{SPIFFEID: "spiffe://other.org/ns/prod/sa/billing"}, odd, true},
		{"spiffeID with userinfo in the certificate", identity.Rule{SPIFFEID: "spiffe://example.org/ns/prod/sa/billing"}, odd, false},
		{"cn exact", identity.Rule{CN: "billing"}, billing, true},
		{"cn is case-sensitive", identity.Rule{CN: "Billing"}, billing, false},
		{"ou first", identity.Rule{OU: "payments"}, billing, true},
		{"ou second", identity.Rule{OU: "ops"}, billing, true},
		{"ou absent", identity.Rule{OU: "admins"}, billing, false},
		{"spkiSHA256 of the key", identity.Rule{SPKISHA256: spki[:]}, billing, true},
		{"spkiSHA256 of another key", identity.Rule{SPKISHA256: spki[:]}, wildcard, false},
		{"empty rule matches nothing", identity.Rule{}, billing, false},
		{"two fields match nothing", identity.Rule{CN: "billing", OU: "ops"}, billing, false},
		{"nil certificate", identity.Rule{CN: "billing"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.rule.Matches(tt.cert); got != tt.want {
				t.Errorf("%+v.Matches = %v, want %v", tt.rule, got, tt.want)
			}
		})
	}
}
