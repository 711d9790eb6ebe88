package vaulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"keyway.dev/internal/testwait"
)

// Cluster is Vault as production runs it, on one machine: servers on
// integrated storage (raft) that find each other with retry_join,
// initialised with one key share and unsealed by the test, not dev mode.
// Standbys forward requests to the active node, so any member's address
// serves a client while it is up.
type Cluster struct {
	// Nodes are the servers, in start order; the first is initialised.
	Nodes []*Node
	// RootToken is the initial root token; UnsealKey the only key share.
	RootToken, UnsealKey string

	tb  testing.TB
	bin string
}

// Node is one server of a [Cluster]. Kill and Start stop it hard and
// bring it back on the same address and data, unsealed.
type Node struct {
	// ID is the raft node id ("vault-1"); Addr http://127.0.0.1:PORT.
	ID, Addr string

	c        *Cluster
	conf     string
	home     string
	mu       sync.Mutex
	cmd      *exec.Cmd
	out      *bytes.Buffer
	done     chan struct{}
	restarts int
}

// StartRaft starts n Vault servers on raft with retry_join towards each
// other, initialises the first, unseals all of them, and waits until one is
// active and the others are unsealed standbys. Under -short it skips the
// test ([SkipReason]).
func StartRaft(tb testing.TB, n int) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, bin: Binary(tb)}
	type ports struct{ api, cluster string }
	var ps []ports
	for range n {
		ps = append(ps, ports{freeAddr(tb), freeAddr(tb)})
	}
	for i, p := range ps {
		dir := tb.TempDir()
		var joins strings.Builder
		for j, q := range ps {
			if j != i {
				fmt.Fprintf(&joins, "  retry_join {\n    leader_api_addr = %q\n  }\n", "http://"+q.api)
			}
		}
		id := fmt.Sprintf("vault-%d", i+1)
		conf := fmt.Sprintf(`storage "raft" {
  path    = %q
  node_id = %q
%s}
listener "tcp" {
  address         = %q
  cluster_address = %q
  tls_disable     = true
}
api_addr      = %q
cluster_addr  = %q
disable_mlock = true
ui            = false
`, filepath.Join(dir, "raft"), id, joins.String(), p.api, p.cluster, "http://"+p.api, "https://"+p.cluster)
		if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o700); err != nil {
			tb.Fatal(err)
		}
		file := filepath.Join(dir, "vault.hcl")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			tb.Fatal(err)
		}
		node := &Node{ID: id, Addr: "http://" + p.api, c: c, conf: file, home: dir}
		c.Nodes = append(c.Nodes, node)
		tb.Cleanup(func() {
			node.stop()
			if tb.Failed() {
				tb.Logf("--- output of %s ---\n%s", node.ID, node.Output())
			}
		})
	}
	for _, node := range c.Nodes {
		node.start()
	}
	first := c.Nodes[0]
	var initResp struct {
		Keys      []string `json:"keys_base64"`
		RootToken string   `json:"root_token"`
	}
	testwait.Eventually(tb, 60*time.Second, func() error {
		first.exited()
		if first.Health() == 0 {
			return fmt.Errorf("vaulttest: %s does not answer yet", first.ID)
		}
		return nil
	})
	// Once only: a retried init finds the server initialised, and the
	// keys of the first are then out of reach. It may take a while on a
	// busy machine (raft bootstrap, the keyring).
	ictx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := callTimeout(ictx, first.Addr, "", http.MethodPut, "sys/init", map[string]any{"secret_shares": 1, "secret_threshold": 1}, &initResp, 2*time.Minute); err != nil {
		tb.Fatalf("vaulttest: initialising %s: %v", first.ID, err)
	}
	if len(initResp.Keys) != 1 || initResp.RootToken == "" {
		tb.Fatalf("vaulttest: sys/init answered no key or no root token")
	}
	c.UnsealKey, c.RootToken = initResp.Keys[0], initResp.RootToken
	first.unseal()
	c.Active(60 * time.Second)
	// Autopilot promotes a joined server to voter once it has been healthy
	// this long (10s by default): shorter, so that the cluster holds a
	// quorum of three sooner.
	c.Write("sys/storage/raft/autopilot/configuration", map[string]any{"server_stabilization_time": "2s", "cleanup_dead_servers": false})
	for _, node := range c.Nodes[1:] {
		node.unseal()
	}
	c.WaitVoters(len(c.Nodes), 90*time.Second)
	return c
}

// WaitVoters waits until the raft configuration counts n voters: only then
// does the cluster survive the loss of a member (a joined server is a
// non-voter until autopilot promotes it).
func (c *Cluster) WaitVoters(n int, timeout time.Duration) {
	c.tb.Helper()
	testwait.Eventually(c.tb, timeout, func() error {
		var cfg struct {
			Data struct {
				Config struct {
					Servers []struct {
						NodeID string `json:"node_id"`
						Voter  bool   `json:"voter"`
					} `json:"servers"`
				} `json:"config"`
			} `json:"data"`
		}
		if err := c.Do(context.Background(), http.MethodGet, "sys/storage/raft/configuration", nil, &cfg); err != nil {
			return err
		}
		voters := 0
		for _, s := range cfg.Data.Config.Servers {
			if s.Voter {
				voters++
			}
		}
		if voters < n {
			return fmt.Errorf("vaulttest: %d raft voters of %d servers, want %d", voters, len(cfg.Data.Config.Servers), n)
		}
		return nil
	})
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Addrs are the nodes' addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// Active waits up to timeout for a node to answer its health check as the
// active node (200), and returns it.
func (c *Cluster) Active(timeout time.Duration) *Node {
	c.tb.Helper()
	var active *Node
	testwait.Eventually(c.tb, timeout, func() error {
		for _, n := range c.Nodes {
			if n.Health() == http.StatusOK {
				active = n
				return nil
			}
		}
		return errors.New("vaulttest: no Vault node is active")
	})
	return active
}

// Do sends one request to /v1/path with the root token, to each node in
// turn until one answers: the result of the first that does, decoded into
// out when not nil. A status of 400 or more is an error.
func (c *Cluster) Do(ctx context.Context, method, path string, body map[string]any, out any) error {
	var errs []error
	for _, n := range c.Nodes {
		err := call(ctx, n.Addr, c.RootToken, method, path, body, out)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if _, ok := errors.AsType[*statusError](err); ok {
			return err
		}
	}
	return errors.Join(errs...)
}

// Write is Do with POST, failing the test on an error; it returns the
// answer's "data" object, if any.
func (c *Cluster) Write(path string, body map[string]any) map[string]any {
	c.tb.Helper()
	var parsed struct {
		Data map[string]any `json:"data"`
	}
	if err := c.Do(context.Background(), http.MethodPost, path, body, &parsed); err != nil {
		c.tb.Fatalf("vaulttest: %v", err)
	}
	return parsed.Data
}

// EnableKV mounts KV v2 at secret/, as a dev server has it.
func (c *Cluster) EnableKV() {
	c.tb.Helper()
	c.Write("sys/mounts/secret", map[string]any{"type": "kv", "options": map[string]any{"version": "2"}})
}

// EnablePKI mounts pki/ with a root CA ([Server.EnablePKI]).
func (c *Cluster) EnablePKI() {
	c.tb.Helper()
	c.Write("sys/mounts/pki", map[string]any{"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"}})
	c.Write("pki/root/generate/internal", map[string]any{"common_name": "Keyway test PKI root", "ttl": "87600h", "key_type": "ec", "key_bits": 256})
}

// AppRole is what a service needs to log in with AppRole: the files
// holding its role ID and secret ID.
type AppRole struct {
	RoleIDFile, SecretIDFile string
}

// EnableAppRole enables the AppRole auth method (once), writes an ACL
// policy named role with the given HCL, and a role bound to it whose
// tokens live ttl (renewable up to four times that); it writes the role ID
// and a fresh secret ID into files of the test's.
func (c *Cluster) EnableAppRole(role, policyHCL string, ttl time.Duration) AppRole {
	c.tb.Helper()
	var mounts map[string]any
	if err := c.Do(context.Background(), http.MethodGet, "sys/auth", nil, &mounts); err != nil {
		c.tb.Fatalf("vaulttest: %v", err)
	}
	if _, ok := mounts["approle/"]; !ok {
		c.Write("sys/auth/approle", map[string]any{"type": "approle"})
	}
	c.Write("sys/policies/acl/"+role, map[string]any{"policy": policyHCL})
	c.Write("auth/approle/role/"+role, map[string]any{"token_policies": []string{role}, "token_ttl": ttl.String(), "token_max_ttl": (4 * ttl).String()})
	var roleID struct {
		Data struct {
			RoleID string `json:"role_id"`
		} `json:"data"`
	}
	if err := c.Do(context.Background(), http.MethodGet, "auth/approle/role/"+role+"/role-id", nil, &roleID); err != nil {
		c.tb.Fatalf("vaulttest: %v", err)
	}
	secretID := c.Write("auth/approle/role/"+role+"/secret-id", nil)
	dir := c.tb.TempDir()
	ar := AppRole{RoleIDFile: filepath.Join(dir, "role-id"), SecretIDFile: filepath.Join(dir, "secret-id")}
	sid, _ := secretID["secret_id"].(string)
	if roleID.Data.RoleID == "" || sid == "" {
		c.tb.Fatalf("vaulttest: AppRole %s answered no role ID or no secret ID", role)
	}
	for file, v := range map[string]string{ar.RoleIDFile: roleID.Data.RoleID, ar.SecretIDFile: sid} {
		if err := os.WriteFile(file, []byte(v+"\n"), 0o600); err != nil {
			c.tb.Fatal(err)
		}
	}
	return ar
}

// Role creates a PKI role ([Server.Role]).
func (c *Cluster) Role(name string, maxTTL time.Duration) {
	c.tb.Helper()
	c.Write("pki/roles/"+name, map[string]any{
		"allow_any_name": true, "enforce_hostnames": false, "client_flag": true, "server_flag": true,
		"key_type": "ec", "key_bits": 256, "max_ttl": maxTTLString(maxTTL), "not_before_duration": "30s",
	})
}

func (n *Node) start() {
	n.c.tb.Helper()
	cmd := exec.Command(n.c.bin, "server", "-config="+n.conf)
	cmd.Env = append(os.Environ(), "HOME="+n.home, "VAULT_ADDR=", "VAULT_TOKEN=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = &lockedWriter{mu: &n.mu, w: out}, &lockedWriter{mu: &n.mu, w: out}
	if err := cmd.Start(); err != nil {
		n.c.tb.Fatalf("vaulttest: starting %s: %v", n.ID, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.mu.Lock()
	if n.out != nil {
		out.WriteString(n.out.String())
	}
	n.cmd, n.out, n.done = cmd, out, done
	n.mu.Unlock()
}

// exited fails the test when the node's process is gone.
func (n *Node) exited() {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	select {
	case <-done:
		n.c.tb.Fatalf("vaulttest: %s exited:\n%s", n.ID, n.Output())
	default:
	}
}

// unseal gives the node the key share until it reports unsealed: a node
// that has not joined the cluster yet joins on its first unseal, and may
// need it again once it has.
func (n *Node) unseal() {
	n.c.tb.Helper()
	testwait.Eventually(n.c.tb, 90*time.Second, func() error {
		n.exited()
		var st struct {
			Sealed bool `json:"sealed"`
		}
		if err := call(context.Background(), n.Addr, "", http.MethodPut, "sys/unseal", map[string]any{"key": n.c.UnsealKey}, &st); err != nil {
			return err
		}
		if st.Sealed {
			return fmt.Errorf("vaulttest: %s still sealed", n.ID)
		}
		if h := n.Health(); h != http.StatusOK && h != http.StatusTooManyRequests {
			return fmt.Errorf("vaulttest: %s health %d, want active (200) or standby (429)", n.ID, h)
		}
		return nil
	})
}

// Health is the node's /v1/sys/health status: 200 active, 429 unsealed
// standby, 501 not initialised, 503 sealed; 0 when it does not answer.
func (n *Node) Health() int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.Addr+"/v1/sys/health", nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Kill stops the node with SIGKILL, as a crash does.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	_ = cmd.Process.Kill()
	<-done
}

// Start starts a stopped node again on its address and data and unseals
// it; it rejoins the cluster as a standby.
func (n *Node) Start() {
	n.c.tb.Helper()
	n.restarts++
	n.start()
	n.unseal()
	n.c.WaitVoters(len(n.c.Nodes), 90*time.Second)
}

func (n *Node) stop() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	stopProcess(cmd, done)
}

// Output is what the node printed, across restarts.
func (n *Node) Output() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.out == nil {
		return ""
	}
	return n.out.String()
}

type statusError struct {
	method, path, status string
	body                 []byte
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.method, e.path, e.status, bytes.TrimSpace(e.body))
}

// call sends one request to addr's /v1/path; an answer of 400 or more is
// a *statusError.
func call(ctx context.Context, addr, token, method, path string, body map[string]any, out any) error {
	return callTimeout(ctx, addr, token, method, path, body, out, 10*time.Second)
}

func callTimeout(ctx context.Context, addr, token, method, path string, body map[string]any, out any, timeout time.Duration) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, addr+"/v1/"+path, r)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 400 {
		return &statusError{method: method, path: path, status: resp.Status, body: raw}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
		}
	}
	return nil
}
