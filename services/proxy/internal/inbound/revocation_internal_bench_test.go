package inbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net/http"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
)

// BenchmarkRevocationCheckPath measures, without the network, the code a
// request on an open connection runs to judge its client certificate
// (ClientOf) and the code a new connection runs after crypto/tls verified
// its chain (the host's VerifyConnection), on a host with revocation off
// and on one with hard-fail against a CRL of 10,000 entries. Run with
//
//	go test -run '^$' -bench RevocationCheckPath -benchmem ./internal/inbound/
func BenchmarkRevocationCheckPath(b *testing.B) {
	servers, clients := testca.New(b, "server CA"), testca.New(b, "client CA")
	pub := clients.Publisher()
	entries := make([]x509.RevocationListEntry, 0, 10000)
	for i := range 10000 {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(int64(i) + 1), RevocationTime: time.Now()})
	}
	pub.Serve(clients.CRL(testca.CRLOptions{Revoked: entries}))
	m := New(Options{})
	b.Cleanup(func() { m.Close(context.Background()) })
	kp := servers.Server("test.com")
	leaf := clients.Client("client")
	chains := [][]*x509.Certificate{{leaf.Cert, clients.Cert}}

	for _, mode := range []revocation.Mode{revocation.Off, revocation.HardFail} {
		h := model.ListenerHost{Hostnames: []string{"test.com"}, Certificate: &kp.TLS, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: []*x509.Certificate{clients.Cert}}
		if mode != revocation.Off {
			h.Revocation = model.Revocation{Mode: mode, CRLs: []string{pub.CRLURL()}}
		}
		m.mu.Lock()
		snap, err := buildSnapshot(&model.Listener{Name: "l", Hosts: []model.ListenerHost{h}}, m.newHostRevocation, nil, nil)
		m.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(snap.close)
		if r := snap.def.revocation; r != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := r.checker.Ready(ctx); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
		srv := &server{name: "l"}
		srv.snap.Store(snap)
		c := &conn{srv: srv}
		c.handshakeHost.Store(snap.def)
		req := (&http.Request{Host: "test.com", TLS: &tls.ConnectionState{ServerName: "test.com", PeerCertificates: []*x509.Certificate{leaf.Cert}, VerifiedChains: chains}}).
			WithContext(context.WithValue(context.Background(), connKey{}, c))

		b.Run(string(mode)+"/request", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if cl, _ := ClientOf(req, time.Now()); cl.Reason != "" || cl.XFCC == "" {
					b.Fatalf("client refused: %s", cl.Reason)
				}
			}
		})
		verify := snap.def.cfg.VerifyConnection
		cs := tls.ConnectionState{ServerName: "test.com", PeerCertificates: []*x509.Certificate{leaf.Cert}, VerifiedChains: chains}
		b.Run(string(mode)+"/handshake", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if verify != nil {
					if err := verify(cs); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
