package localrun

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tools finds Keyway's binaries ($KEYWAY_BIN, else the repository's bin/,
// as `make build` leaves them) and the pinned NATS and Vault binaries
// ($KEYWAY_NATS_SERVER, $KEYWAY_VAULT, else scripts/tool.sh).
func tools(t *testing.T) (bin string, images map[string]string) {
	t.Helper()
	bin = os.Getenv("KEYWAY_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin")
	}
	for _, b := range []string{"keyway-policy", "keyway-secrets", "keyway-proxy", "keywayctl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("%v: run `make build` (or set KEYWAY_BIN)", err)
		}
	}
	tool := func(env, name string) string {
		if p := os.Getenv(env); p != "" {
			return p
		}
		out, err := exec.Command("../../scripts/tool.sh", name).Output()
		if err != nil {
			t.Fatalf("%s is not set and scripts/tool.sh %s failed: %v", env, name, err)
		}
		return strings.TrimSpace(string(out))
	}
	return bin, map[string]string{"nats": tool("KEYWAY_NATS_SERVER", "nats-server"), "hashicorp/vault": tool("KEYWAY_VAULT", "vault")}
}

// TestManifestsServeThroughMTLS runs deploy/kubernetes as local processes,
// each with its container's arguments and environment from the rendered
// manifests (package doc), then does what an operator does first: stores a
// server and a client key pair and two CA bundles in the secrets service
// (Vault KV behind AppRole), applies a Service, Route, Listener and
// tls-outbound binding with keywayctl, and sends a request with a client
// certificate through a proxy node to an upstream that asks for one. A
// manifest that lacks what its service needs fails here.
//
// NATS runs as the manifest has it, three servers: the configuration
// bucket has 3 replicas and JetStream's cluster needs its quorum. Vault,
// the secrets, policy and proxy workloads are scaled to one replica (make
// prod-local runs them all).
func TestManifestsServeThroughMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("full tier: runs NATS, Vault and Keyway's services as processes")
	}
	bin, images := tools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := Start(ctx, Options{
		Manifests: "../kubernetes",
		WorkDir:   t.TempDir(),
		Bin:       bin,
		Images:    images,
		Replicas:  map[string]int{"vault": 1, "keyway-secrets": 1, "keyway-policy": 1, "keyway-proxy": 1},
		Log:       testLog{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Logf("every pod ready in %s", time.Since(start).Round(time.Millisecond))

	d, err := c.StartDemo(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)

	// What the demo's curl --cert does.
	withCert, err := d.Client(true)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := withCert.Get(d.URL())
	if err != nil {
		t.Fatalf("a request with a client certificate through the proxy: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != Hello {
		t.Fatalf("through the proxy: %d %q, want 200 and %q", resp.StatusCode, body, Hello)
	}
	// Without a client certificate the Listener refuses the handshake.
	without, err := d.Client(false)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := without.Get(d.URL()); err == nil {
		resp.Body.Close()
		t.Fatalf("a request without a client certificate: %d, want a refused handshake", resp.StatusCode)
	}
	t.Logf("up and serving through mTLS in %s", time.Since(start).Round(time.Millisecond))

	// The drills' API: kill -9 the proxy node; the launcher starts it again,
	// as the kubelet would, and it serves the demo again.
	proxy := c.PodsOf("keyway-proxy")[0]
	killed := proxy.PID()
	if err := proxy.Kill(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for pid := proxy.PID(); pid == 0 || pid == killed; pid = proxy.PID() {
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s was not started again after kill -9: %v", proxy.Name(), ctx.Err())
		case <-tick.C:
		}
	}
	if err := proxy.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if resp, err = withCert.Get(d.URL()); err != nil {
		t.Fatalf("the demo request after the proxy node's restart: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || proxy.Restarts() != 1 {
		t.Errorf("after kill -9: %d with %d restarts, want 200 and 1", resp.StatusCode, proxy.Restarts())
	}
	t.Logf("the proxy node was back and serving %s after kill -9", time.Since(restarted).Round(time.Millisecond))
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestComposeServesThroughMTLS runs compose.yaml's services the same way
// (StartCompose: a loopback address per container, Vault in dev mode as
// compose has it) and sends the demo request through a proxy node.
func TestComposeServesThroughMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("full tier: runs NATS, Vault and Keyway's services as processes")
	}
	bin, images := tools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := StartCompose(ctx, ComposeOptions{File: "../compose.yaml", WorkDir: t.TempDir(), Bin: bin, Images: images, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d, err := c.StartDemo(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	client, err := d.Client(true)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(d.URL())
	if err != nil {
		t.Fatalf("a request with a client certificate through the proxy: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != Hello {
		t.Fatalf("through the proxy: %d %q, want 200 and %q", resp.StatusCode, body, Hello)
	}
	t.Logf("compose.yaml up and serving through mTLS in %s", time.Since(start).Round(time.Millisecond))
}
