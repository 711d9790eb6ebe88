package inbound_test

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
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

// BenchmarkNewConnectionServer is BenchmarkNewConnection with the client in
// a process of its own (this test binary again, TestNewConnectionClient),
// so that this process's CPU is the server's alone, as the peers harness
// measures the node: per new connection, through a Listener and through
// net/http alone, against the server side's public-key work
// ([handshakePubkey.server]). Rounds of each alternate; the metrics are
// medians over the rounds, in µs of CPU per connection, and
// listener/pubkey is the ratio the peers harness's newconn mode is read
// against. server-allocs/conn counts this process's allocations.
//
//	go test -run '^$' -bench NewConnectionServer -benchtime 1x ./internal/inbound/
func BenchmarkNewConnectionServer(b *testing.B) {
	const rounds, perRound = 7, 400
	servers, clients := testca.New(b, "server CA"), testca.New(b, "client CA")
	serverKP, clientKP := servers.Server("gw.bench"), clients.Client("bench-client")
	dir := b.TempDir()
	for name, pem := range map[string][]byte{"ca.pem": servers.CertPEM(), "cert.pem": clientKP.CertPEM, "key.pem": clientKP.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), pem, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	judge := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cl, _ := inbound.ClientOf(r, time.Now())
		if !cl.Verified() {
			http.Error(w, string(cl.Reason), http.StatusForbidden)
			return
		}
		r.Header.Set("X-Forwarded-Client-Cert", cl.XFCC)
		w.Header().Set("Content-Type", "application/json")
		w.Write(newConnBody)
	})
	m := inbound.New(inbound.Options{Handler: judge})
	b.Cleanup(func() { m.Close(b.Context()) })
	// The servers' goroutines inherit a label each: a CPU profile
	// (-test.cpuprofile) tells them apart with -tagfocus target=listener.
	listener := &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
		host(serverKP, tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "gw.bench"),
	}}
	pprof.Do(b.Context(), pprof.Labels("target", "listener"), func(context.Context) { apply(b, m, listener) })
	// The same Listener with crypto/tls verifying every client chain, as
	// before the chain cache.
	uncached := inbound.New(inbound.Options{Handler: judge})
	b.Cleanup(func() { uncached.Close(b.Context()) })
	inbound.SetChainCache(false)
	pprof.Do(b.Context(), pprof.Labels("target", "listener-uncached"), func(context.Context) { apply(b, uncached, listener) })
	inbound.SetChainCache(true)
	bare := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(newConnBody)
	}))
	bare.TLS = &tls.Config{Certificates: []tls.Certificate{serverKP.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients.Pool()}
	pprof.Do(b.Context(), pprof.Labels("target", "bare"), func(context.Context) { bare.StartTLS() })
	b.Cleanup(bare.Close)
	hs := newHandshakePubkey(b, servers, clients, serverKP, clientKP)

	// connect runs the client process for n connections to url and returns
	// this process's CPU and allocations meanwhile, per connection.
	connect := func(url string, n int) (cpu float64, allocs float64) {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestNewConnectionClient$", "-test.count", "1")
		cmd.Env = append(os.Environ(), "KEYWAY_NEWCONN_URL="+url, "KEYWAY_NEWCONN_DIR="+dir, fmt.Sprintf("KEYWAY_NEWCONN_N=%d", n), "GOMAXPROCS=1")
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		cpu0 := processCPU()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("client process: %v\n%s", err, out)
		}
		cpu1 := processCPU()
		runtime.ReadMemStats(&ms1)
		return float64((cpu1 - cpu0).Microseconds()) / float64(n), float64(ms1.Mallocs-ms0.Mallocs) / float64(n)
	}
	targets := []struct{ name, url string }{
		{"listener", "https://" + m.Addr("public") + "/bench/x"},
		{"uncached", "https://" + uncached.Addr("public") + "/bench/x"},
		{"bare", bare.URL + "/bench/x"},
	}
	cpu := map[string][]float64{}
	allocs := map[string][]float64{}
	for b.Loop() {
		for _, t := range targets {
			connect(t.url, 20) // warm up
		}
		for r := range rounds {
			for i := range targets {
				t := targets[(i+r)%len(targets)]
				c, a := connect(t.url, perRound)
				cpu[t.name] = append(cpu[t.name], c)
				allocs[t.name] = append(allocs[t.name], a)
			}
			runtime.LockOSThread()
			cpu0 := processCPU()
			for range perRound {
				hs.server()
			}
			cpu["pubkey"] = append(cpu["pubkey"], float64((processCPU()-cpu0).Microseconds())/perRound)
			runtime.UnlockOSThread()
		}
	}
	med := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	b.ReportMetric(med(cpu["listener"]), "listener-µs/conn")
	b.ReportMetric(med(cpu["uncached"]), "uncached-µs/conn")
	b.ReportMetric(med(cpu["bare"]), "bare-µs/conn")
	b.ReportMetric(med(cpu["pubkey"]), "pubkey-µs/conn")
	b.ReportMetric(med(cpu["listener"])/med(cpu["pubkey"]), "listener/pubkey")
	b.ReportMetric(med(cpu["uncached"])/med(cpu["pubkey"]), "uncached/pubkey")
	b.ReportMetric(med(cpu["bare"])/med(cpu["pubkey"]), "bare/pubkey")
	b.ReportMetric(med(ratio(cpu["listener"], cpu["uncached"])), "listener/uncached")
	b.ReportMetric(med(allocs["listener"]), "listener-allocs/conn")
	b.ReportMetric(med(allocs["uncached"]), "uncached-allocs/conn")
	b.ReportMetric(med(allocs["bare"]), "bare-allocs/conn")
	b.ReportMetric(0, "ns/op")
}

// ratio is a[i]/b[i] for each round i.
func ratio(a, b []float64) []float64 {
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	return r
}

// TestNewConnectionClient is the client process of
// BenchmarkNewConnectionServer; skipped when not run by it.
func TestNewConnectionClient(t *testing.T) {
	url, dir := os.Getenv("KEYWAY_NEWCONN_URL"), os.Getenv("KEYWAY_NEWCONN_DIR")
	if url == "" {
		t.Skip("the client process of BenchmarkNewConnectionServer")
	}
	n, err := strconv.Atoi(os.Getenv("KEYWAY_NEWCONN_N"))
	if err != nil || n <= 0 || n > 100000 {
		t.Fatalf("KEYWAY_NEWCONN_N %q: want 1 to 100000", os.Getenv("KEYWAY_NEWCONN_N"))
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate in ca.pem")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "gw.bench",
			Certificates: []tls.Certificate{cert}, CurvePreferences: []tls.CurveID{tls.X25519}},
	}}
	for range n {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
}
