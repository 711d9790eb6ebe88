package harness

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/natsperm"
	"keyway.dev/internal/vaulttest"
)

// Topology is Keyway's production topology on one machine, each part a
// real process: a NATS cluster (JetStream, every bucket with 3 replicas),
// Vault on raft (initialised and unsealed, not dev mode) with AppRole for
// the secrets service, secrets replicas that elect a PKI leader, policy
// replicas, and proxy nodes. Every client is given all the replicas of
// what it calls (NATS members, Vault servers, secrets replicas), as
// production gives them a Service that spans its pods.
type Topology struct {
	NATS    *NATSCluster
	Vault   *vaulttest.Cluster
	Secrets []*Secrets
	// PolicyURLs are the policy replicas' API URLs; Policy their
	// processes.
	PolicyURLs []string
	Policy     []*Process
	Proxies    []*Proxy
	// SecretsAPI and SecretsInternal list the secrets replicas' API and
	// internal URLs, comma-separated.
	SecretsAPI, SecretsInternal string
	// AppRole is the secrets service's Vault login.
	AppRole vaulttest.AppRole

	secretsArgs [][]string
	policyArgs  [][]string
	proxyArgs   [][]string
	proxyNATS   []string
}

// TopologyOptions size the topology; zero values are production's.
type TopologyOptions struct {
	NATS, Vault, Secrets, Policy, Proxies int
	// LeaderTTL is the secrets service's PKI lease (--leader-ttl);
	// default 3s, its shortest, so that a lost leader is replaced soon.
	LeaderTTL time.Duration
	// ProxyNATS gives proxy node i its --nats (its own credentials for
	// the cluster are added); nil gives every node the cluster's URL.
	ProxyNATS func(i int, c *NATSCluster) string
}

// SecretsVaultPolicy is the ACL policy of the secrets service's AppRole:
// what docs/reference/flags.md says the service needs.
const SecretsVaultPolicy = `path "secret/data/keyway/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "secret/metadata/keyway/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "pki/issue/*" { capabilities = ["update"] }
path "pki/roles/*" { capabilities = ["read"] }
`

// StartTopology starts the topology: 3 NATS servers, 3 Vault servers, 2
// secrets replicas, 2 policy replicas and 3 proxy nodes unless opts say
// otherwise. It returns once every part is ready.
func StartTopology(tb testing.TB, opts TopologyOptions) *Topology {
	tb.Helper()
	FullTier(tb)
	or := func(v, d int) int {
		if v == 0 {
			return d
		}
		return v
	}
	opts.NATS, opts.Vault, opts.Secrets = or(opts.NATS, 3), or(opts.Vault, 3), or(opts.Secrets, 2)
	opts.Policy, opts.Proxies = or(opts.Policy, 2), or(opts.Proxies, 3)
	if opts.LeaderTTL == 0 {
		opts.LeaderTTL = 3 * time.Second
	}
	top := &Topology{}
	top.NATS = StartNATSCluster(tb, opts.NATS)
	top.Vault = vaulttest.StartRaft(tb, opts.Vault)
	top.Vault.EnableKV()
	top.Vault.EnablePKI()
	top.AppRole = top.Vault.EnableAppRole("keyway-secrets", SecretsVaultPolicy, time.Hour)
	replicas := fmt.Sprint(min(opts.NATS, 3))
	vaultAddrs := strings.Join(top.Vault.Addrs(), ",")
	for i := range opts.Secrets {
		args := []string{"--backend", "vault", "--vault-addr", vaultAddrs, "--vault-auth", "approle",
			"--vault-approle-role-id-file", top.AppRole.RoleIDFile, "--vault-approle-secret-id-file", top.AppRole.SecretIDFile,
			"--replicas", replicas, "--leader-ttl", opts.LeaderTTL.String()}
		top.secretsArgs = append(top.secretsArgs, args)
		s := StartSecrets(tb, top.NATS.URL, nil, args...)
		s.Name = fmt.Sprintf("keyway-secrets-%d", i+1)
		top.Secrets = append(top.Secrets, s)
	}
	var api, internal []string
	for _, s := range top.Secrets {
		api, internal = append(api, s.URL), append(internal, s.InternalURL)
	}
	top.SecretsAPI, top.SecretsInternal = strings.Join(api, ","), strings.Join(internal, ",")
	for i := range opts.Policy {
		args := append([]string{"--replicas", replicas, "--secrets-server", top.SecretsAPI}, top.clientArgs(tb, PolicyCN)...)
		top.policyArgs = append(top.policyArgs, args)
		url, p := Policy(tb, top.NATS.URL, args...)
		p.Name = fmt.Sprintf("keyway-policy-%d", i+1)
		top.PolicyURLs, top.Policy = append(top.PolicyURLs, url), append(top.Policy, p)
	}
	for i := range opts.Proxies {
		id := fmt.Sprintf("node-%d", i+1)
		natsURL := top.NATS.URL
		if opts.ProxyNATS != nil {
			natsURL = opts.ProxyNATS(i, top.NATS)
		}
		args := top.clientArgs(tb, id)
		if natsURL != top.NATS.URL {
			args = append(args, top.NATS.Args(natsperm.Node)...)
		}
		top.proxyArgs, top.proxyNATS = append(top.proxyArgs, args), append(top.proxyNATS, natsURL)
		top.Proxies = append(top.Proxies, StartProxy(tb, natsURL, id, args...))
	}
	return top
}

// clientArgs are the flags that point a policy replica or proxy node at
// every secrets replica's internal port, with a client certificate for
// name.
func (top *Topology) clientArgs(tb testing.TB, name string) []string {
	tb.Helper()
	args := top.Secrets[0].ClientArgs(tb, name)
	for i, a := range args {
		if a == "--secrets-internal-url" {
			args[i+1] = top.SecretsInternal
		}
	}
	return args
}

// RestartPolicy starts policy replica i again where it was, after it died.
func (top *Topology) RestartPolicy(tb testing.TB, i int) {
	tb.Helper()
	addr := strings.TrimPrefix(top.PolicyURLs[i], "https://")
	args := append([]string{"--listen", addr}, top.policyArgs[i]...)
	_, p := Policy(tb, top.NATS.URL, args...)
	p.Name = fmt.Sprintf("keyway-policy-%d", i+1)
	top.Policy[i] = p
}

// RestartSecrets starts secrets replica i again on its addresses, after it
// died.
func (top *Topology) RestartSecrets(tb testing.TB, i int) {
	tb.Helper()
	old := top.Secrets[i]
	args := append([]string{"--listen", strings.TrimPrefix(old.URL, "https://"), "--internal-listen", strings.TrimPrefix(old.InternalURL, "https://")}, top.secretsArgs[i]...)
	s := StartSecrets(tb, top.NATS.URL, nil, args...)
	s.Name = old.Name
	top.Secrets[i] = s
}

// RestartProxy stops proxy node i gracefully (SIGTERM: it leaves the
// registry, stops accepting, drains) and starts it again on its addresses,
// returning once it serves its configuration (/healthz 200).
func (top *Topology) RestartProxy(tb testing.TB, i int) {
	tb.Helper()
	px := top.Proxies[i]
	px.Stop()
	top.Proxies[i] = StartProxyAt(tb, top.proxyNATS[i], px.ID, px.Addr, px.Admin, top.proxyArgs[i]...)
}
