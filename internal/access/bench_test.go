package access_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"keyway.dev/internal/access"
	"keyway.dev/internal/testca"
)

// BenchmarkMiddleware is the access control's own cost per call, without
// TLS: a verified certificate matched against a policy of several
// bindings, and a bearer token.
func BenchmarkMiddleware(b *testing.B) {
	p, err := access.ParsePolicy([]byte(policyDoc(`    - role: secrets-admin
      subjects: [{cn: keyway-policy}, {ou: admins}, {dnsName: "*.example.org"}]
    - role: node
      subjects: [{cn: proxy-node}, {ou: keyway-node}, {spiffeID: "spiffe://test/*"}]
`)))
	if err != nil {
		b.Fatal(err)
	}
	g := access.NewGuardFor(p, nil)
	h := g.Middleware(access.PolicyAPI(), http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	u, _ := url.Parse("spiffe://test/operator")
	leaf := testca.New(b, "operator CA").Issue(testca.Options{CommonName: "op", URIs: []*url.URL{u}}).Cert
	for _, tc := range []struct {
		name string
		prep func(*http.Request)
	}{
		{"certificate", func(r *http.Request) {
			r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}
		}},
		{"token", func(r *http.Request) {
			r.TLS = &tls.ConnectionState{}
			r.Header.Set("Authorization", "Bearer "+tokenOp)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodPost, "/keyway.policy.v1.PolicyService/Apply", nil)
			tc.prep(r)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
			if w.Code != http.StatusOK {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		})
	}
}
