package failure_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/testca"
)

// handshake runs a real TLS handshake on loopback between a Go server with
// srv and a client with cli, recording the facts as the proxy's dialer does.
// With a TLS 1.3 client certificate refusal, the error surfaces on the first
// read after the handshake: handshake reads once to catch it.
func handshake(t *testing.T, srv *tls.Config, cli *tls.Config, clientCert *tls.Certificate) (error, failure.HandshakeFacts) { //nolint:revive,staticcheck // the error is the result under test, first as in every call site
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := tls.Server(c, srv)
		if tc.Handshake() == nil {
			tc.Write([]byte("hello"))
			io.Copy(io.Discard, tc)
		}
	}()
	facts := failure.HandshakeFacts{Phase: failure.PhaseDial, ServerName: cli.ServerName}
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err, facts
	}
	defer raw.Close()
	cli = cli.Clone()
	cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		facts.ClientCertificateRequested = true
		if clientCert == nil {
			return &tls.Certificate{}, nil
		}
		facts.ClientCertificateSent = true
		return clientCert, nil
	}
	cli.VerifyConnection = func(tls.ConnectionState) error { facts.ServerCertificateSeen = true; return nil }
	facts.Phase = failure.PhaseHandshake
	tc := tls.Client(raw, cli)
	if err := tc.HandshakeContext(context.Background()); err != nil {
		return err, facts
	}
	facts = failure.HandshakeFacts{Phase: failure.PhaseRequest, ClientCertificateSent: clientCert != nil}
	buf := make([]byte, 5)
	_, err = io.ReadFull(tc, buf)
	return err, facts
}

func TestClassifyHandshakes(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "upstream CA")
	other := testca.New(t, "other CA")
	clients := testca.New(t, "client CA")
	server := ca.Server("orders.internal")
	client := clients.Client("gateway")
	foreignClient := other.Client("gateway")

	serverCfg := func(kp *testca.KeyPair, mod func(*tls.Config)) *tls.Config {
		c := &tls.Config{Certificates: []tls.Certificate{kp.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients.Pool()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	clientCfg := func(mod func(*tls.Config)) *tls.Config {
		c := &tls.Config{RootCAs: ca.Pool(), ServerName: "orders.internal"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	tests := []struct {
		name       string
		srv        *tls.Config
		cli        *tls.Config
		cert       *tls.Certificate
		want       failure.Reason
		wantDetail string
	}{
		{name: "ok", srv: serverCfg(server, nil), cli: clientCfg(nil), cert: &client.TLS, want: ""},
		{name: "unknown authority", srv: serverCfg(server, nil), cli: clientCfg(func(c *tls.Config) { c.RootCAs = other.Pool() }), cert: &client.TLS,
			want: failure.UnknownAuthority, wantDetail: "upstream CA"},
		{name: "expired", srv: serverCfg(ca.Expired("orders.internal"), nil), cli: clientCfg(nil), cert: &client.TLS, want: failure.Expired},
		{name: "not yet valid", srv: serverCfg(ca.NotYetValid("orders.internal"), nil), cli: clientCfg(nil), cert: &client.TLS, want: failure.NotYetValid},
		{name: "san mismatch", srv: serverCfg(server, nil), cli: clientCfg(func(c *tls.Config) { c.ServerName = "billing.internal" }), cert: &client.TLS,
			want: failure.SANMismatch, wantDetail: "DNS:orders.internal"},
		{name: "legacy common name", srv: serverCfg(ca.CNOnly("orders.internal"), nil), cli: clientCfg(nil), cert: &client.TLS,
			want: failure.LegacyCommonName, wantDetail: `-addext "subjectAltName=DNS:orders.internal"`},
		{name: "no client certificate TLS 1.2", srv: serverCfg(server, nil), cli: clientCfg(func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }),
			want: failure.NoClientCertificate},
		{name: "no client certificate TLS 1.3", srv: serverCfg(server, nil), cli: clientCfg(nil), want: failure.NoClientCertificate},
		{name: "client certificate rejected TLS 1.2", srv: serverCfg(server, nil), cli: clientCfg(func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }),
			cert: &foreignClient.TLS, want: failure.ClientCertificateRejected},
		{name: "client certificate rejected TLS 1.3", srv: serverCfg(server, nil), cli: clientCfg(nil), cert: &foreignClient.TLS,
			want: failure.ClientCertificateRejected},
		{name: "protocol version", srv: serverCfg(server, func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }),
			cli: clientCfg(func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), cert: &client.TLS, want: failure.ProtocolVersion},
		{name: "no shared cipher", srv: serverCfg(server, func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
		}), cli: clientCfg(func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
		}), cert: &client.TLS, want: failure.NoSharedCipher},
		{name: "no application protocol", srv: serverCfg(server, func(c *tls.Config) { c.NextProtos = []string{"x-other"} }),
			cli: clientCfg(func(c *tls.Config) { c.NextProtos = []string{"h2"} }), cert: &client.TLS, want: failure.NoApplicationProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err, facts := handshake(t, tt.srv, tt.cli, tt.cert)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("handshake succeeded, want %s", tt.want)
			}
			d := failure.Diagnose(err, facts)
			if d.Reason != tt.want {
				t.Fatalf("Diagnose(%v, %+v) = %s, want %s (detail %q)", err, facts, d.Reason, tt.want, d.Detail)
			}
			if !strings.Contains(d.Detail, tt.wantDetail) {
				t.Errorf("detail %q does not contain %q", d.Detail, tt.wantDetail)
			}
		})
	}
}

func TestClassifyNetwork(t *testing.T) {
	t.Parallel()
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, err = net.Dial("tcp", addr)
		if got := failure.Classify(err, failure.HandshakeFacts{Phase: failure.PhaseDial}); got != failure.ConnectionRefused {
			t.Fatalf("Classify(%v) = %s", err, got)
		}
	})
	t.Run("handshake timeout", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				defer c.Close()
				io.Copy(io.Discard, c) // accepts, never answers
			}
		}()
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err = tls.Client(raw, &tls.Config{ServerName: "x"}).HandshakeContext(ctx)
		if got := failure.Classify(err, failure.HandshakeFacts{Phase: failure.PhaseHandshake}); got != failure.HandshakeTimeout {
			t.Fatalf("Classify(%v) = %s", err, got)
		}
	})
	t.Run("not tls", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err == nil {
				c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
				c.Close()
			}
		}()
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		err = tls.Client(raw, &tls.Config{ServerName: "x"}).Handshake()
		d := failure.Diagnose(err, failure.HandshakeFacts{Phase: failure.PhaseHandshake})
		if d.Reason != failure.NotTLS || !strings.Contains(d.Detail, "plain HTTP") {
			t.Fatalf("Diagnose(%v) = %+v", err, d)
		}
	})
}

func TestClassifyErrors(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "CA")
	cn := ca.CNOnly("10.0.0.7").Cert
	tests := []struct {
		name  string
		err   error
		facts failure.HandshakeFacts
		want  failure.Reason
	}{
		{"dns", &net.OpError{Op: "dial", Err: &net.DNSError{Name: "nowhere.invalid", Err: "no such host", IsNotFound: true}}, failure.HandshakeFacts{}, failure.DNSFailure},
		{"dial timeout", &net.OpError{Op: "dial", Err: context.DeadlineExceeded}, failure.HandshakeFacts{Phase: failure.PhaseDial}, failure.DialTimeout},
		{"no route to host", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, failure.HandshakeFacts{Phase: failure.PhaseDial}, failure.HostUnreachable},
		{"network unreachable", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, failure.HandshakeFacts{Phase: failure.PhaseDial}, failure.HostUnreachable},
		{"response timeout", context.DeadlineExceeded, failure.HandshakeFacts{Phase: failure.PhaseRequest}, failure.UpstreamTimeout},
		{"canceled", context.Canceled, failure.HandshakeFacts{Phase: failure.PhaseRequest}, failure.ClientCanceled},
		{"reset", &net.OpError{Op: "read", Err: errors.New("x")}, failure.HandshakeFacts{Phase: failure.PhaseRequest}, failure.Unknown},
		{"eof", io.EOF, failure.HandshakeFacts{Phase: failure.PhaseRequest}, failure.UpstreamReset},
		{"eof after refusal to send a certificate", io.EOF, failure.HandshakeFacts{Phase: failure.PhaseHandshake, ClientCertificateRequested: true}, failure.NoClientCertificate},
		{"alert error (QUIC form)", tls.AlertError(116), failure.HandshakeFacts{Phase: failure.PhaseHandshake}, failure.NoClientCertificate},
		{"reasoner", failure.WithReason(failure.SANMismatch, errors.New("x")), failure.HandshakeFacts{}, failure.SANMismatch},
		{"legacy CN with IP host", &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: cn, Host: "10.0.0.7"}}, failure.HandshakeFacts{}, failure.LegacyCommonName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := failure.Classify(tt.err, tt.facts); got != tt.want {
				t.Fatalf("Classify(%v, %+v) = %s, want %s", tt.err, tt.facts, got, tt.want)
			}
		})
	}
	d := failure.Diagnose(&tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: cn, Host: "10.0.0.7"}}, failure.HandshakeFacts{})
	if !strings.Contains(d.Detail, `"subjectAltName=IP:10.0.0.7"`) {
		t.Errorf("legacy CN fix for an IP: %q", d.Detail)
	}
}

func TestEveryReasonIsDescribed(t *testing.T) {
	t.Parallel()
	for _, r := range failure.Reasons() {
		if r.Describe() == "" || r.Fix() == "" || r.Class() == "" {
			t.Errorf("%s: missing description, fix or class", r)
		}
	}
	if failure.Reason("nonsense").Describe() != failure.Unknown.Describe() {
		t.Error("an unknown reason does not describe as unknown")
	}
}
