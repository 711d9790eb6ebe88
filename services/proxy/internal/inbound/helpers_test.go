package inbound_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/inbound"
)

// echo is what the test handler answers.
type echo struct {
	Node   string `json:"node"`
	Proto  string `json:"proto"`
	SNI    string `json:"sni"`
	Client string `json:"client"` // the client certificate's CN
}

func handler(node string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := echo{Node: node, Proto: r.Proto, SNI: r.TLS.ServerName}
		if len(r.TLS.PeerCertificates) > 0 {
			e.Client = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(e)
	})
}

// newManager returns a manager serving handler(node), closed when the test
// ends.
func newManager(t testing.TB, node string) *inbound.Manager {
	t.Helper()
	m := inbound.New(inbound.Options{Handler: handler(node), ShutdownTimeout: 5 * time.Second})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Close(ctx)
	})
	return m
}

// host is a ListenerHost serving kp for names, with client auth mode and
// trusted client CAs.
func host(kp *testca.KeyPair, mode tls.ClientAuthType, clientCAs []*testca.CA, names ...string) model.ListenerHost {
	h := model.ListenerHost{Hostnames: names, Certificate: &kp.TLS, ClientAuth: mode, Fingerprint: kp.Fingerprint()}
	for _, ca := range clientCAs {
		h.ClientCAs = append(h.ClientCAs, ca.Cert)
	}
	return h
}

// apply applies the listeners and fails the test on any refusal.
func apply(t testing.TB, m *inbound.Manager, ls ...*model.Listener) {
	t.Helper()
	if errs := m.Apply(ls); len(errs) > 0 {
		t.Fatalf("apply: %v", errs)
	}
}

// clientFor is an HTTP client that trusts ca, sends sni and presents kp
// (if not nil) whatever CAs the server asks for. Keep-alives are off so that every request handshakes.
func clientFor(ca *testca.CA, sni string, kp *testca.KeyPair) *http.Client {
	cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: sni}
	if kp != nil {
		// Always presented: Go's client would otherwise leave out a
		// certificate whose issuer the server does not list.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp.TLS, nil }
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: cfg, ForceAttemptHTTP2: true, DisableKeepAlives: true,
	}}
}

func get(c *http.Client, url string) (echo, *http.Response, error) {
	resp, err := c.Get(url)
	if err != nil {
		return echo{}, nil, err
	}
	defer resp.Body.Close()
	var e echo
	err = json.NewDecoder(resp.Body).Decode(&e)
	return e, resp, err
}

// served is the fingerprint of the certificate addr serves for sni ("":
// none sent).
func served(t testing.TB, addr, sni string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake with SNI %q: %v", sni, err)
	}
	defer conn.Close()
	return fingerprint(conn.ConnectionState().PeerCertificates[0])
}

func fingerprint(c *x509.Certificate) string {
	return (&testca.KeyPair{Cert: c}).Fingerprint()
}
