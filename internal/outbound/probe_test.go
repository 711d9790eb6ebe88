package outbound_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/outbound"
	"keyway.dev/internal/testca"
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

// TestProbeTellsUnreachableFromRefused: a failure before any TCP connection
// (nothing listens, the name does not resolve) is not Reached; one where the
// upstream answered and refused (an untrusted certificate, a connection
// closed during the handshake) is.
func TestProbeTellsUnreachableFromRefused(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "backend CA")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server("api.example.com").TLS}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	// A port nothing listens on: a listener's, closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	// A listener that accepts and closes every connection at once.
	hangup, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hangup.Close() })
	go func() {
		for {
			c, err := hangup.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dialer := func(trusted *testca.CA) *outbound.Dialer {
		d, err := outbound.NewDialer("backend", &model.OutboundTLS{
			TrustedCAs: []*x509.Certificate{trusted.Cert}, SNI: "api.example.com",
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13,
		}, outbound.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tc := range []struct {
		name    string
		addr    string
		trusted *testca.CA
		reason  failure.Reason
		reached bool
	}{
		{"nothing listens", closed, ca, failure.ConnectionRefused, false},
		{"name does not resolve", "nowhere.invalid:443", ca, failure.DNSFailure, false},
		{"closed during the handshake", hangup.Addr().String(), ca, failure.UpstreamReset, true},
		{"untrusted certificate", srv.Listener.Addr().String(), testca.New(t, "other CA"), failure.UnknownAuthority, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, perr := dialer(tc.trusted).Probe(context.Background(), tc.addr, "/")
			if perr == nil {
				t.Fatal("probe succeeded")
			}
			if perr.Reason != tc.reason || perr.Reached() != tc.reached {
				t.Errorf("probe: %s (phase %s), Reached() = %t; want %s, %t", perr.Reason, perr.Phase, perr.Reached(), tc.reason, tc.reached)
			}
		})
	}
}
