package inbound_test

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/inbound"
)

// newConnBody is what the handlers of BenchmarkNewConnection answer: about
// the size of the proxy's answer to the peers harness.
var newConnBody = []byte(`{"cn":"gateway","fingerprint":"0000000000000000000000000000000000000000000000000000000000000000","proto":"HTTP/1.1","path":"/bench/x"}` + "\n")

// BenchmarkNewConnection is the cost of one new inbound mutual-TLS
// connection, the peers harness's newconn mode in one process: a full TLS
// 1.3 handshake (ECDSA P-256 certificates, X25519, no resumption,
// require-and-verify) and one HTTP/1.1 request, client and server both
// measured.
//
//   - listener: through a Listener, the handler judging the client as the
//     proxy's does (ClientOf, and its X-Forwarded-Client-Cert value);
//   - bare: net/http and crypto/tls alone with the same certificates and
//     client authentication, the handler answering the same body: the
//     floor, so listener minus bare is what Keyway adds;
//   - pubkey: the public-key operations of both sides of such a handshake
//     done directly with crypto/ecdh and crypto/ecdsa ([handshakePubkey]),
//     so listener / pubkey is the ratio of all the work to the
//     public-key work, from one run.
//
// Run with -cpu 1, so that ns/op is CPU per connection when the machine has
// a core to spare; cpu-ns/op is the process's CPU time either way:
//
//	go test -run '^$' -bench NewConnection -cpu 1 -benchmem ./internal/inbound/
func BenchmarkNewConnection(b *testing.B) {
	servers, clients := testca.New(b, "server CA"), testca.New(b, "client CA")
	serverKP, clientKP := servers.Server("gw.bench"), clients.Client("bench-client")
	client := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: servers.Pool(), ServerName: "gw.bench",
				Certificates: []tls.Certificate{clientKP.TLS}, CurvePreferences: []tls.CurveID{tls.X25519}},
		}}
	}
	b.Run("listener", func(b *testing.B) {
		m := inbound.New(inbound.Options{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			cl, _ := inbound.ClientOf(r, time.Now())
			if !cl.Verified() {
				http.Error(w, string(cl.Reason), http.StatusForbidden)
				return
			}
			r.Header.Set("X-Forwarded-Client-Cert", cl.XFCC)
			w.Header().Set("Content-Type", "application/json")
			w.Write(newConnBody)
		})})
		b.Cleanup(func() { m.Close(b.Context()) })
		apply(b, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
			host(serverKP, tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "gw.bench"),
		}})
		runNewConn(b, client(), "https://"+m.Addr("public")+"/bench/x")
	})
	b.Run("bare", func(b *testing.B) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(newConnBody)
		}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverKP.TLS},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients.Pool()}
		srv.StartTLS()
		b.Cleanup(srv.Close)
		runNewConn(b, client(), srv.URL+"/bench/x")
	})
	b.Run("pubkey", func(b *testing.B) {
		hs := newHandshakePubkey(b, servers, clients, serverKP, clientKP)
		b.ReportAllocs()
		cpu0 := processCPU()
		for b.Loop() {
			hs.server()
			hs.client()
		}
		b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
	b.Run("pubkey-server", func(b *testing.B) {
		hs := newHandshakePubkey(b, servers, clients, serverKP, clientKP)
		b.ReportAllocs()
		cpu0 := processCPU()
		for b.Loop() {
			hs.server()
		}
		b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
}

// runNewConn gets url with c once per op (c does not keep connections
// alive), reporting allocations and the process's CPU per op.
func runNewConn(b *testing.B, c *http.Client, url string) {
	get := func() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	get()
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		get()
	}
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// handshakePubkey holds what the public-key operations of one TLS 1.3
// mutual-TLS handshake (ECDSA P-256 leaves and CAs, X25519) work on.
type handshakePubkey struct {
	b                  *testing.B
	serverCA, clientCA *testca.CA
	serverKP, clientKP *testca.KeyPair
	serverKey          *ecdsa.PrivateKey
	clientKey          *ecdsa.PrivateKey
	serverPub          *ecdsa.PublicKey
	clientPub          *ecdsa.PublicKey
	digest             [32]byte
	serverSig          []byte
	clientSig          []byte
	peerShare          *ecdh.PublicKey
}

func newHandshakePubkey(b *testing.B, serverCA, clientCA *testca.CA, serverKP, clientKP *testca.KeyPair) *handshakePubkey {
	hs := &handshakePubkey{b: b, serverCA: serverCA, clientCA: clientCA, serverKP: serverKP, clientKP: clientKP,
		serverKey: serverKP.TLS.PrivateKey.(*ecdsa.PrivateKey), clientKey: clientKP.TLS.PrivateKey.(*ecdsa.PrivateKey),
		serverPub: serverKP.Cert.PublicKey.(*ecdsa.PublicKey), clientPub: clientKP.Cert.PublicKey.(*ecdsa.PublicKey),
		digest: sha256.Sum256([]byte("TLS 1.3, CertificateVerify transcript"))}
	var err error
	if hs.serverSig, err = ecdsa.SignASN1(rand.Reader, hs.serverKey, hs.digest[:]); err != nil {
		b.Fatal(err)
	}
	if hs.clientSig, err = ecdsa.SignASN1(rand.Reader, hs.clientKey, hs.digest[:]); err != nil {
		b.Fatal(err)
	}
	peer, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	hs.peerShare = peer.PublicKey()
	return hs
}

// server is the server side's public-key work: an X25519 key share and
// shared secret, the ECDSA signature of its CertificateVerify, the
// verification of the client's CertificateVerify and of the client CA's
// signature on the client certificate.
func (hs *handshakePubkey) server() {
	hs.side(hs.serverKey, hs.clientPub, hs.clientSig, hs.clientKP, hs.clientCA)
}

// client is the same work on the client's side.
func (hs *handshakePubkey) client() {
	hs.side(hs.clientKey, hs.serverPub, hs.serverSig, hs.serverKP, hs.serverCA)
}

func (hs *handshakePubkey) side(own *ecdsa.PrivateKey, peer *ecdsa.PublicKey, peerSig []byte, peerKP *testca.KeyPair, peerCA *testca.CA) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		hs.b.Fatal(err)
	}
	if _, err := k.ECDH(hs.peerShare); err != nil {
		hs.b.Fatal(err)
	}
	if _, err := ecdsa.SignASN1(rand.Reader, own, hs.digest[:]); err != nil {
		hs.b.Fatal(err)
	}
	if !ecdsa.VerifyASN1(peer, hs.digest[:], peerSig) {
		hs.b.Fatal("CertificateVerify signature does not verify")
	}
	if err := peerKP.Cert.CheckSignatureFrom(peerCA.Cert); err != nil {
		hs.b.Fatal(err)
	}
}
