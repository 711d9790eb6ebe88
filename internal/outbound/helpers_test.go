package outbound_test

import (
	"crypto/tls"
	"testing"
	"time"

	"keyway.dev/internal/testca"
)

// serveTLS accepts TLS connections with cert on loopback until the test
// ends; each completes its handshake and is closed.
func serveTLS(t *testing.T, cert *testca.KeyPair) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert.TLS}})
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
				var b [1]byte
				_, _ = c.Read(b[:])
			}()
		}
	}()
	return ln.Addr().String()
}
