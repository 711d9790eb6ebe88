package outbound_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"

	"keyway.dev/internal/model"
	"keyway.dev/internal/outbound"
	"keyway.dev/internal/testca"
)

// Dialers of one context share its base config, not their sessions: a
// dialer resumes the sessions of its own connections, and another dialer's
// first connection is a full handshake (resumption stays within one
// upstream).
func TestDialersOfOneContextResumeTheirOwnSessions(t *testing.T) {
	ca := testca.New(t, "backend CA")
	gateway := ca.Client("gateway")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{ca.Server("api.example.com").TLS},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// The TLS 1.3 ticket is sent after the handshake: the
				// client reads it while waiting for the close.
				if c.(*tls.Conn).Handshake() == nil {
					c.Write([]byte("x"))
				}
			}()
		}
	}()
	ctx := &model.OutboundTLS{TrustedCAs: []*x509.Certificate{ca.Cert}, SNI: "api.example.com", Certificate: &gateway.TLS,
		MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
	dial := func(d *outbound.Dialer) bool {
		t.Helper()
		c, err := d.DialTLSContext(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		buf := make([]byte, 1)
		if _, err := tc.Read(buf); err != nil { // takes the ticket in
			t.Fatal(err)
		}
		return tc.ConnectionState().DidResume
	}
	newDialer := func() *outbound.Dialer {
		d, err := outbound.NewDialer("backend", ctx, outbound.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, b := newDialer(), newDialer()
	if dial(a) {
		t.Fatal("the first connection resumed a session")
	}
	if !dial(a) {
		t.Error("the dialer's second connection did not resume its first one's session")
	}
	if dial(b) {
		t.Error("another dialer of the same context resumed the first dialer's session")
	}
}
