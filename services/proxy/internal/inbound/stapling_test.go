package inbound_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/proxy/internal/inbound"
)

// stapled is the OCSP response a handshake with addr for sni got stapled,
// parsed against the certificate served; nil when none was.
func stapled(addr, sni string, ca *testca.CA) (*ocsp.Response, error) {
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: sni, RootCAs: ca.Pool()})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	if cs.OCSPResponse == nil {
		return nil, nil
	}
	return ocsp.ParseResponseForCert(cs.OCSPResponse, cs.PeerCertificates[0], ca.Cert)
}

// A Listener host whose certificate names an OCSP responder, with its
// issuer in the chain, staples the responder's answer: good at first, then
// revoked once the responder says so, and none once the last response is
// no longer current. A host whose certificate names no responder staples
// nothing.
func TestListenerStaplesOCSP(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "stapling CA")
	pub := ca.Publisher()
	pub.SetValidity(2 * time.Second)
	leaf := ca.Issue(testca.Options{DNSNames: []string{"gw.test"}, OCSPServer: []string{pub.OCSPURL()}})
	chained := leaf.TLS
	chained.Certificate = [][]byte{leaf.Cert.Raw, ca.Cert.Raw}
	plain := ca.Server("plain.test")

	m := inbound.New(inbound.Options{Handler: handler("n"), ShutdownTimeout: 5 * time.Second,
		Revocation: revocation.Options{MaxRefresh: 200 * time.Millisecond, MinRefresh: 50 * time.Millisecond}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Close(ctx)
	})
	gw := model.ListenerHost{Hostnames: []string{"gw.test"}, Certificate: &chained, ClientAuth: tls.NoClientCert}
	apply(t, m, &model.Listener{Name: "edge", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{gw, host(plain, tls.NoClientCert, nil, "plain.test")}})
	addr := m.Addr("edge")

	want := func(status int) func() error {
		return func() error {
			r, err := stapled(addr, "gw.test", ca)
			switch {
			case err != nil:
				return err
			case r == nil:
				return errors.New("no OCSP response stapled")
			case r.Status != status:
				return fmt.Errorf("stapled status %d, want %d", r.Status, status)
			}
			return nil
		}
	}
	testwait.Eventually(t, 10*time.Second, want(ocsp.Good))
	if r, err := stapled(addr, "plain.test", ca); err != nil || r != nil {
		t.Errorf("a certificate without an OCSP responder: stapled %v, %v", r, err)
	}
	// Served to an HTTP client as well, on the same handshake.
	if _, resp, err := get(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "gw.test", RootCAs: ca.Pool()}}}, "https://"+addr+"/"); err != nil || resp.TLS.OCSPResponse == nil {
		t.Errorf("HTTPS request: %v, stapled %v", err, resp != nil && resp.TLS.OCSPResponse != nil)
	}
	if path, err := exec.LookPath("openssl"); err == nil {
		out, _ := exec.Command(path, "s_client", "-connect", addr, "-servername", "gw.test", "-status").CombinedOutput()
		if !strings.Contains(string(out), "OCSP Response Status: successful") || !strings.Contains(string(out), "Cert Status: good") {
			t.Errorf("openssl s_client -status does not show a good stapled response:\n%s", out)
		}
	}

	pub.Revoke(leaf.Cert, int(revocation.KeyCompromise))
	testwait.Eventually(t, 10*time.Second, want(ocsp.Revoked))

	// The responder goes down: the last response stays stapled while it
	// is current (2 s here), then none is.
	pub.Fail(http.StatusServiceUnavailable)
	testwait.Eventually(t, 10*time.Second, func() error {
		r, err := stapled(addr, "gw.test", ca)
		if err != nil {
			return err
		}
		if r != nil {
			return fmt.Errorf("a response until %v is still stapled", r.NextUpdate)
		}
		return nil
	})
}
