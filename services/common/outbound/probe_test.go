package outbound_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"keyway.dev/common/failure"
	"keyway.dev/common/model"
	"keyway.dev/common/outbound"
	"keyway.dev/common/testca"
)

// TestProbeSendsOneRequest: after the handshake the probe sends GET path
// over the protocol the handshake chose, and reports the status.
func TestProbeSendsOneRequest(t *testing.T) {
	ca := testca.New(t, "backend CA")
	gateway := ca.Client("gateway")
	for _, alpn := range [][]string{{"h2", "http/1.1"}, {"http/1.1"}} {
		for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(strings.Join(alpn, ",")+"/"+tls.VersionName(version), func(t *testing.T) {
				var got string
				srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					got = r.Proto + " " + r.URL.Path
					w.WriteHeader(http.StatusTeapot)
				}))
				srv.EnableHTTP2 = true
				srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server("api.example.com").TLS},
					ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(), MaxVersion: version}
				srv.StartTLS()
				t.Cleanup(srv.Close)
				d, err := outbound.NewDialer("backend", &model.OutboundTLS{
					TrustedCAs: []*x509.Certificate{ca.Cert}, SNI: "api.example.com", Certificate: &gateway.TLS,
					MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, ALPN: alpn,
				}, outbound.Options{})
				if err != nil {
					t.Fatal(err)
				}
				r, perr := d.Probe(context.Background(), srv.Listener.Addr().String(), "/healthz")
				if perr != nil {
					t.Fatalf("probe: %s: %s", perr.Reason, perr.Detail)
				}
				if r.HTTPStatus != http.StatusTeapot || r.HTTPPath != "/healthz" {
					t.Errorf("probe reported %d %s, want 418 /healthz", r.HTTPStatus, r.HTTPPath)
				}
				wantProto := "HTTP/1.1"
				if alpn[0] == "h2" {
					wantProto = "HTTP/2.0"
				}
				if got != wantProto+" /healthz" {
					t.Errorf("the upstream saw %q, want %q", got, wantProto+" /healthz")
				}

				// A client certificate the upstream does not trust: refused
				// at the handshake (TLS 1.2) or right after it (TLS 1.3),
				// never "ok".
				stranger := testca.New(t, "another CA").Client("gateway")
				d, err = outbound.NewDialer("backend", &model.OutboundTLS{
					TrustedCAs: []*x509.Certificate{ca.Cert}, SNI: "api.example.com", Certificate: &stranger.TLS,
					MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13, ALPN: alpn,
				}, outbound.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if _, perr := d.Probe(context.Background(), srv.Listener.Addr().String(), "/healthz"); perr == nil || perr.Reason != failure.ClientCertificateRejected {
					t.Errorf("probe with a stranger's certificate: %v, want %s", perr, failure.ClientCertificateRejected)
				}
			})
		}
	}
}
