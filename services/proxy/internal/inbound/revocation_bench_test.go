package inbound_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/inbound"
)

// BenchmarkRevocationCost measures what a hard-fail revocation check
// against a CRL of 10,000 entries adds to a request on an open connection
// and to a new connection (a full TLS 1.3 mutual-TLS handshake), against a
// host of the same Listener with revocation off, and a second host with it
// off as a control (the difference between the two off hosts is the noise
// of the measurement). The handler runs the
// per-request check (inbound.ClientOf), as the proxy's does. Rounds
// alternate between the hosts; the metrics are medians of the rounds'
// median latencies. Run with
//
//	go test -run '^$' -bench RevocationCost -benchtime 1x ./internal/inbound/
func BenchmarkRevocationCost(b *testing.B) {
	const (
		rounds           = 9
		requestsPerRound = 3000
		connsPerRound    = 300
	)
	servers, clients := testca.New(b, "server CA"), testca.New(b, "client CA")
	pub := clients.Publisher()
	entries := make([]x509.RevocationListEntry, 0, 10000)
	for i := range 10000 {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(int64(i) + 1), RevocationTime: time.Now()})
	}
	pub.Serve(clients.CRL(testca.CRLOptions{Revoked: entries}))

	m := inbound.New(inbound.Options{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cl, _ := inbound.ClientOf(r, time.Now()); cl.Reason != "" {
			http.Error(w, string(cl.Reason), http.StatusUnauthorized)
		}
	})})
	b.Cleanup(func() { m.Close(b.Context()) })
	kp := servers.Server("off.test", "crl.test", "control.test")
	off := host(kp, tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "off.test")
	control := host(kp, tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "control.test")
	crl := host(kp, tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "crl.test")
	crl.Revocation = model.Revocation{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}}
	apply(b, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{off, crl, control}})
	addr := m.Addr("public")
	client := clients.Client("client")

	type mode struct {
		name      string
		keepAlive *http.Client
		fresh     *http.Client
	}
	newClient := func(sni string, keepAlive bool) *http.Client {
		return &http.Client{Transport: &http.Transport{
			DisableKeepAlives: !keepAlive,
			TLSClientConfig:   &tls.Config{RootCAs: servers.Pool(), ServerName: sni, Certificates: []tls.Certificate{client.TLS}, ClientSessionCache: nil},
		}}
	}
	modes := []mode{
		{"off", newClient("off.test", true), newClient("off.test", false)},
		{"hard-fail", newClient("crl.test", true), newClient("crl.test", false)},
		{"off-control", newClient("control.test", true), newClient("control.test", false)},
	}
	do := func(c *http.Client) time.Duration {
		began := time.Now()
		resp, err := c.Get("https://" + addr + "/")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		return time.Since(began)
	}
	for _, md := range modes { // warm up, and the hard-fail host's first fetch
		do(md.keepAlive)
		do(md.fresh)
	}

	medianOf := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Nanoseconds()) / 1e3
	}
	perRequest := make([][]float64, len(modes))
	perConn := make([][]float64, len(modes))
	for b.Loop() {
		for r := range rounds {
			for i := range modes {
				idx := (i + r) % len(modes) // alternate which mode goes first
				md := modes[idx]
				lat := make([]time.Duration, 0, requestsPerRound)
				for range requestsPerRound {
					lat = append(lat, do(md.keepAlive))
				}
				perRequest[idx] = append(perRequest[idx], medianOf(lat))
				lat = lat[:0]
				for range connsPerRound {
					lat = append(lat, do(md.fresh))
				}
				perConn[idx] = append(perConn[idx], medianOf(lat))
			}
		}
	}
	med := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	for i, md := range modes {
		b.ReportMetric(med(perRequest[i]), md.name+"-request-µs")
		b.ReportMetric(med(perConn[i]), md.name+"-connection-µs")
	}
	b.ReportMetric(med(perRequest[1])-med(perRequest[0]), "revocation-request-extra-µs")
	b.ReportMetric(med(perConn[1])-med(perConn[0]), "revocation-connection-extra-µs")
	fmt.Printf("revocation cost: per request %.1f µs (off) vs %.1f µs (hard-fail) vs %.1f µs (off, control); per new connection %.0f µs vs %.0f µs vs %.0f µs; medians of %d rounds\n",
		med(perRequest[0]), med(perRequest[1]), med(perRequest[2]), med(perConn[0]), med(perConn[1]), med(perConn[2]), rounds)
}
