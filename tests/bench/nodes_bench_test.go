package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/devstack/echo"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/natsperm"
	"keyway.dev/internal/nodekv"
	"keyway.dev/internal/testca"
	"keyway.dev/tests/harness"
)

// registry follows the node bucket from the benchmark process: the nodes'
// own reports of the revision they serve.
type registry struct {
	mu      sync.Mutex
	revs    map[string]uint64
	changed chan struct{}
}

func followNodes(b *testing.B, natsURL string) *registry {
	b.Helper()
	nc := harness.NATSConnect(b, natsURL, natsperm.Policy) // the policy service's user reads the registry
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	kv, err := nodekv.Open(ctx, js, "", 0)
	if err != nil {
		b.Fatal(err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		b.Fatal(err)
	}
	r := &registry{revs: make(map[string]uint64), changed: make(chan struct{})}
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			id, _ := nodekv.ID(e.Key())
			r.mu.Lock()
			if e.Operation() == jetstream.KeyValuePut {
				if st, err := nodekv.Decode(e.Value()); err == nil {
					r.revs[id] = st.GetRevision()
				}
			} else {
				delete(r.revs, id)
			}
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
		}
	}()
	return r
}

// wait returns once n nodes report revision rev or later.
func (r *registry) wait(b *testing.B, n int, rev uint64, timeout time.Duration) {
	b.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ok := 0
		for _, v := range r.revs {
			if v >= rev {
				ok++
			}
		}
		ch := r.changed
		r.mu.Unlock()
		if ok >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			b.Fatalf("%d of %d nodes at revision %d after %s", ok, n, rev, timeout)
		}
	}
}

// BenchmarkPropagationTenNodes: time from Apply returning to all ten proxy
// nodes serving the applied revision, as the nodes report it in the node
// bucket (a node writes its status right after it publishes a snapshot),
// over 200 applies that move a Service between two upstreams.
func BenchmarkPropagationTenNodes(b *testing.B) {
	const nodes, samples = 10, 200
	natsURL, _ := harness.NATS(b)
	policyURL, _ := harness.Policy(b, natsURL)
	policy := policyv1connect.NewPolicyServiceClient(harness.Operator(b).HTTP, policyURL)
	reg := followNodes(b, natsURL)
	var ups [2]*echo.Server
	for i := range ups {
		up, err := echo.Start("127.0.0.1:0", nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { up.Close() })
		ups[i] = up
	}
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { harness.StartProxy(b, natsURL, fmt.Sprintf("prop-%02d", i)) })
	}
	wg.Wait()
	apply := func(i int) uint64 {
		resp, err := policy.Apply(context.Background(), connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{
			{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{ApiVersion: "keyway.dev/v1alpha1", Kind: "Service", Metadata: &policyv1.ObjectMeta{Name: "prop"}, Spec: &policyv1.ServiceSpec{Address: ups[i%2].Addr()}}}},
		}}))
		if err != nil {
			b.Fatal(err)
		}
		return resp.Msg.GetRevision()
	}
	reg.wait(b, nodes, apply(0), time.Minute)
	var lat []time.Duration
	for b.Loop() {
		for i := 1; i <= samples; i++ {
			rev := apply(i)
			t0 := time.Now()
			reg.wait(b, nodes, rev, time.Minute)
			lat = append(lat, time.Since(t0))
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(pct(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(lat, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(len(lat)), "applies")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkScale: a proxy node over 100 and over 10,000 Services, each with
// a Route and a tls-outbound binding (trusted CA and client certificate):
// the node's cold bootstrap (process start to reporting in the node bucket
// that it serves the bucket's last revision), the CPU time it took
// (user and system, from /proc: on a shared machine the wall time is
// mostly waiting), its resident memory once ready, and one change to
// served (a binding's put acknowledged to the node reporting its revision). The 10,000 keys of each kind are written
// to the bucket directly, in the store's format: through the API that
// would measure the policy service instead.
func BenchmarkScale(b *testing.B) {
	results := map[int][3]float64{}
	for _, n := range []int{100, 10_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				boot, bootCPU, rss, change := scaleOnce(b, n)
				results[n] = [3]float64{boot, rss, change}
				b.ReportMetric(boot, "bootstrap-ms")
				b.ReportMetric(bootCPU, "bootstrap-cpu-ms")
				b.ReportMetric(rss, "rss-MiB")
				b.ReportMetric(change, "change-p50-ms")
				if s, ok := results[100]; ok && n != 100 {
					b.ReportMetric(boot/s[0], "bootstrap-x")
					b.ReportMetric(rss/s[1], "rss-x")
					b.ReportMetric(change/s[2], "change-x")
				}
				b.ReportMetric(0, "ns/op")
			}
		})
	}
}

func scaleOnce(b *testing.B, n int) (bootMS, bootCPUMS, rssMiB, changeMS float64) {
	natsURL, _ := harness.NATS(b)
	harness.Policy(b, natsURL) // creates the buckets
	reg := followNodes(b, natsURL)
	nc := harness.NATSConnect(b, natsURL, natsperm.Policy) // writes the configuration bucket as the policy service does
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, configkv.Bucket)
	if err != nil {
		b.Fatal(err)
	}
	ca := testca.New(b, "scale CA")
	client := ca.Client("gateway")
	mtls := func(i int) *structpb.Struct {
		cfg, err := structpb.NewStruct(map[string]any{
			"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "upstream.scale",
			"certificate": map[string]any{"key": string(client.KeyPEM), "crt": string(client.CertPEM)},
			"alpn":        []any{"http/1.1"}, "minversion": []string{"1.2", "1.3"}[i%2],
		})
		if err != nil {
			b.Fatal(err)
		}
		return cfg
	}
	now := time.Now()
	var acks []jetstream.PubAckFuture
	put := func(res *policyv1.Resource) {
		v, err := configkv.Encode(res, now)
		if err != nil {
			b.Fatal(err)
		}
		f, err := js.PublishAsync("$KV."+configkv.Bucket+"."+configkv.Key(configkv.RefOf(res)), v)
		if err != nil {
			b.Fatal(err)
		}
		acks = append(acks, f)
		if len(acks)%1000 == 0 { // flow control: let the acks catch up
			<-js.PublishAsyncComplete()
		}
	}
	binding := func(i, variant int) *policyv1.Resource {
		name := fmt.Sprintf("svc-%05d", i)
		return &policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
			ApiVersion: model.APIVersion, Kind: model.KindPolicyBinding, Metadata: &policyv1.ObjectMeta{Name: name + "-mtls"},
			Spec: &policyv1.PolicyBindingSpec{
				TargetRef: &policyv1.TargetRef{Kind: model.KindService, Name: name},
				PolicyRef: &policyv1.PolicyRef{Name: model.PolicyTLSOutbound},
				Config:    mtls(variant),
			}}}}
	}
	for i := range n {
		name := fmt.Sprintf("svc-%05d", i)
		put(&policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
			ApiVersion: model.APIVersion, Kind: model.KindService, Metadata: &policyv1.ObjectMeta{Name: name},
			Spec: &policyv1.ServiceSpec{Address: fmt.Sprintf("127.0.0.1:%d", 10000+i%50000)}}}})
		put(&policyv1.Resource{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{
			ApiVersion: model.APIVersion, Kind: model.KindRoute, Metadata: &policyv1.ObjectMeta{Name: name},
			Spec: &policyv1.RouteSpec{Path: "/" + name + "/", Service: name}}}})
		put(binding(i, 0))
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("writing the bucket took over 5 minutes")
	}
	var last uint64 // the bucket's revision once written
	for _, f := range acks {
		select {
		case err := <-f.Err():
			b.Fatal(err)
		case ack := <-f.Ok():
			last = max(last, ack.Sequence)
		}
	}

	// Bootstrap ends when the node reports that it serves the bucket as
	// written: its status in the node bucket, written right after its
	// first snapshot is published, is awaited as an event. (Polling
	// /healthz, with its growing delay, saw readiness up to 200 ms late.)
	t0 := time.Now()
	var args []string
	if os.Getenv("KEYWAY_BENCH_HEAPPROFILE") != "" {
		args = append(args, "--pprof")
	}
	px := harness.StartProxyUnready(b, natsURL, fmt.Sprintf("scale-%d", n), args...)
	reg.wait(b, 1, last, 5*time.Minute)
	bootMS = float64(time.Since(t0).Microseconds()) / 1000
	harness.WaitHTTP(b, px.AdminURL+"/healthz", px.Process)
	bootCPUMS = cpuTime(b, px.Pid())
	rssMiB = rss(b, px.Pid())
	heapProfile(b, px.AdminURL, n)

	var lat []time.Duration
	for i := range 20 {
		v, err := configkv.Encode(binding(i*(n/20), 1), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		rev, err := kv.Put(ctx, configkv.Key(model.Ref{Kind: model.KindPolicyBinding, Name: fmt.Sprintf("svc-%05d-mtls", i*(n/20))}), v)
		if err != nil {
			b.Fatal(err)
		}
		reg.wait(b, 1, rev, time.Minute)
		lat = append(lat, time.Since(t1))
	}
	slices.Sort(lat)
	changeMS = float64(pct(lat, 0.5).Microseconds()) / 1000
	return bootMS, bootCPUMS, rssMiB, changeMS
}

// cpuTime is the user and system CPU time of a process so far, in
// milliseconds, from /proc (utime and stime, in clock ticks of 10 ms).
func cpuTime(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing parenthesis (state is field 3, utime 14, stime 15).
	_, rest, ok := strings.Cut(string(data), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		b.Fatalf("unexpected /proc stat: %.100q", data)
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("unexpected /proc stat: %.100q", data)
	}
	return (utime + stime) * 10
}

// heapProfile, when KEYWAY_BENCH_HEAPPROFILE names a file, writes the
// node's heap profile once it is ready into it, suffixed with the number
// of Services ("heap.prof-10000"): what the resident memory is made of.
func heapProfile(b *testing.B, adminURL string, n int) {
	path := os.Getenv("KEYWAY_BENCH_HEAPPROFILE")
	if path == "" {
		return
	}
	resp, err := harness.Operator(b).HTTP.Get(adminURL + "/debug/pprof/heap?gc=1")
	if err != nil {
		b.Fatalf("profiling the node: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		b.Fatalf("profiling the node: %v", err)
	}
	if err := os.WriteFile(fmt.Sprintf("%s-%d", path, n), data, 0o600); err != nil {
		b.Fatal(err)
	}
}

// rss is a process's resident set in MiB, from /proc.
func rss(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmRSS in /proc status")
	return 0
}
