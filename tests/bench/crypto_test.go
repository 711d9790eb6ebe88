package bench

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"runtime"
	"syscall"
	"testing"
	"time"

	"keyway.dev/internal/testca"
)

// threadCPU is the CPU time the calling OS thread has used.
func threadCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD, Linux
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverHandshakeCrypto returns the mean CPU time, in µs, of the public-key
// operations the server side of one TLS 1.3 mutual-TLS handshake does with
// these (ECDSA P-256) certificates, done directly: sign a CertificateVerify,
// verify the client's, verify the CA's signature on the client certificate,
// make an X25519 key pair and shared secret, and encapsulate to an
// ML-KEM-768 key (Go's default X25519MLKEM768 key exchange).
func serverHandshakeCrypto(b *testing.B, ca *x509.Certificate, server, client *testca.KeyPair) float64 {
	b.Helper()
	digest := sha256.Sum256([]byte("TLS 1.3, CertificateVerify transcript"))
	clientSig, err := ecdsa.SignASN1(rand.Reader, client.TLS.PrivateKey.(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		b.Fatal(err)
	}
	peerX, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		b.Fatal(err)
	}
	ek := dk.EncapsulationKey().Bytes()
	const n = 2000
	// CPU time of this thread, not wall time: the machine may be busy.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := threadCPU(b)
	for range n {
		if _, err := ecdsa.SignASN1(rand.Reader, server.TLS.PrivateKey.(*ecdsa.PrivateKey), digest[:]); err != nil {
			b.Fatal(err)
		}
		if !ecdsa.VerifyASN1(client.Cert.PublicKey.(*ecdsa.PublicKey), digest[:], clientSig) {
			b.Fatal("client signature does not verify")
		}
		if err := client.Cert.CheckSignatureFrom(ca); err != nil {
			b.Fatal(err)
		}
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.ECDH(peerX.PublicKey()); err != nil {
			b.Fatal(err)
		}
		key, err := mlkem.NewEncapsulationKey768(ek)
		if err != nil {
			b.Fatal(err)
		}
		key.Encapsulate()
	}
	return float64((threadCPU(b) - start).Microseconds()) / n
}
