package inbound_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/inbound"
)

// A Listener host that lists no ciphers serves Mozilla's intermediate
// profile: a client that offers only a CBC suite is refused; listing that
// suite lets it in.
func TestDefaultCiphersAreIntermediate(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "server CA")
	// ECDHE_RSA suites need an RSA server key.
	kp := ca.Issue(testca.Options{CommonName: "defaults.test", DNSNames: []string{"defaults.test", "listed.test"}, RSABits: 2048})
	cbc := tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA

	m := newManager(t, "n1")
	defaults := host(kp, tls.NoClientCert, nil, "defaults.test")
	listed := host(kp, tls.NoClientCert, nil, "listed.test")
	listed.CipherSuites = []uint16{cbc, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{defaults, listed}})

	// handshake connects to the host named sni with only the given TLS
	// 1.2 suites (and versions).
	handshake := func(sni string, minV, maxV uint16, suites ...uint16) (tls.ConnectionState, error) {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: sni, MinVersion: minV, MaxVersion: maxV, CipherSuites: suites}
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
		c, err := d.Dial("tcp", m.Addr("public"))
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

// Every Listener bounds request headers at 64 KiB by default, over HTTP/1.1
// and HTTP/2 alike.
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "server CA")
	m := newManager(t, "n1")
	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
		host(ca.Server("test.com"), tls.NoClientCert, nil, "test.com"),
	}})
	url := "https://" + m.Addr("public") + "/"
	if inbound.DefaultMaxHeaderBytes != 64<<10 {
		t.Fatalf("DefaultMaxHeaderBytes = %d, want 64 KiB", inbound.DefaultMaxHeaderBytes)
	}

	for _, h2 := range []bool{false, true} {
		proto := map[bool]string{false: "h1", true: "h2"}[h2]
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "test.com"}
		// HTTP/1.1 requests each on a new connection: net/http's slack over
		// the limit grows on a reused one.
		tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2, DisableKeepAlives: !h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		t.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		send := func(size int) (*http.Response, error) {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("X-Padding", strings.Repeat("a", size))
			resp, err := c.Do(req)
			if err != nil {
				return nil, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp, nil
		}
		t.Run(proto+"/60KiB", func(t *testing.T) {
			resp, err := send(60 << 10)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
				t.Fatalf("got %s over %s, want 200 over %s", resp.Status, resp.Proto, proto)
			}
		})
		t.Run(proto+"/70KiB", func(t *testing.T) {
			resp, err := send(70 << 10)
			switch {
			case err != nil && h2:
				// Go's HTTP/2 client honours the server's
				// SETTINGS_MAX_HEADER_LIST_SIZE and does not send it.
				if !strings.Contains(err.Error(), "header list larger than peer's advertised limit") {
					t.Fatalf("got %v, want the advertised header list limit to stop the request", err)
				}
			case err != nil:
				t.Fatal(err)
			case resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge:
				t.Fatalf("got %s over %s, want 431", resp.Status, resp.Proto)
			}
		})
	}
}
