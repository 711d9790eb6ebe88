package bench

import (
	"context"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"keyway.dev/tests/harness"
)

// BenchmarkGCSettings: CPU per proxied request and peak resident memory of
// nodes that differ only in their collector's setting (GOGC=100, the Go
// default; 200; 400; off with GOMEMLIMIT=256MiB), in alternating rounds of
// one run against the same mTLS upstream (h1 and h2 upstream connections,
// keep-alive). The settings go in through the environment, so the figures
// hold whichever way the node is given them.
func BenchmarkGCSettings(b *testing.B) {
	settings := []struct{ name, gogc, limit string }{
		{"gogc100", "100", ""},
		{"gogc200", "200", ""},
		{"gogc400", "400", ""},
		{"off-256MiB", "off", "256MiB"},
	}
	for _, proto := range []struct {
		name string
		alpn []any
	}{{"h1-upstream", []any{"http/1.1"}}, {"h2-upstream", []any{"h2"}}} {
		b.Run(proto.name, func(b *testing.B) {
			s := start(b)
			nodes := make([]*harness.Proxy, len(settings))
			for i, set := range settings {
				env := []string{"GOGC=" + set.gogc}
				if set.limit != "" {
					env = append(env, "GOMEMLIMIT="+set.limit)
				}
				id := "bench-gc-" + strconv.Itoa(i)
				nodes[i] = harness.StartProxyEnv(b, s.natsURL, id, env, s.secrets.ClientArgs(b, id)...)
			}
			if err := s.apply(context.Background(), 0, proto.alpn); err != nil {
				b.Fatal(err)
			}
			for _, n := range nodes {
				waitFingerprint(b, n.URL+"/bench", s.gateways[0].Fingerprint())
			}
			client := func() *http.Client { return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}} }
			cpu := make([][]float64, len(settings))
			rps := make([][]float64, len(settings))
			for b.Loop() {
				for range rounds {
					for i, n := range nodes {
						cpu0, err := harness.CPUTime(n.Pid())
						if err != nil {
							b.Fatal(err)
						}
						lat, failed, el := load(client, n.URL+"/bench")
						cpu1, _ := harness.CPUTime(n.Pid())
						if failed > 0 {
							b.Fatalf("%d requests through %s failed", failed, n.Name)
						}
						cpu[i] = append(cpu[i], float64((cpu1-cpu0).Microseconds())/float64(len(lat)))
						rps[i] = append(rps[i], float64(len(lat))/el.Seconds())
					}
				}
			}
			b.StopTimer()
			for i, set := range settings {
				b.ReportMetric(median(cpu[i]), set.name+"-cpu-µs/req")
				b.ReportMetric(median(rps[i]), set.name+"-req/s")
				b.ReportMetric(float64(peakRSS(b, nodes[i].Pid()))/(1<<20), set.name+"-peak-rss-MiB")
				b.Logf("%s cpu µs/req by round %v", set.name, slices.Clone(cpu[i]))
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// peakRSS is the process's peak resident set (VmHWM) in bytes.
func peakRSS(b *testing.B, pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc/pid/status")
	return 0
}
