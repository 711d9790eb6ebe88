package harness

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"
	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/devstack/echo"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/vaulttest"
)

// RotationStack is Keyway with a secrets service: NATS, keyway-secrets,
// keyway-policy checking references through it, proxy nodes fetching
// material from it, and an upstream that requires a client certificate from
// CA. The Service "orders" has a tls-outbound binding whose certificate is
// keystore "edge" alias "gw" and whose trustedCA is truststore
// "upstream-cas".
type RotationStack struct {
	Secrets  *Secrets
	Proxies  []*Proxy
	Upstream *echo.Server
	CA       *testca.CA
	API      secretsv1connect.SecretsServiceClient
	Policy   policyv1connect.PolicyServiceClient
	// Fingerprint is the alias's current leaf, as the upstream must see it.
	Fingerprint string
	// Vault is the secrets service's backend, when it is Vault.
	Vault *vaulttest.Server
	// NATS is the server every part connects to, each as its own user.
	NATS *NATSServer
}

// RotationOptions configure a RotationStack.
type RotationOptions struct {
	// Vault, when set, is the secrets service's backend (KV v2), polled
	// every PollInterval (the service's default when zero); otherwise the
	// backend is a local directory polled every 250ms.
	Vault        *vaulttest.Server
	PollInterval time.Duration
}

// StartRotationStack starts the stack with nodes proxy nodes and waits
// until each serves the binding with the alias's first certificate.
func StartRotationStack(tb testing.TB, nodes int) *RotationStack {
	return StartRotationStackWith(tb, nodes, RotationOptions{})
}

// StartRotationStackWith is StartRotationStack with options.
func StartRotationStackWith(tb testing.TB, nodes int, opts RotationOptions) *RotationStack {
	tb.Helper()
	s := &RotationStack{CA: testca.New(tb, "upstream CA"), Vault: opts.Vault, NATS: StartNATS(tb)}
	natsURL := s.NATS.URL
	var env, extra []string
	if v := opts.Vault; v != nil {
		env = []string{"VAULT_TOKEN=" + v.Token}
		extra = []string{"--backend", "vault", "--vault-addr", v.Addr}
	}
	if opts.PollInterval > 0 {
		extra = append(extra, "--poll-interval", opts.PollInterval.String())
	} else if opts.Vault != nil {
		extra = append(extra, "--poll-interval", "2s") // the service's default
	}
	s.Secrets = StartSecrets(tb, natsURL, env, extra...)
	policyURL, _ := Policy(tb, natsURL, append([]string{"--secrets-server", s.Secrets.URL}, s.Secrets.ClientArgs(tb, "keyway-policy")...)...)
	op := Operator(tb)
	s.API = secretsv1connect.NewSecretsServiceClient(op.HTTP, s.Secrets.URL)
	s.Policy = policyv1connect.NewPolicyServiceClient(op.HTTP, policyURL)
	up, err := echo.Start("127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{s.CA.Server("orders.internal").TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    s.CA.Pool(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { up.Close() })
	s.Upstream = up

	ctx := context.Background()
	if _, err := s.API.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "upstream-cas", CertificatesPem: string(s.CA.CertPEM())})); err != nil {
		tb.Fatalf("storing the truststore: %v", err)
	}
	s.Rotate(tb)
	for i := range nodes {
		s.Proxies = append(s.Proxies, StartProxy(tb, natsURL, fmt.Sprintf("node-%d", i+1), s.Secrets.ClientArgs(tb, fmt.Sprintf("node-%d", i+1))...))
	}
	cfg, err := structpb.NewStruct(map[string]any{
		"skipValidation": false,
		"sni":            "orders.internal",
		"trustedCA":      map[string]any{"truststore": "upstream-cas"},
		"certificate":    map[string]any{"keystore": "edge", "alias": "gw"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	meta := func(name string) *policyv1.ObjectMeta { return &policyv1.ObjectMeta{Name: name} }
	const apiVersion = "keyway.dev/v1alpha1"
	_, err = s.Policy.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Probe: policyv1.ProbeMode_PROBE_MODE_ON, Resources: []*policyv1.Resource{
		{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{ApiVersion: apiVersion, Kind: "Service", Metadata: meta("orders"), Spec: &policyv1.ServiceSpec{Address: up.Addr()}}}},
		{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{ApiVersion: apiVersion, Kind: "Route", Metadata: meta("orders"), Spec: &policyv1.RouteSpec{Path: "/orders/", Service: "orders"}}}},
		{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{ApiVersion: apiVersion, Kind: "PolicyBinding", Metadata: meta("orders-mtls"), Spec: &policyv1.PolicyBindingSpec{
			TargetRef: &policyv1.TargetRef{Kind: "Service", Name: "orders"}, PolicyRef: &policyv1.PolicyRef{Name: "tls-outbound"}, Config: cfg,
		}}}},
	}}))
	if err != nil {
		tb.Fatalf("applying the binding with references: %v", err)
	}
	for _, px := range s.Proxies {
		if _, err := s.WaitServed(px, s.Fingerprint, time.Now(), 60*time.Second); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// Rotate stores a new client certificate under edge/gw through the secrets
// API and returns when the service has accepted it.
func (s *RotationStack) Rotate(tb testing.TB) string {
	tb.Helper()
	kp := s.CA.Client("keyway-gateway")
	_, err := s.API.PutAlias(context.Background(), connect.NewRequest(&secretsv1.PutAliasRequest{
		Keystore: "edge", Alias: "gw", CertificatePem: string(kp.CertPEM), PrivateKeyPem: string(kp.KeyPEM), Usage: secretsv1.Usage_USAGE_CLIENT,
	}))
	if err != nil {
		tb.Fatalf("rotating edge/gw: %v", err)
	}
	s.Fingerprint = kp.Fingerprint()
	return s.Fingerprint
}

// RotateInVault writes a new client certificate for edge/gw straight into
// Vault KV v2, as `vault kv put secret/keyway/keystores/edge/gw …` does,
// and returns its fingerprint: the secrets service notices it by polling.
func (s *RotationStack) RotateInVault(tb testing.TB) string {
	tb.Helper()
	kp := s.CA.Client("keyway-gateway")
	s.Vault.Write("secret/data/keyway/keystores/edge/gw", map[string]any{"data": map[string]any{
		"certificate": string(kp.CertPEM), "private_key": string(kp.KeyPEM), "usage": "client",
	}})
	s.Fingerprint = kp.Fingerprint()
	return s.Fingerprint
}

// ClientArgs issues a client certificate from the internal CA for name and
// returns the flags that give it to keyway-proxy or keyway-policy. The
// certificate has OU keyway-node (node role on MaterialService); name
// [PolicyCN] also holds viewer and secrets-admin on the secrets API.
func (s *Secrets) ClientArgs(tb testing.TB, name string) []string {
	tb.Helper()
	kp := s.InternalCA.Issue(testca.Options{CommonName: name, OU: []string{NodeOU}})
	write := func(file string, data []byte) string {
		p := filepath.Join(s.Dir, file)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			tb.Fatal(err)
		}
		return p
	}
	return []string{
		"--secrets-internal-url", s.InternalURL,
		"--secrets-cert", write(name+".crt", kp.CertPEM),
		"--secrets-key", write(name+".key", kp.KeyPEM),
		"--secrets-ca", filepath.Join(s.Dir, "ca.crt"),
	}
}

// Seen asks the upstream, through px, which client certificate it saw.
func Seen(client *http.Client, px *Proxy) (string, error) {
	resp, err := client.Get(px.URL + "/orders/rotation")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var rep echo.Reply
	if err := json.Unmarshal(body, &rep); err != nil {
		return "", err
	}
	return rep.ClientFingerprint, nil
}

var probeClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

// WaitServed polls px until the upstream sees fingerprint, and returns the
// time from since; it fails after deadline. Polling is what there is for
// another process's state.
func (s *RotationStack) WaitServed(px *Proxy, fingerprint string, since time.Time, deadline time.Duration) (time.Duration, error) {
	end := time.Now().Add(deadline)
	var last string
	for {
		fp, err := Seen(probeClient, px)
		if err == nil && fp == fingerprint {
			return time.Since(since), nil
		}
		last = fp
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(end) {
			return 0, fmt.Errorf("%s: the upstream did not see %s within %s; last: %s", px.Name, fingerprint, deadline, last)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Load sends requests through every proxy until stopped, counting them and
// keeping the first failures.
type Load struct {
	Sent, Failed atomic.Int64
	mu           sync.Mutex
	Failures     []string
	stop         chan struct{}
	wg           sync.WaitGroup
}

// StartLoad starts perProxy workers per proxy node, each on its own
// keep-alive connection.
func (s *RotationStack) StartLoad(perProxy int) *Load {
	l := &Load{stop: make(chan struct{})}
	for _, px := range s.Proxies {
		for range perProxy {
			client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			l.wg.Go(func() {
				for {
					select {
					case <-l.stop:
						return
					default:
					}
					l.Sent.Add(1)
					if _, err := Seen(client, px); err != nil {
						l.Failed.Add(1)
						l.mu.Lock()
						if len(l.Failures) < 10 {
							l.Failures = append(l.Failures, px.Name+": "+err.Error())
						}
						l.mu.Unlock()
					}
				}
			})
		}
	}
	return l
}

// Stop ends the load and waits for the requests in flight.
func (l *Load) Stop() {
	close(l.stop)
	l.wg.Wait()
}
