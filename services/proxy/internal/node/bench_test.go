package node_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime/metrics"
	"strings"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"keyway.dev/internal/telemetry"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/node"
)

// BenchmarkProxyMTLS measures one keep-alive HTTP/1.1 request through the
// node to an mTLS upstream (h1 and h2 upstream connections: an http1 and an
// h2 Service). Client, node
// and upstream share the process, so allocs/op and cpu-ns/op cover all
// three: BenchmarkDirectMTLS is the same request without the node, and the
// difference is the node's cost.
//
// h1-post is the h1 case with a POST of 1 KiB: a request with a body of
// known length, which the node also sends in the calling goroutine.
func BenchmarkProxyMTLS(b *testing.B) {
	for _, name := range []string{"h1", "h2", "h1-post"} {
		h2 := name == "h2"
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, nil)
			srv := upstreamServer(b, e.server, e.clients, h2, nil)
			e.apply(b, "bench", map[bool]string{false: "http1", true: "h2"}[h2], addr(srv), mtls(e.ca, e.gateway, nil))
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
			if name == "h1-post" {
				runPost(b, c, e.url("/bench/x"), bytes.Repeat([]byte("k"), 1<<10))
				return
			}
			run(b, c, e.url("/bench/x"))
		})
	}
}

// BenchmarkDirectMTLS is the baseline: the same client and upstream, the
// client speaking mTLS to the upstream itself.
func BenchmarkDirectMTLS(b *testing.B) {
	for _, h2 := range []bool{false, true} {
		b.Run(map[bool]string{false: "h1", true: "h2"}[h2], func(b *testing.B) {
			e := newEnv(b, nil)
			srv := upstreamServer(b, e.server, e.clients, h2, nil)
			t := &http.Transport{MaxIdleConnsPerHost: 16, ForceAttemptHTTP2: h2, TLSClientConfig: &tls.Config{
				RootCAs: e.ca.Pool(), ServerName: "orders.internal", Certificates: []tls.Certificate{e.gateway.TLS},
			}}
			run(b, &http.Client{Transport: t}, srv.URL+"/bench/x")
		})
	}
}

func run(b *testing.B, c *http.Client, url string) { runPost(b, c, url, nil) }

// runPost is run with a POST of body; nil: a GET.
func runPost(b *testing.B, c *http.Client, url string, body []byte) {
	get := func() {
		var resp *http.Response
		var err error
		if body == nil {
			resp, err = c.Get(url)
		} else {
			resp, err = c.Post(url, "application/octet-stream", bytes.NewReader(body))
		}
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	get() // connections up
	b.ReportAllocs()
	cpu0, g0 := cpuTime(), goroutinesCreated()
	b.ResetTimer()
	for b.Loop() {
		get()
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(goroutinesCreated()-g0)/float64(b.N), "goroutines/op")
}

// runStreams is run with streams requests in flight at once per
// GOMAXPROCS (b.SetParallelism), on the client's connections.
func runStreams(b *testing.B, c *http.Client, url string, streams int) {
	get := func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil { // connection up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(streams)
	cpu0, g0 := cpuTime(), goroutinesCreated()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := get(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(goroutinesCreated()-g0)/float64(b.N), "goroutines/op")
}

// goroutinesCreated counts the goroutines the process has started: per
// request, the hand-offs a protocol makes to goroutines of their own
// (HTTP/2's handler and frame writes, say).
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkProxyMTLSTraced is BenchmarkProxyMTLS with tracing on, every
// request sampled, spans batched to an exporter that discards them: the
// cost of building and ending the spans, without the export's.
func BenchmarkProxyMTLSTraced(b *testing.B) {
	for _, h2 := range []bool{false, true} {
		b.Run(map[bool]string{false: "h1", true: "h2"}[h2], func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
				sdktrace.WithSpanProcessor(telemetry.NewBatcher(tracetest.NewNoopExporter(), telemetry.BatchOptions{})))
			b.Cleanup(func() { tp.Shutdown(context.Background()) })
			e := newEnv(b, func(c *node.Config) { c.Tracing = telemetry.New(tp) })
			srv := upstreamServer(b, e.server, e.clients, h2, nil)
			e.apply(b, "bench", map[bool]string{false: "http1", true: "h2"}[h2], addr(srv), mtls(e.ca, e.gateway, nil))
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
			run(b, c, e.url("/bench/x"))
		})
	}
}

// BenchmarkListener measures requests through a Listener that requires and
// verifies client certificates (ECDSA P-256, TLS 1.3) to an mTLS HTTP/1.1
// upstream: h1 and h2 are keep-alive requests on one connection (HTTP/1.1,
// and h2 streams one after another), h2-streams eight streams at once on one
// h2 connection (as the peers harness's load generator sends them),
// newconn a full handshake per request with no resumption (HTTP/1.1). The
// traced variants have every request
// sampled, spans batched to an exporter that discards them. Client, node
// and upstream share the process: compare allocs/op and cpu-ns/op between
// builds, not with another benchmark.
func BenchmarkListener(b *testing.B) {
	for _, mode := range []string{"h1", "h2", "h2-streams", "newconn", "h1-traced", "h2-traced"} {
		b.Run(mode, func(b *testing.B) {
			var mod func(*node.Config)
			if strings.HasSuffix(mode, "-traced") {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
					sdktrace.WithSpanProcessor(telemetry.NewBatcher(tracetest.NewNoopExporter(), telemetry.BatchOptions{})))
				b.Cleanup(func() { tp.Shutdown(context.Background()) })
				mod = func(c *node.Config) { c.Tracing = telemetry.New(tp) }
			}
			e := newEnv(b, mod)
			srv := upstreamServer(b, e.server, e.clients, false, nil)
			e.apply(b, "bench", "http1", addr(srv), mtls(e.ca, e.gateway, nil))
			servers, clients := testca.New(b, "server CA"), testca.New(b, "client CA")
			waitRevision(b, e.node, put(b, e.kv, listenerResource("public", "127.0.0.1:0",
				listenerHost(servers.Server("gw.bench"), "require-and-verify", []*testca.CA{clients}, "gw.bench"))))
			t := &http.Transport{MaxIdleConnsPerHost: 1, TLSClientConfig: &tls.Config{
				RootCAs: servers.Pool(), ServerName: "gw.bench", Certificates: []tls.Certificate{clients.Client("bench-client").TLS},
			}}
			t.ForceAttemptHTTP2 = strings.HasPrefix(mode, "h2")
			t.DisableKeepAlives = mode == "newconn"
			url := "https://" + e.node.ListenerAddr("public") + "/bench/x"
			if mode == "h2-streams" {
				t.MaxConnsPerHost = 1
				runStreams(b, &http.Client{Transport: t}, url, 8)
				return
			}
			run(b, &http.Client{Transport: t}, url)
		})
	}
}

// BenchmarkBareListener is BenchmarkListener's h1 and h2 against a bare
// net/http server with the same TLS (require-and-verify, ECDSA P-256) that
// answers every request itself with a body of the same size: what net/http
// alone costs per request, so that BenchmarkListener/h2 minus
// BenchmarkListener/h1, less this h2 minus h1, is what the node adds to an
// h2 request beyond net/http's own h2.
func BenchmarkBareListener(b *testing.B) {
	for _, h2 := range []bool{false, true} {
		b.Run(map[bool]string{false: "h1", true: "h2"}[h2], func(b *testing.B) {
			servers, clients := testca.New(b, "server CA"), testca.New(b, "client CA")
			body := []byte(`{"cn":"gateway","fingerprint":"0000000000000000000000000000000000000000000000000000000000000000","proto":"HTTP/1.1","path":"/bench/x","requestId":"test-000000-1","forwardedFor":"127.0.0.1","traceparent":""}` + "\n")
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("X-Request-Id", "test-000000-1")
				w.Write(body)
			}))
			srv.EnableHTTP2 = h2
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{servers.Server("gw.bench").TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients.Pool()}
			srv.StartTLS()
			b.Cleanup(srv.Close)
			t := &http.Transport{MaxIdleConnsPerHost: 1, ForceAttemptHTTP2: h2, TLSClientConfig: &tls.Config{
				RootCAs: servers.Pool(), ServerName: "gw.bench", Certificates: []tls.Certificate{clients.Client("bench-client").TLS},
			}}
			run(b, &http.Client{Transport: t}, srv.URL+"/bench/x")
		})
	}
}
