package inbound_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"testing"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// keyTypes are the server and client key types measured.
var keyTypes = []struct {
	name string
	kp   func(ca *testca.CA, cn string) *testca.KeyPair
}{
	{"ECDSA-P256", func(ca *testca.CA, cn string) *testca.KeyPair { return ca.Client(cn) }},
	{"RSA-2048", func(ca *testca.CA, cn string) *testca.KeyPair { return ca.RSA(cn, 2048) }},
}

// BenchmarkInboundMTLSHandshake measures new TLS 1.3 mutual-TLS
// connections per second through a Listener (require-and-verify): a full
// handshake each, no resumption. Compare with BenchmarkHandshakeCrypto.
func BenchmarkInboundMTLSHandshake(b *testing.B) {
	for _, kt := range keyTypes {
		b.Run(kt.name, func(b *testing.B) {
			servers, clients := testca.New(b, "server CA"), testca.New(b, "client CA")
			m := newManager(b, "bench")
			apply(b, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
				host(kt.kp(servers, "test.com"), tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "test.com"),
			}})
			addr := m.Addr("public")
			client := kt.kp(clients, "client")
			cfg := &tls.Config{RootCAs: servers.Pool(), ServerName: "test.com", Certificates: []tls.Certificate{client.TLS}, NextProtos: []string{"h2"}}
			b.ResetTimer()
			for b.Loop() {
				conn, err := tls.Dial("tcp", addr, cfg)
				if err != nil {
					b.Fatal(err)
				}
				// Dial returns when the client's side is done; the server
				// verifies the client certificate concurrently, so with
				// more than one CPU this is throughput with both sides on
				// one machine, not one handshake's latency.
				conn.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}

// BenchmarkHandshakeCrypto does the public-key operations of one TLS 1.3
// mutual-TLS handshake directly: the server and the client each sign their
// CertificateVerify with their leaf key and verify the other's, and each
// verifies the CA's signature on the other's certificate (ECDSA P-256 CAs).
// Key exchange is not included.
func BenchmarkHandshakeCrypto(b *testing.B) {
	for _, kt := range keyTypes {
		b.Run(kt.name, func(b *testing.B) {
			ca := testca.New(b, "CA")
			server, client := kt.kp(ca, "server"), kt.kp(ca, "client")
			digest := sha256.Sum256([]byte("TLS 1.3, server CertificateVerify transcript"))
			sign := func(kp *testca.KeyPair) []byte {
				var sig []byte
				var err error
				switch k := kp.TLS.PrivateKey.(type) {
				case *ecdsa.PrivateKey:
					sig, err = ecdsa.SignASN1(rand.Reader, k, digest[:])
				case *rsa.PrivateKey:
					sig, err = rsa.SignPSS(rand.Reader, k, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
				}
				if err != nil {
					b.Fatal(err)
				}
				return sig
			}
			verify := func(kp *testca.KeyPair, sig []byte) {
				ok := false
				switch k := kp.Cert.PublicKey.(type) {
				case *ecdsa.PublicKey:
					ok = ecdsa.VerifyASN1(k, digest[:], sig)
				case *rsa.PublicKey:
					ok = rsa.VerifyPSS(k, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
				}
				if !ok {
					b.Fatal("signature does not verify")
				}
			}
			caVerify := func(kp *testca.KeyPair) {
				if err := kp.Cert.CheckSignatureFrom(ca.Cert); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				verify(server, sign(server)) // server CertificateVerify
				caVerify(server)             // client checks the server chain
				verify(client, sign(client)) // client CertificateVerify
				caVerify(client)             // server checks the client chain
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}
