package tlsconf_test

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/tlsconf"
)

// serveHost serves h's config (tlsconf.InboundHost) on loopback until the
// test ends; each connection completes its handshake and is closed.
func serveHost(t *testing.T, h *model.ListenerHost) string {
	t.Helper()
	cfg, err := tlsconf.InboundHost(h)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
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
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

// A Listener host that lists no ciphers is served Mozilla's intermediate
// profile: a client that offers only a CBC suite is refused; listing that
// suite lets it in.
func TestDefaultCiphersAreIntermediate(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "server CA")
	// ECDHE_RSA suites need an RSA server key.
	kp := ca.Issue(testca.Options{CommonName: "defaults.test", DNSNames: []string{"defaults.test", "listed.test"}, RSABits: 2048})
	cbc := tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA

	defaults := &model.ListenerHost{Hostnames: []string{"defaults.test"}, Certificate: &kp.TLS}
	listed := &model.ListenerHost{Hostnames: []string{"listed.test"}, Certificate: &kp.TLS,
		CipherSuites: []uint16{cbc, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}}
	addrs := map[string]string{"defaults.test": serveHost(t, defaults), "listed.test": serveHost(t, listed)}

	// handshake connects to the host named sni with only the given TLS
	// 1.2 suites (and versions).
	handshake := func(sni string, minV, maxV uint16, suites ...uint16) (tls.ConnectionState, error) {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: sni, MinVersion: minV, MaxVersion: maxV, CipherSuites: suites}
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
		c, err := d.Dial("tcp", addrs[sni])
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.(*tls.Conn).ConnectionState(), nil
	}

	tests := []struct {
		name      string
		sni       string
		minV      uint16
		maxV      uint16
		suites    []uint16
		wantSuite uint16 // 0: the handshake must fail
	}{
		{"defaults/cbc-only", "defaults.test", tls.VersionTLS12, tls.VersionTLS12, []uint16{cbc}, 0},
		{"defaults/cbc-sha256", "defaults.test", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256}, 0},
		{"defaults/rsa-kex-gcm", "defaults.test", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}, 0},
		{"defaults/ecdhe-gcm", "defaults.test", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384},
		{"defaults/ecdhe-chacha", "defaults.test", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256},
		{"defaults/tls1.1", "defaults.test", tls.VersionTLS10, tls.VersionTLS11, []uint16{cbc}, 0},
		{"defaults/tls1.3", "defaults.test", tls.VersionTLS13, tls.VersionTLS13, nil, tls.TLS_AES_128_GCM_SHA256},
		{"listed/cbc-only", "listed.test", tls.VersionTLS12, tls.VersionTLS12, []uint16{cbc}, cbc},
		{"listed/gcm", "listed.test", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
		{"listed/unlisted-chacha", "listed.test", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cs, err := handshake(tt.sni, tt.minV, tt.maxV, tt.suites...)
			switch {
			case tt.wantSuite == 0 && err == nil:
				t.Fatalf("handshake succeeded with %s; want it refused", tls.CipherSuiteName(cs.CipherSuite))
			case tt.wantSuite == 0:
				// The server's alert, not a failure of the client's own.
				if !strings.Contains(err.Error(), "remote error: tls:") {
					t.Fatalf("refused with %v; want a TLS alert from the server", err)
				}
			case err != nil:
				t.Fatalf("handshake: %v", err)
			case cs.CipherSuite != tt.wantSuite && tt.minV < tls.VersionTLS13:
				t.Fatalf("negotiated %s, want %s", tls.CipherSuiteName(cs.CipherSuite), tls.CipherSuiteName(tt.wantSuite))
			}
		})
	}
}

// A host that gives no versions or ALPN gets the model's defaults; one
// that verifies clients needs client CAs, or nil would mean the system's.
func TestInboundHostDefaults(t *testing.T) {
	t.Parallel()
	kp := testca.New(t, "server CA").Server("defaults.test")
	cfg, err := tlsconf.InboundHost(&model.ListenerHost{Certificate: &kp.TLS})
	if err != nil {
		t.Fatal(err)
	}
	// http/1.0 last: for clients that offer nothing else (curl --http1.0).
	if want := "h2,http/1.1,http/1.0"; cfg.MinVersion != model.DefaultMinVersion || strings.Join(cfg.NextProtos, ",") != want {
		t.Errorf("MinVersion %x, NextProtos %q; want %x and %q", cfg.MinVersion, cfg.NextProtos, model.DefaultMinVersion, want)
	}
	if _, err := tlsconf.InboundHost(&model.ListenerHost{}); err == nil || err.Error() != "no server certificate" {
		t.Errorf("without a certificate: %v", err)
	}
	_, err = tlsconf.InboundHost(&model.ListenerHost{Certificate: &kp.TLS, ClientAuth: tls.RequireAndVerifyClientCert})
	if err == nil || err.Error() != "client auth require-and-verify without client CAs" {
		t.Errorf("verifying clients without client CAs: %v", err)
	}
}
