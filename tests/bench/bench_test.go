// Package bench measures Keyway with its real parts: the built proxy and
// policy binaries as processes, the nats-server binary, and an mTLS upstream
// on loopback. Run with `make bench`; figures are reported as benchmark
// metrics, never asserted.
package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/devstack/echo"
	"keyway.dev/internal/testca"
	"keyway.dev/tests/harness"
)

const (
	workers   = 16              // concurrent keep-alive connections
	roundTime = 3 * time.Second // one load round; bounded in time
	maxReqs   = 2_000_000       // and in count
	rounds    = 3               // alternating direct / proxied rounds
	applies   = 120             // propagation samples
)

type setup struct {
	natsURL  string
	policy   policyv1connect.PolicyServiceClient
	proxy    *harness.Proxy
	upstream *echo.Server
	ca       *testca.CA
	gateways [2]*testca.KeyPair
	secrets  *harness.Secrets
}

func start(b *testing.B) *setup {
	b.Helper()
	natsURL, _ := harness.NATS(b)
	// The bench applies inline private keys: they are moved into the
	// secrets service, and the node fetches them from it.
	secrets := harness.StartSecrets(b, natsURL, nil)
	policyURL, _ := harness.Policy(b, natsURL, secrets.PolicyArgs(b, "keyway-policy")...)
	s := &setup{natsURL: natsURL, secrets: secrets, policy: policyv1connect.NewPolicyServiceClient(harness.Operator(b).HTTP, policyURL), ca: testca.New(b, "bench CA")}
	s.gateways = [2]*testca.KeyPair{s.ca.Client("gateway-a"), s.ca.Client("gateway-b")}
	up, err := echo.Start("127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{s.ca.Server("upstream.bench").TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    s.ca.Pool(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { up.Close() })
	s.upstream = up
	s.proxy = harness.StartProxy(b, natsURL, "bench-1", append(secrets.ClientArgs(b, "bench-1"), "--pprof")...)
	return s
}

// apply stores the Service, Route and a binding presenting gateway i.
func (s *setup) apply(ctx context.Context, i int, alpn []any) error {
	cfg, err := structpb.NewStruct(map[string]any{
		"skipValidation": false, "sni": "upstream.bench", "alpn": alpn,
		"trustedCA":   string(s.ca.CertPEM()),
		"certificate": map[string]any{"key": string(s.gateways[i].KeyPEM), "crt": string(s.gateways[i].CertPEM)},
	})
	if err != nil {
		return err
	}
	_, err = s.policy.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{
		{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{ApiVersion: "keyway.dev/v1alpha1", Kind: "Service", Metadata: &policyv1.ObjectMeta{Name: "bench"}, Spec: &policyv1.ServiceSpec{Address: s.upstream.Addr()}}}},
		{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{ApiVersion: "keyway.dev/v1alpha1", Kind: "Route", Metadata: &policyv1.ObjectMeta{Name: "bench"}, Spec: &policyv1.RouteSpec{Path: "/", Service: "bench"}}}},
		{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{ApiVersion: "keyway.dev/v1alpha1", Kind: "PolicyBinding",
			Metadata: &policyv1.ObjectMeta{Name: "bench-mtls"},
			Spec: &policyv1.PolicyBindingSpec{
				TargetRef: &policyv1.TargetRef{Kind: "Service", Name: "bench"},
				PolicyRef: &policyv1.PolicyRef{Name: "tls-outbound"},
				Config:    cfg,
			}}}},
	}}))
	return err
}

// fingerprint asks the upstream, through the proxy, which client certificate
// the proxy presented.
func fingerprint(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, body)
	}
	var rep echo.Reply
	if err := json.Unmarshal(body, &rep); err != nil {
		return "", err
	}
	return rep.ClientFingerprint, nil
}

// load runs workers concurrent keep-alive clients against url for roundTime
// (or maxReqs requests) and returns every latency and any failure count.
func load(client func() *http.Client, url string) (lat []time.Duration, failed int, elapsed time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var count int64
	deadline := time.Now().Add(roundTime)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client()
			local := make([]time.Duration, 0, 1<<16)
			bad := 0
			buf := make([]byte, 4096)
			for time.Now().Before(deadline) {
				mu.Lock()
				count++
				over := count > maxReqs
				mu.Unlock()
				if over {
					break
				}
				t0 := time.Now()
				resp, err := c.Get(url)
				if err != nil {
					bad++
					continue
				}
				for {
					if _, err := resp.Body.Read(buf); err != nil {
						break
					}
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					bad++
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			failed += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lat, failed, time.Since(start)
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkProxyVsDirect: requests/s and p99 through one node with outbound
// mTLS on keep-alive connections, against the same upstream hit directly
// with the same client certificate, in alternating rounds of one run.
func BenchmarkProxyVsDirect(b *testing.B) {
	for _, proto := range []struct {
		name string
		alpn []any
	}{{"h1-upstream", []any{"http/1.1"}}, {"h2-upstream", []any{"h2"}}} {
		b.Run(proto.name, func(b *testing.B) {
			s := start(b)
			ctx := context.Background()
			if err := s.apply(ctx, 0, proto.alpn); err != nil {
				b.Fatal(err)
			}
			proxyURL := s.proxy.URL + "/bench"
			waitFingerprint(b, proxyURL, s.gateways[0].Fingerprint())
			direct := func() *http.Client {
				return &http.Client{Transport: &http.Transport{
					TLSClientConfig:     &tls.Config{RootCAs: s.ca.Pool(), ServerName: "upstream.bench", Certificates: []tls.Certificate{s.gateways[0].TLS}},
					MaxIdleConnsPerHost: 1, ForceAttemptHTTP2: false,
				}}
			}
			viaProxy := func() *http.Client {
				return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			}
			var dRPS, pRPS, dP99, pP99, pP50, dP50, cpu []float64
			for b.Loop() {
				for range rounds {
					lat, failed, el := load(direct, "https://"+s.upstream.Addr()+"/bench")
					if failed > 0 {
						b.Fatalf("%d direct requests failed", failed)
					}
					slices.Sort(lat)
					dRPS = append(dRPS, float64(len(lat))/el.Seconds())
					dP50 = append(dP50, float64(pct(lat, 0.50).Microseconds()))
					dP99 = append(dP99, float64(pct(lat, 0.99).Microseconds()))

					cpu0, err := harness.CPUTime(s.proxy.Pid())
					if err != nil {
						b.Fatal(err)
					}
					lat, failed, el = load(viaProxy, proxyURL)
					cpu1, _ := harness.CPUTime(s.proxy.Pid())
					if failed > 0 {
						b.Fatalf("%d proxied requests failed", failed)
					}
					slices.Sort(lat)
					pRPS = append(pRPS, float64(len(lat))/el.Seconds())
					pP50 = append(pP50, float64(pct(lat, 0.50).Microseconds()))
					pP99 = append(pP99, float64(pct(lat, 0.99).Microseconds()))
					cpu = append(cpu, float64((cpu1-cpu0).Microseconds())/float64(len(lat)))
				}
			}
			b.ReportMetric(median(dRPS), "direct-req/s")
			b.ReportMetric(median(pRPS), "proxy-req/s")
			b.ReportMetric(median(pRPS)/median(dRPS), "proxy/direct")
			b.ReportMetric(median(dP50), "direct-p50-µs")
			b.ReportMetric(median(pP50), "proxy-p50-µs")
			b.ReportMetric(median(dP99), "direct-p99-µs")
			b.ReportMetric(median(pP99), "proxy-p99-µs")
			b.ReportMetric(median(cpu), "proxy-cpu-µs/req")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkTracingOnVsOff: requests/s, latency and CPU of one node with
// tracing off (the default) against one with tracing on, every request
// sampled and exported over OTLP/gRPC to a receiver in this process, in
// alternating rounds of one run against the same mTLS upstream (h1).
func BenchmarkTracingOnVsOff(b *testing.B) {
	s := start(b)
	collector := harness.StartCountingCollector(b)
	traced := harness.StartProxyEnv(b, s.natsURL, "bench-traced", []string{
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.Endpoint,
		"OTEL_TRACES_SAMPLER=always_on",
		// A queue that holds a round's spans between exports, so that
		// none is dropped and every request pays for its export.
		"OTEL_BSP_MAX_QUEUE_SIZE=131072",
		"OTEL_BSP_SCHEDULE_DELAY=200",
	}, append(s.secrets.ClientArgs(b, "bench-traced"), "--pprof")...)
	ctx := context.Background()
	if err := s.apply(ctx, 0, []any{"http/1.1"}); err != nil {
		b.Fatal(err)
	}
	off, on := s.proxy.URL+"/bench", traced.URL+"/bench"
	waitFingerprint(b, off, s.gateways[0].Fingerprint())
	waitFingerprint(b, on, s.gateways[0].Fingerprint())
	client := func() *http.Client { return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}} }
	round := func(p *harness.Proxy, url string) (rps, p50, p99, cpu float64, n int) {
		cpu0, err := harness.CPUTime(p.Pid())
		if err != nil {
			b.Fatal(err)
		}
		lat, failed, el := load(client, url)
		cpu1, _ := harness.CPUTime(p.Pid())
		if failed > 0 {
			b.Fatalf("%d requests through %s failed", failed, p.Name)
		}
		slices.Sort(lat)
		return float64(len(lat)) / el.Seconds(), float64(pct(lat, 0.50).Microseconds()), float64(pct(lat, 0.99).Microseconds()),
			float64((cpu1 - cpu0).Microseconds()) / float64(len(lat)), len(lat)
	}
	var offRPS, onRPS, offP50, onP50, offP99, onP99, offCPU, onCPU []float64
	var tracedReqs int
	spans0 := collector.Count()
	for b.Loop() {
		for r := range rounds {
			rps, p50, p99, cpu, _ := round(s.proxy, off)
			offRPS, offP50, offP99, offCPU = append(offRPS, rps), append(offP50, p50), append(offP99, p99), append(offCPU, cpu)
			if r == 0 {
				profile(b, traced.AdminURL) // the traced node's
			}
			rps, p50, p99, cpu, n := round(traced, on)
			onRPS, onP50, onP99, onCPU = append(onRPS, rps), append(onP50, p50), append(onP99, p99), append(onCPU, cpu)
			tracedReqs += n
		}
	}
	b.StopTimer()
	// The last batch is exported within OTEL_BSP_SCHEDULE_DELAY.
	deadline := time.Now().Add(10 * time.Second)
	for last := -1; collector.Count() != last && time.Now().Before(deadline); {
		last = collector.Count()
		time.Sleep(time.Second)
	}
	b.ReportMetric(median(offRPS), "off-req/s")
	b.ReportMetric(median(onRPS), "on-req/s")
	b.ReportMetric(median(onRPS)/median(offRPS), "on/off")
	b.ReportMetric(median(offP50), "off-p50-µs")
	b.ReportMetric(median(onP50), "on-p50-µs")
	b.ReportMetric(median(offP99), "off-p99-µs")
	b.ReportMetric(median(onP99), "on-p99-µs")
	b.ReportMetric(median(offCPU), "off-cpu-µs/req")
	b.ReportMetric(median(onCPU), "on-cpu-µs/req")
	b.ReportMetric(float64(collector.Count()-spans0)/float64(max(1, tracedReqs)), "spans/req")
	b.ReportMetric(0, "ns/op")
}

func waitFingerprint(b *testing.B, url, want string) {
	b.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := fingerprint(c, url)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("proxy does not serve the binding: %v %s", err, got)
		}
	}
}

// BenchmarkApplyToServing: time from Apply returning to the node serving the
// new binding (its next request presents the new client certificate), over
// many applies that alternate between two client certificates.
func BenchmarkApplyToServing(b *testing.B) {
	s := start(b)
	ctx := context.Background()
	if err := s.apply(ctx, 0, []any{"h2", "http/1.1"}); err != nil {
		b.Fatal(err)
	}
	url := s.proxy.URL + "/propagation"
	waitFingerprint(b, url, s.gateways[0].Fingerprint())
	c := &http.Client{Timeout: 5 * time.Second}
	var samples []time.Duration
	for b.Loop() {
		for i := 1; i <= applies; i++ {
			next := i % 2
			if err := s.apply(ctx, next, []any{"h2", "http/1.1"}); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			want := s.gateways[next].Fingerprint()
			for {
				got, err := fingerprint(c, url)
				if err != nil {
					b.Fatalf("request during propagation failed: %v", err)
				}
				if got == want {
					break
				}
				if time.Since(t0) > 10*time.Second {
					b.Fatalf("apply %d not served within 10s", i)
				}
			}
			samples = append(samples, time.Since(t0))
		}
	}
	slices.Sort(samples)
	b.ReportMetric(float64(pct(samples, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(samples, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(len(samples)), "applies")
	b.ReportMetric(0, "ns/op")
}
