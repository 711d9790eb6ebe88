package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/testwait"
	"keyway.dev/tests/harness"
)

// freePort returns a loopback address nothing listens on at the moment.
func freePort(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// BenchmarkMTLSToMTLS is the comparison the gateway is built for: clients
// reach the node over mutual TLS on keep-alive connections (HTTP/1.1, or
// HTTP/2 with 16 streams on one connection per client), and the node reaches
// the upstream over mutual TLS (HTTP/1.1, pooled). It reports the node's CPU
// per request (from /proc) and requests/s, medians of alternating rounds.
func BenchmarkMTLSToMTLS(b *testing.B) {
	for _, inbound := range []struct {
		name string
		h2   bool
	}{{"h1-in", false}, {"h2-in", true}} {
		b.Run(inbound.name, func(b *testing.B) {
			s := start(b)
			url, clientFor := s.mtlsListener(b, inbound.h2, false)

			var rps, cpu, p50, p99 []float64
			for b.Loop() {
				for round := range rounds {
					if round == 0 {
						profile(b, s.proxy.AdminURL)
					}
					cpu0, err := harness.CPUTime(s.proxy.Pid())
					if err != nil {
						b.Fatal(err)
					}
					lat, failed, el := load(clientFor, url)
					cpu1, _ := harness.CPUTime(s.proxy.Pid())
					if failed > 0 {
						b.Fatalf("%d requests failed", failed)
					}
					slices.Sort(lat)
					rps = append(rps, float64(len(lat))/el.Seconds())
					p50 = append(p50, float64(pct(lat, 0.50).Microseconds()))
					p99 = append(p99, float64(pct(lat, 0.99).Microseconds()))
					cpu = append(cpu, float64((cpu1-cpu0).Microseconds())/float64(len(lat)))
				}
			}
			b.ReportMetric(median(rps), "req/s")
			b.ReportMetric(median(cpu), "proxy-cpu-µs/req")
			b.ReportMetric(median(p50), "p50-µs")
			b.ReportMetric(median(p99), "p99-µs")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkNewMTLSConnection: the node's CPU per new inbound mutual-TLS
// connection (TLS 1.3, ECDSA P-256 certificates, require-and-verify, one
// request each, no resumption), against the public-key work the server side
// of such a handshake does, measured in this process on the same machine:
// sign its CertificateVerify, verify the client's, verify the client
// certificate's CA signature, and the key exchange Go offers by default
// (X25519MLKEM768: an X25519 key pair and shared secret, ML-KEM-768
// encapsulation).
func BenchmarkNewMTLSConnection(b *testing.B) {
	s := start(b)
	url, newConnClient := s.mtlsListener(b, false, true)
	gw, client := s.ca.Server("gw.bench"), s.ca.Client("bench-client") // same kinds of key as the Listener's

	var perConn, crypto, rps []float64
	for b.Loop() {
		for round := range rounds {
			if round == 0 {
				profile(b, s.proxy.AdminURL)
			}
			cpu0, err := harness.CPUTime(s.proxy.Pid())
			if err != nil {
				b.Fatal(err)
			}
			lat, failed, el := load(newConnClient, url)
			cpu1, _ := harness.CPUTime(s.proxy.Pid())
			if failed > 0 {
				b.Fatalf("%d requests failed", failed)
			}
			perConn = append(perConn, float64((cpu1-cpu0).Microseconds())/float64(len(lat)))
			rps = append(rps, float64(len(lat))/el.Seconds())
			crypto = append(crypto, serverHandshakeCrypto(b, s.ca.Cert, gw, client))
		}
	}
	b.ReportMetric(median(perConn), "proxy-cpu-µs/conn")
	b.ReportMetric(median(crypto), "pubkey-µs/conn")
	b.ReportMetric(median(perConn)/median(crypto), "cpu/pubkey")
	b.ReportMetric(median(rps), "conn/s")
	b.ReportMetric(0, "ns/op")
}

// profile, when KEYWAY_BENCH_CPUPROFILE names a file, records the node's CPU
// profile over the next two seconds into it, in the background.
func profile(b *testing.B, adminURL string) {
	path := os.Getenv("KEYWAY_BENCH_CPUPROFILE")
	if path == "" {
		return
	}
	done := make(chan struct{})
	b.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		resp, err := harness.Operator(b).HTTP.Get(adminURL + "/debug/pprof/profile?seconds=2")
		if err != nil {
			b.Errorf("profiling the node: %v", err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err != nil {
			b.Errorf("profiling the node: %v", err)
			return
		}
		defer f.Close()
		io.Copy(f, resp.Body)
	}()
}

// mtlsListener applies the bench route over outbound mTLS (HTTP/1.1 to the
// upstream) and a Listener on a free port that requires and verifies client
// certificates from the bench CA; it returns the Listener's URL and a
// client factory (new transport each call, keep-alive unless newConn, h2
// when asked) once the node serves it.
func (s *setup) mtlsListener(b *testing.B, h2, newConn bool) (url string, client func() *http.Client) {
	b.Helper()
	ctx := context.Background()
	if err := s.apply(ctx, 0, []any{"http/1.1"}); err != nil {
		b.Fatal(err)
	}
	waitFingerprint(b, s.proxy.URL+"/bench", s.gateways[0].Fingerprint())
	gw, kp := s.ca.Server("gw.bench"), s.ca.Client("bench-client")
	addr := freePort(b)
	_, err := s.policy.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{
		{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{ApiVersion: "keyway.dev/v1alpha1", Kind: "Listener",
			Metadata: &policyv1.ObjectMeta{Name: "bench"},
			Spec: &policyv1.ListenerSpec{Address: addr, Hosts: []*policyv1.ListenerHost{{
				Hostnames: []string{"gw.bench"}, Default: true,
				Certificate: &policyv1.KeyPair{Crt: string(gw.CertPEM), Key: string(gw.KeyPEM)},
				ClientAuth:  "require-and-verify", ClientCas: string(s.ca.CertPEM()),
			}}},
		}}},
	}}))
	if err != nil {
		b.Fatal(err)
	}
	client = func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: s.ca.Pool(), ServerName: "gw.bench", Certificates: []tls.Certificate{kp.TLS}},
			MaxIdleConnsPerHost: 1, ForceAttemptHTTP2: h2, DisableKeepAlives: newConn,
		}}
	}
	url = "https://" + addr + "/bench"
	// Polling a process we cannot subscribe to.
	testwait.Eventually(b, 10*time.Second, func() error {
		if _, err := fingerprint(client(), url); err != nil {
			return fmt.Errorf("listener not served: %w", err)
		}
		return nil
	})
	return url, client
}
