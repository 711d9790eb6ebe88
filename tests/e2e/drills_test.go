package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"
	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/devstack/echo"
	"keyway.dev/internal/natsperm"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/tests/harness"
)

// The failure drills of docs/design/production-topology.md: Keyway's
// production topology (3 NATS servers, 3 Vault servers on raft, 2 secrets
// replicas, 2 policy replicas, 3 proxy nodes sharing one Listener address
// by SO_REUSEPORT), one failure at a time, under a bounded, counted load of
// HTTPS requests with client certificates through that address and a
// steady stream of applies through the policy replicas. Each drill
// reports requests sent and failed, applies acknowledged and lost (an
// acknowledged apply missing afterwards), and the time until an apply made
// after the failure is served by every node. Targets: no failed request,
// no lost apply.
//
// The table goes to the test log and to $KEYWAY_DRILLS_OUT (a file), else
// to drills.txt in a folder of the test's, named in the log.
func TestFailureDrills(t *testing.T) {
	harness.FullTier(t)
	start := time.Now()
	d := newDrillWorld(t)
	t.Logf("topology ready in %s", time.Since(start).Round(time.Millisecond))

	d.drill("kill -9 the NATS meta leader", func(r *drillRun) {
		leader := d.top.NATS.MetaLeader(t, 10*time.Second)
		r.note("meta leader %s", leader.Name)
		r.fault()
		leader.Kill()
		r.recover(d)
		d.top.NATS.MetaLeader(t, 30*time.Second)
		leader.Start(t)
		d.top.NATS.StreamCurrent(t, configStream, 30*time.Second)
	})
	d.drill("kill -9 the config stream leader", func(r *drillRun) {
		leader := d.top.NATS.StreamLeader(t, configStream, 10*time.Second)
		r.note("stream leader %s", leader.Name)
		r.fault()
		leader.Kill()
		r.recover(d)
		leader.Start(t)
		d.top.NATS.StreamCurrent(t, configStream, 30*time.Second)
	})
	d.drill("kill -9 the active Vault node", func(r *drillRun) {
		active := d.top.Vault.Active(10 * time.Second)
		r.note("active %s", active.ID)
		r.fault()
		active.Kill()
		r.recover(d)
		r.note("vault writes back after %s", d.secretsWritable(t, r.faultAt).Round(10*time.Millisecond))
		active.Start()
	})
	d.drill("kill -9 the secrets leader", func(r *drillRun) {
		i := d.secretsLeader(t)
		r.note("leader keyway-secrets-%d", i+1)
		r.fault()
		d.top.Secrets[i].Kill()
		r.recover(d)
		other := 1 - i
		took := d.waitSecretsLeader(t, other, r.faultAt)
		r.note("keyway-secrets-%d leads after %s", other+1, took.Round(10*time.Millisecond))
		d.top.RestartSecrets(t, i)
	})
	d.drill("kill -9 a policy replica", func(r *drillRun) {
		r.fault()
		d.top.Policy[0].Kill()
		r.recover(d)
		d.top.RestartPolicy(t, 0)
	})
	d.drill("rolling restart of the proxies", func(r *drillRun) {
		r.fault()
		for i := range d.top.Proxies {
			d.top.RestartProxy(t, i)
		}
		r.note("roll took %s", time.Since(r.faultAt).Round(10*time.Millisecond))
		r.recover(d)
	})
	d.drill("partition node-3 from NATS, then heal", func(r *drillRun) {
		for _, l := range d.links {
			l.Cut()
		}
		// An apply made during the partition reaches node-3 only once
		// the partition heals: recovery counts from the heal.
		name := d.applyProbe(t, "partition")
		d.waitServed(t, name, d.top.Proxies[:2])
		r.note("node-3 kept serving while cut")
		r.fault()
		for _, l := range d.links {
			l.Heal()
		}
		d.waitServed(t, name, d.top.Proxies)
		r.recovered = time.Since(r.faultAt)
	})

	d.report(t)
	t.Logf("drills took %s in all", time.Since(start).Round(time.Millisecond))
}

// configStream is the configuration bucket's stream.
const configStream = "KV_keyway-config"

// drillWorld is the topology, the upstream, the clients and the load.
type drillWorld struct {
	t        *testing.T
	top      *harness.Topology
	links    []*harness.Link // node-3's links to the NATS members
	listener string          // the Listener address every node shares
	policies []policyv1connect.PolicyServiceClient
	secrets  []secretsv1connect.SecretsServiceClient
	client   *tls.Config // the callers' client certificate, trusting the Listener's CA
	rows     []*drillRun

	loadMu  sync.Mutex
	sent    atomic.Int64
	failed  atomic.Int64
	errs    []string // the first few failures of the current drill
	acked   []string // routes whose apply was acknowledged
	applyN  atomic.Int64
	applyEr atomic.Int64
	probeN  atomic.Int64
	nc      *nats.Conn
}

func newDrillWorld(t *testing.T) *drillWorld {
	d := &drillWorld{t: t}
	d.top = harness.StartTopology(t, harness.TopologyOptions{ProxyNATS: func(i int, c *harness.NATSCluster) string {
		if i != 2 {
			return c.URL
		}
		var urls []string
		for _, m := range c.Members {
			l := harness.StartLink(t, strings.TrimPrefix(m.URL, "nats://"))
			d.links = append(d.links, l)
			urls = append(urls, "nats://"+l.Addr)
		}
		return strings.Join(urls, ",")
	}})
	op := harness.Operator(t)
	for _, u := range d.top.PolicyURLs {
		d.policies = append(d.policies, policyv1connect.NewPolicyServiceClient(op.HTTP, u))
	}
	for _, s := range d.top.Secrets {
		d.secrets = append(d.secrets, secretsv1connect.NewSecretsServiceClient(op.HTTP, s.URL))
	}

	upstreamCA := testca.New(t, "upstream CA")
	up, err := echo.Start("127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{upstreamCA.Server("orders.internal").TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    upstreamCA.Pool(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	listenerCA, clientCA := testca.New(t, "listener CA"), testca.New(t, "callers CA")
	gw, srv, caller := upstreamCA.Client("keyway-gateway"), listenerCA.Server("drill.example"), clientCA.Client("drill-caller")
	ctx := context.Background()
	for _, put := range []func() error{
		func() error {
			_, err := d.secrets[0].PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "upstream-cas", CertificatesPem: string(upstreamCA.CertPEM())}))
			return err
		},
		func() error {
			_, err := d.secrets[0].PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "callers", CertificatesPem: string(clientCA.CertPEM())}))
			return err
		},
		func() error {
			_, err := d.secrets[0].PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM), Usage: secretsv1.Usage_USAGE_CLIENT}))
			return err
		},
		func() error {
			_, err := d.secrets[0].PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "listener", CertificatePem: string(srv.CertPEM), PrivateKeyPem: string(srv.KeyPEM), Usage: secretsv1.Usage_USAGE_SERVER}))
			return err
		},
	} {
		if err := put(); err != nil {
			t.Fatalf("storing the drill's material: %v", err)
		}
	}

	d.listener = harness.FreeAddr(t)
	manifest := fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec: {address: %q}
---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata: {name: orders}
spec: {path: /orders/, service: orders}
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata: {name: orders-mtls}
spec:
  targetRef: {kind: Service, name: orders}
  policyRef: {name: tls-outbound}
  config:
    skipValidation: false
    sni: orders.internal
    trustedCA: {truststore: upstream-cas}
    certificate: {keystore: edge, alias: gw}
---
apiVersion: keyway.dev/v1alpha1
kind: Listener
metadata: {name: edge}
spec:
  address: %q
  hosts:
    - hostnames: [drill.example]
      default: true
      certificate: {keystore: edge, alias: listener}
      clientAuth: require-and-verify
      clientTruststore: callers
`, up.Addr(), d.listener)
	file := filepath.Join(t.TempDir(), "drill.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := harness.Run(t, harness.Bin(t, "keywayctl"), append(append([]string{"--server", d.top.PolicyURLs[0]}, op.Args...), "apply", "-f", file, "--wait", "--timeout", "60s")...); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	d.client = &tls.Config{RootCAs: listenerCA.Pool(), Certificates: []tls.Certificate{caller.TLS}, ServerName: "drill.example", MinVersion: tls.VersionTLS12}
	d.waitServed(t, "orders", d.top.Proxies)
	d.upstreamServesPrefix(t)
	return d
}

// upstreamServesPrefix checks the shared Listener address serves a caller
// with a client certificate.
func (d *drillWorld) upstreamServesPrefix(t *testing.T) {
	hc := d.httpClient()
	testwait.Eventually(t, 30*time.Second, func() error {
		return d.get(hc, "https://"+d.listener+"/orders/ready")
	})
}

func (d *drillWorld) httpClient() *http.Client {
	tr := &http.Transport{TLSClientConfig: d.client.Clone(), ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (d *drillWorld) get(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// drillRun is one drill's row of the table.
type drillRun struct {
	name                   string
	sent, failed           int64
	acked, lost, applyErrs int64
	faultAt                time.Time
	recovered              time.Duration
	notes                  []string
	errs                   []string
	t                      *testing.T
}

func (r *drillRun) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}
func (r *drillRun) fault() { r.faultAt = time.Now() }

// recover applies a probe right after the fault (through whichever policy
// replica answers) and waits until every node serves it.
func (r *drillRun) recover(d *drillWorld) {
	name := d.applyProbe(r.t, "probe")
	d.waitServed(r.t, name, d.top.Proxies)
	r.recovered = time.Since(r.faultAt)
}

// Load: requests per worker are paced and bounded in count; applies come
// every applyEvery. Both stop at the end of each drill.
const (
	loadWorkers   = 4
	loadPace      = 10 * time.Millisecond
	loadMaxPerRun = 20000
	applyEvery    = 200 * time.Millisecond
)

// drill runs one failure under load and records its row.
func (d *drillWorld) drill(name string, do func(r *drillRun)) {
	t := d.t
	r := &drillRun{name: name, t: t}
	d.sent.Store(0)
	d.failed.Store(0)
	d.applyEr.Store(0)
	d.loadMu.Lock()
	d.errs, d.acked = nil, nil
	d.loadMu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range loadWorkers {
		wg.Go(func() {
			hc := d.httpClient()
			defer hc.CloseIdleConnections()
			for i := 0; ctx.Err() == nil && i < loadMaxPerRun/loadWorkers; i++ {
				// A new connection now and then, so that the kernel
				// spreads them over the nodes.
				if i%25 == 0 {
					hc.CloseIdleConnections()
				}
				d.sent.Add(1)
				if err := d.get(hc, fmt.Sprintf("https://%s/orders/w%d-%d", d.listener, w, i)); err != nil {
					d.failed.Add(1)
					d.loadMu.Lock()
					if len(d.errs) < 5 {
						d.errs = append(d.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
					d.loadMu.Unlock()
				}
				select {
				case <-ctx.Done():
				case <-time.After(loadPace):
				}
			}
		})
	}
	wg.Go(func() {
		tick := time.NewTicker(applyEvery)
		defer tick.Stop()
		for ctx.Err() == nil {
			name := fmt.Sprintf("load-%d", d.applyN.Add(1))
			if err := d.applyRoute(ctx, name); err == nil {
				d.loadMu.Lock()
				d.acked = append(d.acked, name)
				d.loadMu.Unlock()
			} else if ctx.Err() == nil {
				d.applyEr.Add(1)
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
	})
	// A moment of steady state before the fault.
	time.Sleep(time.Second)
	do(r)
	time.Sleep(time.Second)
	cancel()
	wg.Wait()

	r.sent, r.failed, r.applyErrs = d.sent.Load(), d.failed.Load(), d.applyEr.Load()
	d.loadMu.Lock()
	acked := slices.Clone(d.acked)
	r.errs = slices.Clone(d.errs)
	d.loadMu.Unlock()
	r.acked = int64(len(acked))
	r.lost = int64(len(d.missing(t, acked)))
	d.rows = append(d.rows, r)
	t.Logf("%s: sent %d, failed %d, applies acked %d, lost %d, apply errors %d, recovered in %s; %s %s",
		name, r.sent, r.failed, r.acked, r.lost, r.applyErrs, r.recovered.Round(time.Millisecond), strings.Join(r.notes, "; "), strings.Join(r.errs, " | "))
}

// applyRoute applies one Route through a policy replica, then the other
// when the first cannot be reached, as a client given both does.
func (d *drillWorld) applyRoute(ctx context.Context, name string) error {
	route := &policyv1.Resource{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{ApiVersion: "keyway.dev/v1alpha1", Kind: "Route",
		Metadata: &policyv1.ObjectMeta{Name: name}, Spec: &policyv1.RouteSpec{Path: "/" + name + "/", Service: "orders"}}}}
	return d.apply(ctx, []*policyv1.Resource{route})
}

func (d *drillWorld) apply(ctx context.Context, resources []*policyv1.Resource) error {
	var errs []error
	for _, p := range d.policies {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := p.Apply(actx, connect.NewRequest(&policyv1.ApplyRequest{Resources: resources, Probe: policyv1.ProbeMode_PROBE_MODE_OFF}))
		cancel()
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// applyProbe applies, until a policy replica acknowledges it, a Service, a
// Route and a tls-outbound binding whose key pair and CAs are references:
// the policy service checks them with the secrets service, and every node
// fetches them from it to serve the route.
func (d *drillWorld) applyProbe(t *testing.T, prefix string) string {
	name := fmt.Sprintf("%s-%d", prefix, d.probeN.Add(1))
	cfg, err := structpb.NewStruct(map[string]any{
		"skipValidation": false, "sni": "orders.internal",
		"trustedCA":   map[string]any{"truststore": "upstream-cas"},
		"certificate": map[string]any{"keystore": "edge", "alias": "gw"},
	})
	if err != nil {
		t.Fatal(err)
	}
	const v = "keyway.dev/v1alpha1"
	meta := &policyv1.ObjectMeta{Name: name}
	orders := d.upstreamAddr(t)
	resources := []*policyv1.Resource{
		{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{ApiVersion: v, Kind: "Service", Metadata: meta, Spec: &policyv1.ServiceSpec{Address: orders}}}},
		{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{ApiVersion: v, Kind: "Route", Metadata: meta, Spec: &policyv1.RouteSpec{Path: "/" + name + "/", Service: name}}}},
		{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{ApiVersion: "gateway.mulesoft.com/v1alpha1", Kind: "PolicyBinding", Metadata: meta, Spec: &policyv1.PolicyBindingSpec{
			TargetRef: &policyv1.TargetRef{Kind: "Service", Name: name}, PolicyRef: &policyv1.PolicyRef{Name: "tls-outbound"}, Config: cfg,
		}}}},
	}
	testwait.Eventually(t, 60*time.Second, func() error { return d.apply(context.Background(), resources) })
	return name
}

// upstreamAddr is the orders Service's address, as stored.
func (d *drillWorld) upstreamAddr(t *testing.T) string {
	var addr string
	testwait.Eventually(t, 30*time.Second, func() error {
		var errs []error
		for _, p := range d.policies {
			resp, err := p.Get(context.Background(), connect.NewRequest(&policyv1.GetRequest{Kind: "Service", Name: "orders"}))
			if err == nil {
				addr = resp.Msg.GetResource().GetService().GetSpec().GetAddress()
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	return addr
}

// waitServed waits until each node's own port serves route name.
func (d *drillWorld) waitServed(t *testing.T, name string, nodes []*harness.Proxy) {
	for _, px := range nodes {
		testwait.Eventually(t, 60*time.Second, func() error {
			resp, err := http.Get(px.URL + "/" + name + "/x")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s serves /%s/ with %d", px.ID, name, resp.StatusCode)
			}
			return nil
		})
	}
}

// missing are the acknowledged routes absent from the configuration
// stream, as its leader answers (not a replica's direct read, which may
// lag); a policy replica whose view lists fewer is reported too, as a
// stale view, after a grace for it to catch up.
func (d *drillWorld) missing(t *testing.T, acked []string) []string {
	nc := d.natsConn(t)
	var lost []string
	for _, name := range acked {
		req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV.keyway-config.route." + name})
		var reply struct {
			Error *struct {
				Code        int    `json:"code"`
				Description string `json:"description"`
			} `json:"error"`
		}
		err := testwait.Poll(30*time.Second, func() error {
			msg, err := nc.Request("$JS.API.STREAM.MSG.GET."+configStream, req, 5*time.Second)
			if err != nil {
				return err
			}
			reply.Error = nil
			if err := json.Unmarshal(msg.Data, &reply); err != nil {
				return err
			}
			if reply.Error != nil && reply.Error.Code != http.StatusNotFound {
				return fmt.Errorf("reading route.%s from the stream leader: %s", name, reply.Error.Description)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if reply.Error != nil {
			lost = append(lost, name)
		}
	}
	if len(lost) > 0 {
		t.Errorf("acknowledged applies missing from the configuration stream afterwards: %v", lost)
	}
	for i, p := range d.policies {
		var absent []string
		err := testwait.Poll(10*time.Second, func() error {
			resp, err := p.List(context.Background(), connect.NewRequest(&policyv1.ListRequest{Kind: "Route"}))
			if err != nil {
				return err
			}
			have := map[string]bool{}
			for _, r := range resp.Msg.GetResources() {
				have[r.GetRoute().GetMetadata().GetName()] = true
			}
			absent = nil
			for _, name := range acked {
				if !have[name] && !slices.Contains(lost, name) {
					absent = append(absent, name)
				}
			}
			if len(absent) > 0 {
				return fmt.Errorf("keyway-policy-%d does not list %v", i+1, absent)
			}
			return nil
		})
		if err != nil {
			t.Errorf("stale view: %v", err)
		}
	}
	return lost
}

// natsConn is the test's connection to the NATS cluster, as the policy
// service's user.
func (d *drillWorld) natsConn(t *testing.T) *nats.Conn {
	if d.nc == nil {
		d.nc = harness.NATSConnect(t, d.top.NATS.URL, natsperm.Policy)
	}
	return d.nc
}

var leaderMetric = regexp.MustCompile(`(?m)^keyway_secrets_pki_leader (\d)`)

// secretsLeader is the index of the secrets replica that holds the PKI
// lease, from its metrics.
func (d *drillWorld) secretsLeader(t *testing.T) int {
	leader := -1
	testwait.Eventually(t, 30*time.Second, func() error {
		leaders := 0
		for i := range d.top.Secrets {
			if d.isSecretsLeader(i) {
				leader = i
				leaders++
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%d secrets replicas report the PKI lease, want 1", leaders)
		}
		return nil
	})
	return leader
}

func (d *drillWorld) isSecretsLeader(i int) bool {
	resp, err := harness.Operator(d.t).HTTP.Get(d.top.Secrets[i].URL + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := leaderMetric.FindSubmatch(body)
	return m != nil && string(m[1]) == "1"
}

// waitSecretsLeader waits until replica i holds the lease and returns the
// time since since.
func (d *drillWorld) waitSecretsLeader(t *testing.T, i int, since time.Time) time.Duration {
	testwait.Eventually(t, 60*time.Second, func() error {
		if !d.isSecretsLeader(i) {
			return fmt.Errorf("keyway-secrets-%d does not hold the PKI lease", i+1)
		}
		return nil
	})
	return time.Since(since)
}

// secretsWritable waits until a write to Vault through every secrets
// replica succeeds, and returns the time since since.
func (d *drillWorld) secretsWritable(t *testing.T, since time.Time) time.Duration {
	for i, s := range d.secrets {
		testwait.Eventually(t, 60*time.Second, func() error {
			_, err := s.PutTruststore(context.Background(), connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: fmt.Sprintf("drill-%d", i), CertificatesPem: string(harness.Suite(t).ServerCA.CertPEM())}))
			return err
		})
	}
	return time.Since(since)
}

// report writes the table to the log and to a file.
func (d *drillWorld) report(t *testing.T) {
	var b strings.Builder
	fmt.Fprintf(&b, "| drill | requests sent | failed | applies acked | lost | apply errors | recovered in | notes |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range d.rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %s | %s |\n", r.name, r.sent, r.failed, r.acked, r.lost, r.applyErrs, r.recovered.Round(10*time.Millisecond), strings.Join(r.notes, "; "))
	}
	out := os.Getenv("KEYWAY_DRILLS_OUT")
	if out == "" {
		out = filepath.Join(t.TempDir(), "drills.txt")
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		t.Errorf("writing the drills table: %v", err)
	}
	t.Logf("failure drills (also in %s):\n%s", out, b.String())
	for _, r := range d.rows {
		if r.failed > 0 {
			t.Errorf("%s: %d of %d requests failed, want 0; first: %s", r.name, r.failed, r.sent, strings.Join(r.errs, " | "))
		}
		if r.lost > 0 {
			t.Errorf("%s: %d acknowledged applies lost, want 0", r.name, r.lost)
		}
	}
}
