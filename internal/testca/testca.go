// Package testca mints certificates for tests, one call per shape: a test
// never pastes a PEM blob. It wraps [devca] and fails the test on error.
package testca

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"keyway.dev/internal/devca"
)

// CA is a test certificate authority.
type CA struct {
	*devca.CA
	tb testing.TB
}

// KeyPair is an issued certificate with its key.
type KeyPair = devca.KeyPair

// Options shape an issued certificate; see [devca.Options].
type Options = devca.Options

// New makes a root CA.
func New(tb testing.TB, commonName string) *CA {
	tb.Helper()
	ca, err := devca.New(commonName)
	if err != nil {
		tb.Fatalf("testca: %v", err)
	}
	return &CA{CA: ca, tb: tb}
}

// Issue mints a certificate with the given options.
func (ca *CA) Issue(opts Options) *KeyPair {
	ca.tb.Helper()
	kp, err := ca.CA.Issue(opts)
	if err != nil {
		ca.tb.Fatalf("testca: %v", err)
	}
	return kp
}

// Server mints an ECDSA certificate for the DNS names, plus 127.0.0.1 and
// ::1 as IP SANs so it serves on loopback.
func (ca *CA) Server(dnsNames ...string) *KeyPair {
	ca.tb.Helper()
	cn := "server"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	return ca.Issue(Options{CommonName: cn, DNSNames: dnsNames, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
}

// Client mints an ECDSA client certificate with the common name as its DNS SAN.
func (ca *CA) Client(commonName string) *KeyPair {
	ca.tb.Helper()
	return ca.Issue(Options{CommonName: commonName})
}

// CNOnly mints a certificate with no SAN at all, as `openssl req -subj
// /CN=name` does.
func (ca *CA) CNOnly(commonName string) *KeyPair {
	ca.tb.Helper()
	return ca.Issue(Options{CommonName: commonName, NoSAN: true})
}

// RSA mints a certificate with an RSA key of the given size.
func (ca *CA) RSA(commonName string, bits int) *KeyPair {
	ca.tb.Helper()
	return ca.Issue(Options{CommonName: commonName, RSABits: bits})
}

// Expired mints a certificate whose validity ended an hour ago.
func (ca *CA) Expired(commonName string) *KeyPair {
	ca.tb.Helper()
	now := time.Now()
	return ca.Issue(Options{CommonName: commonName, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
}

// NotYetValid mints a certificate whose validity starts tomorrow.
func (ca *CA) NotYetValid(commonName string) *KeyPair {
	ca.tb.Helper()
	now := time.Now()
	return ca.Issue(Options{CommonName: commonName, NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)})
}

// Intermediate makes a CA signed by this one.
func (ca *CA) Intermediate(commonName string) *CA {
	ca.tb.Helper()
	sub, err := ca.CA.Sub(commonName)
	if err != nil {
		ca.tb.Fatalf("testca: %v", err)
	}
	return &CA{CA: sub, tb: ca.tb}
}

// From wraps a CA made elsewhere (one shared by several tests) so that it
// fails tb on error.
func From(tb testing.TB, ca *devca.CA) *CA {
	return &CA{CA: ca, tb: tb}
}

// ServeTLS accepts TLS connections presenting kp on loopback until the test
// ends; each completes its handshake, waits up to 5 s for the client to
// close or send, and is closed. It returns the address.
func ServeTLS(tb testing.TB, kp *KeyPair) string {
	tb.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{kp.TLS}})
	if err != nil {
		tb.Fatalf("testca: %v", err)
	}
	tb.Cleanup(func() { ln.Close() })
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
