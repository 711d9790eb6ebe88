package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"keyway.dev/devstack/echo"
	"keyway.dev/internal/testwait"
	"keyway.dev/tests/harness"
)

// Heartbeat and TTL of the node registry in these tests: short, so that a
// killed node ages out within the test, and still three heartbeats.
var (
	heartbeatArgs = []string{"--heartbeat", "1s"}
	nodeTTL       = "4s"
)

// cluster is NATS (restartable), a policy service, a plain-HTTP upstream and
// proxy nodes.
type cluster struct {
	nats      *harness.NATSServer
	policyURL string
	upstream  *echo.Server
	proxies   []*harness.Proxy
	dir       string
}

func newCluster(t *testing.T, nodes int, policyArgs ...string) *cluster {
	t.Helper()
	c := &cluster{dir: t.TempDir()}
	c.nats = harness.StartNATS(t)
	c.policyURL, _ = harness.Policy(t, c.nats.URL, append([]string{"--node-ttl", nodeTTL}, policyArgs...)...)
	up, err := echo.Start("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	c.upstream = up
	c.startNodes(t, nodes)
	return c
}

// startNodes starts n more nodes, in parallel (each waits for its own
// bootstrap).
func (c *cluster) startNodes(t *testing.T, n int) {
	t.Helper()
	first := len(c.proxies)
	started := make([]*harness.Proxy, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			started[i] = harness.StartProxy(t, c.nats.URL, fmt.Sprintf("node-%02d", first+i+1), heartbeatArgs...)
		})
	}
	wg.Wait()
	c.proxies = append(c.proxies, started...)
}

func (c *cluster) ctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return harness.Run(t, harness.Bin(t, "keywayctl"), append(append([]string{"--server", c.policyURL}, harness.Operator(t).Args...), args...)...)
}

// service writes a Service and its Route /<name>/ to a manifest file.
func (c *cluster) service(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(c.dir, name+".yaml")
	m := fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: Service
metadata:
  name: %[1]s
spec:
  address: %[2]s
---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata:
  name: %[1]s
spec:
  path: /%[1]s/
  service: %[1]s
`, name, c.upstream.Addr())
	if err := os.WriteFile(p, []byte(m), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// rollout is `keywayctl status -o json`: the API's Rollout in protojson,
// where 64-bit integers are strings.
type rollout struct {
	Revision uint64       `json:"revision,string"`
	Complete bool         `json:"complete"`
	Serving  []nodeStatus `json:"serving"`
	Pending  []nodeStatus `json:"pending"`
}

type nodeStatus struct {
	ID           string `json:"id"`
	ProxyAddress string `json:"proxyAddress"`
	Revision     uint64 `json:"revision,string"`
}

func (r rollout) ids() []string {
	var out []string
	for _, n := range append(append([]nodeStatus(nil), r.Serving...), r.Pending...) {
		out = append(out, n.ID)
	}
	return out
}

func (c *cluster) status(t *testing.T) rollout {
	t.Helper()
	stdout, stderr, code := c.ctl(t, "status", "-o", "json")
	if code != 0 {
		t.Fatalf("keywayctl status -o json: exit %d\n%s", code, stderr)
	}
	var r rollout
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("keywayctl status -o json: %v\n%s", err, stdout)
	}
	return r
}

// waitStatus polls `keywayctl status -o json` until ok holds or timeout
// passes: the registry is other processes' heartbeats.
func (c *cluster) waitStatus(t *testing.T, what string, timeout time.Duration, ok func(rollout) bool) rollout {
	t.Helper()
	var r rollout
	testwait.Eventually(t, timeout, func() error {
		if r = c.status(t); !ok(r) {
			return fmt.Errorf("%s; last status: %+v", what, r)
		}
		return nil
	})
	return r
}

var revisionRE = regexp.MustCompile(`\(revision (\d+)\)`)

// appliedRevision is the highest revision an apply printed.
func appliedRevision(t *testing.T, stdout string) uint64 {
	t.Helper()
	var rev uint64
	for _, m := range revisionRE.FindAllStringSubmatch(stdout, -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		rev = max(rev, n)
	}
	if rev == 0 {
		t.Fatalf("no revision in the apply output:\n%s", stdout)
	}
	return rev
}

func getOK(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return nil
}

// Ten nodes, one apply with --wait: it returns once all ten serve the
// revision, printing one line per node; status lists all ten on it; an
// eleventh node joins and serves the configuration as soon as it is up.
func TestTenNodesConvergeAndAnEleventhJoins(t *testing.T) {
	c := newCluster(t, 10)
	c.waitStatus(t, "ten nodes registered", 30*time.Second, func(r rollout) bool { return len(r.ids()) == 10 })

	stdout, stderr, code := c.ctl(t, "apply", "-f", c.service(t, "orders"), "--wait", "--timeout", "60s")
	if code != 0 {
		t.Fatalf("apply --wait: exit %d\n%s%s", code, stdout, stderr)
	}
	rev := appliedRevision(t, stdout)
	for _, px := range c.proxies {
		if !strings.Contains(stdout, fmt.Sprintf("node %s serves revision %d", px.ID, rev)) {
			t.Errorf("apply --wait did not report %s:\n%s", px.ID, stdout)
		}
	}
	if !strings.Contains(stdout, fmt.Sprintf("rollout of revision %d complete: 10 of 10 nodes serve it", rev)) {
		t.Errorf("apply --wait summary missing:\n%s", stdout)
	}
	// --wait means served: every node answers through the new route now.
	for _, px := range c.proxies {
		if err := getOK(px.URL + "/orders/1"); err != nil {
			t.Errorf("%s after apply --wait: %v", px.ID, err)
		}
	}

	r := c.status(t)
	if !r.Complete || len(r.Serving) != 10 || len(r.Pending) != 0 || r.Revision < rev {
		t.Fatalf("status -o json after the rollout: %+v", r)
	}
	for _, n := range r.Serving {
		if n.Revision < rev || n.ProxyAddress == "" {
			t.Errorf("node %s at revision %d (address %q), want >= %d", n.ID, n.Revision, n.ProxyAddress, rev)
		}
	}
	table, _, _ := c.ctl(t, "status")
	if !strings.Contains(table, "10 of 10 nodes serve revision") {
		t.Errorf("status table:\n%s", table)
	}

	// The eleventh: ready (bootstrapped) means it serves the route.
	c.startNodes(t, 1)
	eleventh := c.proxies[10]
	if err := getOK(eleventh.URL + "/orders/2"); err != nil {
		t.Fatalf("the eleventh node, once ready: %v", err)
	}
	c.waitStatus(t, "the eleventh node registered at the revision", 30*time.Second, func(r rollout) bool {
		return r.Complete && len(r.Serving) == 11
	})
}

// NATS stopped and started again (same port, same store) while applies go
// on: the applies made during the outage fail at once and say why; no
// acknowledged apply is lost; every node, which kept serving, catches up
// with the last applied revision.
func TestNATSRestartDuringApplies(t *testing.T) {
	c := newCluster(t, 3)
	stdout, stderr, code := c.ctl(t, "apply", "-f", c.service(t, "base"), "--wait", "--timeout", "60s")
	if code != 0 {
		t.Fatalf("first apply: exit %d\n%s%s", code, stdout, stderr)
	}

	var acked []string
	lastRev := appliedRevision(t, stdout)
	var failures []string
	apply := func(i int) {
		name := fmt.Sprintf("svc-%d", i)
		stdout, stderr, code := c.ctl(t, "--timeout", "10s", "apply", "-f", c.service(t, name))
		if code == 0 {
			acked = append(acked, name)
			lastRev = max(lastRev, appliedRevision(t, stdout))
			return
		}
		failures = append(failures, strings.TrimSpace(stderr))
	}
	i := 0
	for ; i < 5; i++ {
		apply(i)
	}
	// What each node has read so far, to tell a catch-up from a resync.
	before := make([]watchStats, len(c.proxies))
	for j, px := range c.proxies {
		// Taken once the node serves lastRev, so that the counts compare.
		testwait.Eventually(t, 30*time.Second, func() error {
			if before[j] = nodeWatch(t, px); before[j].Revision < lastRev {
				return fmt.Errorf("%s at revision %d, not %d, after the apply", px.ID, before[j].Revision, lastRev)
			}
			return nil
		})
	}
	c.nats.Stop()
	// The nodes keep serving what they have.
	for _, px := range c.proxies {
		if err := getOK(px.URL + "/base/1"); err != nil {
			t.Errorf("%s with NATS down: %v", px.ID, err)
		}
	}
	outage := len(failures)
	for ; i < 8; i++ {
		apply(i)
	}
	if len(failures)-outage != 3 {
		t.Errorf("%d of 3 applies failed while NATS was down", len(failures)-outage)
	}
	for _, f := range failures[outage:] {
		if !strings.Contains(f, "NATS is not reachable") && !strings.Contains(f, "nothing was stored") {
			t.Errorf("an apply during the outage failed without saying why: %s", f)
		}
	}
	c.nats.Start(t)
	// Applies go through again once the policy service has reconnected.
	after := len(acked)
	testwait.Eventually(t, 60*time.Second, func() error {
		for len(acked) < after+5 {
			n := len(failures)
			apply(i)
			i++
			if len(failures) > n {
				return fmt.Errorf("applies did not recover since NATS came back; failures: %q", failures[outage:])
			}
		}
		return nil
	})
	t.Logf("%d applies acknowledged, %d failed (3 while NATS was down); last revision %d", len(acked), len(failures), lastRev)

	stored, _, code := c.ctl(t, "get", "services", "-o", "name")
	if code != 0 {
		t.Fatal("keywayctl get services failed")
	}
	for _, name := range acked {
		if !strings.Contains(stored, "service/"+name+"\n") {
			t.Errorf("acknowledged apply of %s lost; stored:\n%s", name, stored)
		}
	}
	c.waitStatus(t, "every node at the last applied revision", 60*time.Second, func(r rollout) bool {
		if len(r.Pending) != 0 || len(r.Serving) != len(c.proxies) {
			return false
		}
		for _, n := range r.Serving {
			if n.Revision < lastRev {
				return false
			}
		}
		return true
	})
	last := acked[len(acked)-1]
	for _, px := range c.proxies {
		if err := getOK(px.URL + "/" + last + "/1"); err != nil {
			t.Errorf("%s does not serve the last applied route: %v", px.ID, err)
		}
	}
	// Catching up reads what changed while the node was cut off, not the
	// whole bucket again: at most one entry per revision written since.
	for j, px := range c.proxies {
		after := nodeWatch(t, px)
		read := after.Watch.Entries - before[j].Watch.Entries
		t.Logf("%s: read %d entries for revisions %d..%d (%d watch sessions)", px.ID, read, before[j].Revision+1, after.Revision, after.Watch.Sessions)
		if read > after.Revision-before[j].Revision {
			t.Errorf("%s read %d entries to go from revision %d to %d: it read the bucket again instead of catching up", px.ID, read, before[j].Revision, after.Revision)
		}
	}
}

// watchStats is the part of a node's /status this file reads.
type watchStats struct {
	Revision uint64 `json:"revision"`
	Watch    struct {
		Sessions uint64 `json:"sessions"`
		Entries  uint64 `json:"entries"`
	} `json:"watch"`
}

func nodeWatch(t *testing.T, px *harness.Proxy) watchStats {
	t.Helper()
	resp, err := harness.Operator(t).HTTP.Get(px.AdminURL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st watchStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// balancer is a small round-robin load balancer over the nodes, as one in
// front of a fleet behaves: a backend that refuses connections is marked
// down and the request goes to the next one (nothing was sent, so retrying
// is safe); any other failure is the client's, and marks the backend down.
// A backend marked down gets traffic again once its health check (the
// node's admin /healthz) answers 200.
type balancer struct {
	mu       sync.Mutex
	backends []string
	health   []string
	downTill []time.Time
	down     []bool
	next     int
	client   *http.Client
}

func newBalancer(t *testing.T, proxies []*harness.Proxy) *balancer {
	// The proxies over http, their admin /healthz over https.
	transport := harness.Anonymous(t).Transport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 16
	b := &balancer{
		downTill: make([]time.Time, len(proxies)), down: make([]bool, len(proxies)),
		client: &http.Client{Timeout: 30 * time.Second, Transport: transport},
	}
	for _, px := range proxies {
		b.backends = append(b.backends, px.URL)
		b.health = append(b.health, px.AdminURL+"/healthz")
	}
	return b
}

// healthy says whether backend i may get traffic: it is up, or it was down
// and its health check now passes.
func (b *balancer) healthy(i int) bool {
	b.mu.Lock()
	down := b.down[i]
	b.mu.Unlock()
	if !down {
		return true
	}
	resp, err := b.client.Get(b.health[i])
	if err == nil {
		resp.Body.Close()
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		b.markDown(i)
		return false
	}
	b.mu.Lock()
	b.down[i] = false
	b.mu.Unlock()
	return true
}

func (b *balancer) pick() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for range b.backends {
		i := b.next
		b.next = (b.next + 1) % len(b.backends)
		if now.After(b.downTill[i]) {
			return i
		}
	}
	i := b.next
	b.next = (b.next + 1) % len(b.backends)
	return i
}

func (b *balancer) markDown(i int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.downTill[i] = time.Now().Add(200 * time.Millisecond)
	b.down[i] = true
}

// get sends one request; it returns the backend that answered and the
// error the client sees.
func (b *balancer) get(path string) (int, error) {
	var err error
	for range 2 * len(b.backends) {
		i := b.pick()
		if !b.healthy(i) {
			continue
		}
		var resp *http.Response
		resp, err = b.client.Get(b.backends[i] + path)
		if errors.Is(err, syscall.ECONNREFUSED) {
			b.markDown(i)
			continue
		}
		if err != nil {
			b.markDown(i)
			return i, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return i, fmt.Errorf("status %d from backend %d", resp.StatusCode, i)
		}
		return i, nil
	}
	return -1, fmt.Errorf("every backend refused: %w", err)
}

// A node killed with SIGKILL under load, then restarted: the requests that
// fail are at most those in flight on it when it died (one per client at
// most); the restarted node serves again.
func TestKilledNodeUnderLoad(t *testing.T) {
	c := newCluster(t, 3)
	if _, stderr, code := c.ctl(t, "apply", "-f", c.service(t, "orders"), "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("apply: %s", stderr)
	}
	lb := newBalancer(t, c.proxies)
	const clients = 4
	var (
		phase     atomic.Int32 // 0 before the kill, 1 while down, 2 after the restart
		ok        atomic.Int64
		failed    atomic.Int64
		afterBack atomic.Int64 // answered by the restarted node
		mu        sync.Mutex
		errs      []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for n := 0; n < 100000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i, err := lb.get("/orders/1")
				switch {
				case err == nil:
					ok.Add(1)
					if i == 1 && phase.Load() == 2 {
						afterBack.Add(1)
					}
				default:
					failed.Add(1)
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	waitCount := func(what string, f func() bool) {
		if testwait.Poll(60*time.Second, func() error {
			if !f() {
				return errors.New(what)
			}
			return nil
		}) != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("%s: not within 60s (ok %d, failed %d)", what, ok.Load(), failed.Load())
		}
	}
	waitCount("load flowing", func() bool { return ok.Load() > 200 })
	victim := c.proxies[1]
	victim.Kill()
	phase.Store(1)
	mark := ok.Load()
	waitCount("load flowing with the node dead", func() bool { return ok.Load() > mark+200 })
	victim.Restart(t, c.nats.URL, heartbeatArgs...)
	phase.Store(2)
	waitCount("the restarted node answering", func() bool { return afterBack.Load() > 50 })
	close(stop)
	wg.Wait()

	t.Logf("requests: %d ok, %d failed (%d clients); the restarted node answered %d", ok.Load(), failed.Load(), clients, afterBack.Load())
	if f := failed.Load(); f > clients {
		t.Errorf("%d requests failed; at most %d (one in flight per client on the killed node) may: %q", f, clients, errs)
	}
}

// Concurrent applies of one resource, all expecting the same revision,
// through two policy replicas: exactly one is stored, the others are
// refused as conflicts, naming the revision.
func TestConcurrentAppliesAcrossReplicas(t *testing.T) {
	c := newCluster(t, 0)
	second, _ := harness.Policy(t, c.nats.URL, "--node-ttl", nodeTTL)
	stdout, stderr, code := c.ctl(t, "apply", "-f", c.service(t, "orders"))
	if code != 0 {
		t.Fatalf("apply: %s", stderr)
	}
	rev := appliedRevision(t, stdout)
	var svcRev uint64
	got, _, _ := c.ctl(t, "get", "service", "orders", "-o", "json")
	var doc struct {
		Metadata struct {
			Revision uint64 `json:"revision,string"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(got), &doc); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, got)
	}
	svcRev = doc.Metadata.Revision
	if svcRev == 0 || svcRev > rev {
		t.Fatalf("service revision %d (apply said %d)", svcRev, rev)
	}

	const n = 6
	type result struct {
		stdout, stderr string
		code           int
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		p := filepath.Join(c.dir, fmt.Sprintf("orders-%d.yaml", i))
		m := fmt.Sprintf("apiVersion: keyway.dev/v1alpha1\nkind: Service\nmetadata:\n  name: orders\n  revision: %d\nspec:\n  address: 127.0.0.1:%d\n", svcRev, 20000+i)
		if err := os.WriteFile(p, []byte(m), 0o600); err != nil {
			t.Fatal(err)
		}
		server := c.policyURL
		if i%2 == 1 {
			server = second
		}
		wg.Go(func() {
			o, e, code := harness.Run(t, harness.Bin(t, "keywayctl"), append([]string{"--server", server, "apply", "-f", p}, harness.Operator(t).Args...)...)
			results[i] = result{o, e, code}
		})
	}
	wg.Wait()
	won := 0
	for i, r := range results {
		switch {
		case r.code == 0:
			won++
		case strings.Contains(r.stderr, "aborted") && (strings.Contains(r.stderr, fmt.Sprintf("metadata.revision is %d", svcRev)) || strings.Contains(r.stderr, "changed while this apply was in progress")):
		default:
			t.Errorf("apply %d: exit %d, want success or a conflict naming the revision:\n%s%s", i, r.code, r.stdout, r.stderr)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent applies at revision %d won; want exactly 1", won, n, svcRev)
	}
}

// A node killed with SIGKILL leaves the node list once its TTL passes; a
// node stopped cleanly leaves it at once.
func TestNodeLeavesRegistry(t *testing.T) {
	c := newCluster(t, 2)
	c.waitStatus(t, "two nodes registered", 30*time.Second, func(r rollout) bool { return len(r.ids()) == 2 })
	killed, stopped := c.proxies[0], c.proxies[1]

	killed.Kill()
	start := time.Now()
	c.waitStatus(t, "the killed node gone", 30*time.Second, func(r rollout) bool {
		return !strings.Contains(strings.Join(r.ids(), ","), killed.ID)
	})
	t.Logf("the killed node left the list %s after SIGKILL (TTL %s)", time.Since(start).Round(100*time.Millisecond), nodeTTL)

	stopped.Stop()
	start = time.Now()
	// Well under the TTL: the clean stop deleted the key.
	c.waitStatus(t, "the stopped node gone at once", 2*time.Second, func(r rollout) bool { return len(r.ids()) == 0 })
	t.Logf("the stopped node left the list %s after it exited", time.Since(start).Round(10*time.Millisecond))
}
