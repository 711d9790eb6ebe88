package upstream_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/upstream"
)

type pki struct {
	ca, clients *testca.CA
	server      *testca.KeyPair
	client      *testca.KeyPair
}

func newPKI(t *testing.T) pki {
	ca := testca.New(t, "upstream CA")
	clients := testca.New(t, "gateway CA")
	return pki{ca: ca, clients: clients, server: ca.Server("orders.internal"), client: clients.Client("gateway")}
}

// server is a TLS upstream that demands a client certificate and answers
// with the SHA-256 of the one it got.
func server(t *testing.T, p pki, h2 bool, mod func(*tls.Config)) *httptest.Server {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
		io.WriteString(w, hex.EncodeToString(sum[:]))
	}))
	srv.EnableHTTP2 = h2
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.server.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.clients.Pool()}
	if mod != nil {
		mod(srv.TLS)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func outbound(p pki, cert *tls.Certificate, mod func(*model.OutboundTLS)) *model.OutboundTLS {
	o := &model.OutboundTLS{
		TrustedCAs:  []*x509.Certificate{p.ca.Cert},
		Certificate: cert,
		ALPN:        []string{"h2", "http/1.1"},
		MinVersion:  tls.VersionTLS12,
		MaxVersion:  tls.VersionTLS13,
		SNI:         "orders.internal",
		Fingerprint: "test",
	}
	if mod != nil {
		mod(o)
	}
	return o
}

func get(t *testing.T, u *upstream.Upstream, srv *httptest.Server) (*http.Response, error) {
	req, err := http.NewRequest("GET", srv.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return u.RoundTrip(req)
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "h1", true: "h2"}[h2], func(t *testing.T) {
			t.Parallel()
			srv := server(t, p, h2, nil)
			u, err := upstream.New(&model.Service{Name: "orders", Endpoints: []string{srv.Listener.Addr().String()}}, outbound(p, &p.client.TLS, nil), upstream.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer u.Drain(context.Background())
			resp, err := get(t, u, srv)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != p.client.Fingerprint() {
				t.Errorf("upstream saw %q, want the gateway's certificate %s", body, p.client.Fingerprint())
			}
			if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
				t.Errorf("protocol %s, want HTTP/%d", resp.Proto, want)
			}
		})
	}
}

// A TLS 1.3 upstream refuses a missing client certificate after our
// handshake has completed: the alert arrives on the first read, inside
// http.Transport. It must survive the transport's wrapping (h1 and h2).
func TestTLS13RefusalSurvivesTransport(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	foreign := testca.New(t, "foreign").Client("gateway")
	cases := []struct {
		name  string
		cert  *tls.Certificate
		alert uint8
		want  failure.Reason
	}{
		{"no certificate", nil, 116, failure.NoClientCertificate},
		{"untrusted certificate", &foreign.TLS, 48, failure.ClientCertificateRejected},
	}
	for _, c := range cases {
		for _, h2 := range []bool{false, true} {
			t.Run(c.name+map[bool]string{false: " h1", true: " h2"}[h2], func(t *testing.T) {
				t.Parallel()
				srv := server(t, p, h2, func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 })
				u, err := upstream.New(&model.Service{Name: "orders", Endpoints: []string{srv.Listener.Addr().String()}}, outbound(p, c.cert, nil), upstream.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer u.Drain(context.Background())
				_, err = get(t, u, srv)
				ue, ok := errors.AsType[*upstream.Error](err)
				if !ok {
					t.Fatalf("RoundTrip error %v (%T), want *upstream.Error", err, err)
				}
				if ue.Reason != c.want {
					t.Errorf("reason %s (%s), want %s", ue.Reason, ue.Detail, c.want)
				}
				if code, ok := failure.AlertCode(err); !ok || code != c.alert {
					t.Errorf("alert %d (found %v) in %v, want %d", code, ok, err, c.alert)
				}
			})
		}
	}
}

func TestDrainWaitsForRequests(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	release := make(chan struct{})
	started := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.server.TLS}}
	srv.StartTLS()
	defer srv.Close()
	u, err := upstream.New(&model.Service{Name: "slow", Endpoints: []string{srv.Listener.Addr().String()}}, outbound(p, nil, nil), upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		rec := httptest.NewRecorder()
		if !u.Forward(rec, httptest.NewRequest("GET", "/", nil)) {
			t.Error("Forward refused before Drain")
		}
		if rec.Code != 200 {
			t.Errorf("status %d", rec.Code)
		}
	})
	<-started
	drained := make(chan error)
	go func() { drained <- u.Drain(context.Background()) }()
	select {
	case <-drained:
		t.Fatal("Drain returned with a request in flight")
	case <-time.After(50 * time.Millisecond): // a negative check: nothing to wait for
	}
	if u.Forward(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil)) {
		t.Error("Forward accepted a request while draining")
	}
	close(release)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

// An upstream that completes TLS but never answers gets upstream_timeout
// once the response-header timeout passes.
func TestResponseHeaderTimeout(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.server.TLS}}
	srv.StartTLS()
	t.Cleanup(func() { close(release); srv.Close() })

	u, err := upstream.New(&model.Service{Name: "hung", Endpoints: []string{srv.Listener.Addr().String()}, Protocol: model.ProtocolHTTP1},
		outbound(p, nil, nil), upstream.Options{ResponseHeaderTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = get(t, u, srv)
	var ue *upstream.Error
	if !errors.As(err, &ue) || ue.Reason != failure.UpstreamTimeout {
		t.Fatalf("got %v, want upstream_timeout", err)
	}
}
