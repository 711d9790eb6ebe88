package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/internal/vaulttest"
	"keyway.dev/secrets/internal/app"
	"keyway.dev/secrets/internal/vaultauth"
)

func vaultConfig(v *vaulttest.Server) app.Config {
	return app.Config{Backend: "vault", VaultAddr: v.Addr, VaultAuth: vaultauth.Config{Method: vaultauth.MethodToken, Token: v.Token}}
}

// vaultCLI runs the real vault CLI against v.
func vaultCLI(t *testing.T, v *vaulttest.Server, args ...string) {
	t.Helper()
	cmd := exec.Command(vaulttest.Binary(t), args...)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.Token, "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vault %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestVaultKV(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t, vaulttest.Options{})
	s := start(t, vaultConfig(v))
	ctx := context.Background()
	ca := testca.New(t, "upstream CA")
	gw := ca.Client("gw")

	resp, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM)}))
	if err != nil {
		t.Fatal(err)
	}
	if a := resp.Msg.GetAlias(); a.GetBackend() != secretsv1.Backend_BACKEND_VAULT_KV || a.GetVersion() != "1" {
		t.Errorf("PutAlias answered backend %v version %q; want Vault KV version 1", a.GetBackend(), a.GetVersion())
	}
	// Where the README says it is.
	data, err := v.Do(ctx, http.MethodGet, "secret/data/keyway/keystores/edge/gw", nil)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := data["data"].(map[string]any)
	if stored["certificate"] != string(gw.CertPEM) || stored["private_key"] != string(gw.KeyPEM) || stored["usage"] != "client" {
		t.Errorf("Vault holds %v", stored)
	}
	v1 := s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool { return put(e) })
	if v1.GetVersion() != "1" || v1.GetSha256Fingerprint() != gw.Fingerprint() {
		t.Errorf("published %v", v1)
	}

	// A rotation made with the vault CLI, outside the service.
	rotated := ca.Client("gw")
	dir := t.TempDir()
	certFile, keyFile := writeFile(t, dir, "cert.pem", rotated.CertPEM), writeFile(t, dir, "key.pem", rotated.KeyPEM)
	vaultCLI(t, v, "kv", "put", "secret/keyway/keystores/edge/gw", "certificate=@"+certFile, "private_key=@"+keyFile, "usage=client")
	v2 := s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, sv *secretsv1.SecretVersion) bool {
		return put(e) && sv.GetVersion() == "2"
	})
	if v2.GetSha256Fingerprint() != rotated.Fingerprint() {
		t.Errorf("version 2 published with fingerprint %s, want %s", v2.GetSha256Fingerprint(), rotated.Fingerprint())
	}
	m, err := s.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
	if err != nil || m.Msg.GetPrivateKeyPem() != string(rotated.KeyPEM) || m.Msg.GetAlias().GetVersion() != "2" {
		t.Errorf("FetchAlias after the rotation: version %q, %v", m.Msg.GetAlias().GetVersion(), err)
	}

	// Truststores, listed and deleted.
	if _, err := s.API.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "cas", CertificatesPem: string(ca.CertPEM())})); err != nil {
		t.Fatal(err)
	}
	list, err := s.API.ListTruststores(ctx, connect.NewRequest(&secretsv1.ListTruststoresRequest{}))
	if err != nil || len(list.Msg.GetTruststores()) != 1 || list.Msg.GetTruststores()[0].GetBackend() != secretsv1.Backend_BACKEND_VAULT_KV {
		t.Fatalf("ListTruststores = %v, %v", list, err)
	}
	s.Bucket.wait(t, "truststore.cas", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool { return put(e) })
	// Deleted outside the service: a delete marker.
	vaultCLI(t, v, "kv", "metadata", "delete", "secret/keyway/truststores/cas")
	s.Bucket.wait(t, "truststore.cas", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool {
		return e.Operation() == jetstream.KeyValueDelete
	})
	// Deleted through the API: gone from Vault too.
	if _, err := s.API.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: "edge", Alias: "gw"})); err != nil {
		t.Fatal(err)
	}
	s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool {
		return e.Operation() == jetstream.KeyValueDelete
	})
	if _, err := v.Do(ctx, http.MethodGet, "secret/metadata/keyway/keystores/edge/gw", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Vault still holds the deleted alias: %v", err)
	}
}

func TestVaultPKI(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t, vaulttest.Options{PKI: true})
	v.Role("gw", time.Hour)
	s := start(t, vaultConfig(v))
	ctx := context.Background()

	// A role that does not exist is refused at the field, storing nothing.
	_, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", Pki: &secretsv1.PKISpec{Role: "nope", CommonName: "gw.example.com"}}))
	if vs := violations(t, err); !strings.Contains(vs["pki.role"], "vault write pki/roles/nope") {
		t.Errorf("unknown role: violations %v", vs)
	}

	// A role that refuses the name: the put fails at the field, nothing stored.
	v.Write("pki/roles/narrow", map[string]any{"allowed_domains": "example.com", "allow_subdomains": true, "client_flag": true, "key_type": "ec", "key_bits": 256})
	_, err = s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "narrow", Pki: &secretsv1.PKISpec{Role: "narrow", CommonName: "gw.other.org"}}))
	if vs := violations(t, err); !strings.Contains(vs["pki"], "vault read pki/roles/narrow") {
		t.Errorf("refused name: violations %v", vs)
	}
	if _, err := s.API.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: "edge", Alias: "narrow"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("a refused PKI alias was stored: %v", err)
	}

	// Short-lived certificates: renewed at about two thirds of 24 seconds.
	const ttl = 24 * time.Second
	resp, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw",
		Pki: &secretsv1.PKISpec{Role: "gw", CommonName: "gw.example.com", AltNames: []string{"gw.internal"}, Ttl: durationpb.New(ttl)}}))
	if err != nil {
		t.Fatal(err)
	}
	a := resp.Msg.GetAlias()
	leaf := a.GetChain()[0]
	if a.GetBackend() != secretsv1.Backend_BACKEND_VAULT_PKI || a.GetPkiRole() != "gw" || leaf.GetSubject() != "CN=gw.example.com" || len(a.GetChain()) != 2 {
		t.Fatalf("PutAlias answered %v", a)
	}
	if renew := a.GetRenewTime().AsTime(); !renew.Before(leaf.GetNotAfter().AsTime()) {
		t.Errorf("renew time %s is not before expiry %s", renew, leaf.GetNotAfter().AsTime())
	}
	// The binding is in KV with the certificate issued for it, so that
	// every replica serves the same one and it survives a restart.
	data, err := v.Do(ctx, http.MethodGet, "secret/data/keyway/keystores/edge/gw", nil)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := data["data"].(map[string]any)
	if stored["pki_role"] != "gw" || stored["common_name"] != "gw.example.com" {
		t.Errorf("KV holds %v for the PKI alias", stored)
	}
	if cert, _ := stored["certificate"].(string); !strings.Contains(cert, "BEGIN CERTIFICATE") || !strings.Contains(fmt.Sprint(stored["private_key"]), "PRIVATE KEY") {
		t.Errorf("KV lacks the issued certificate and key next to the binding")
	}
	first := s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, sv *secretsv1.SecretVersion) bool {
		return put(e) && sv.GetSha256Fingerprint() == leaf.GetSha256Fingerprint()
	})
	if first.GetVersion() != a.GetVersion() {
		t.Errorf("published version %s, answered %s", first.GetVersion(), a.GetVersion())
	}
	m, err := s.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
	if err != nil || !strings.Contains(m.Msg.GetPrivateKeyPem(), "PRIVATE KEY") {
		t.Fatalf("FetchAlias of a PKI alias: %v", err)
	}

	// The renewal: a new certificate before the old one expires, published.
	renewed := s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, sv *secretsv1.SecretVersion) bool {
		return put(e) && sv.GetSha256Fingerprint() != first.GetSha256Fingerprint()
	})
	if renewed.GetVersion() == first.GetVersion() {
		t.Errorf("renewal published the same version %s", renewed.GetVersion())
	}
	if !renewed.GetUpdateTime().AsTime().Before(first.GetNotAfter().AsTime()) {
		t.Errorf("renewed at %s, after the first certificate expired at %s", renewed.GetUpdateTime().AsTime(), first.GetNotAfter().AsTime())
	}
	firstKey := m.Msg.GetPrivateKeyPem()
	m, err = s.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
	if err != nil || m.Msg.GetAlias().GetVersion() != renewed.GetVersion() {
		t.Fatalf("FetchAlias after the renewal: %v", err)
	}
	// Neither issued key reached the logs or the bucket.
	var texts []string
	for _, b := range s.Bucket.all() {
		texts = append(texts, string(b))
	}
	noKeyMaterial(t, "the versions bucket", texts, []byte(firstKey), []byte(m.Msg.GetPrivateKeyPem()))
	noKeyMaterial(t, "the service's logs", []string{s.Logs.String()}, []byte(firstKey), []byte(m.Msg.GetPrivateKeyPem()))

	// A second service started on the same Vault finds the binding and
	// serves the certificate stored with it.
	again := start(t, vaultConfig(v))
	again.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool { return put(e) })
}

func TestVaultDown(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t, vaulttest.Options{})
	s := start(t, vaultConfig(v))
	ctx := context.Background()
	ca := testca.New(t, "CA")
	gw := ca.Client("gw")
	if _, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM)})); err != nil {
		t.Fatal(err)
	}
	s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool { return put(e) })

	v.Stop()
	testwait.Until(t, 60*time.Second, "healthz to report the backend unavailable", func() bool {
		code, body := get(t, s.APIURL+"/healthz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "backend unavailable")
	})
	if _, body := get(t, s.APIURL+"/metrics"); !strings.Contains(body, "keyway_secrets_backend_up 0") {
		t.Errorf("metrics do not say the backend is down")
	}
	if !strings.Contains(s.Logs.String(), "secrets backend unavailable") {
		t.Errorf("no log line says the backend is unavailable")
	}
	if got := health(t, s, secretsv1connect.SecretsServiceName); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health of SecretsService with Vault down: %v", got)
	}
	if got := health(t, s, ""); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health of the server with Vault down: %v (it still serves material)", got)
	}
	// The last fetched material is served.
	m, err := s.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
	if err != nil || m.Msg.GetPrivateKeyPem() != string(gw.KeyPEM) {
		t.Errorf("FetchAlias with Vault down: %v", err)
	}
	if _, err := s.API.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: "edge", Alias: "gw"})); err != nil {
		t.Errorf("GetAlias with Vault down: %v", err)
	}
	// Writes say which part failed, and that nothing was stored nor will
	// be behind the caller's back.
	_, err = s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "other", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM)}))
	if connect.CodeOf(err) != connect.CodeUnavailable ||
		!strings.Contains(err.Error(), "secrets service: Vault at "+v.Addr+" is unreachable (") || !strings.Contains(err.Error(), "connection refused") ||
		!strings.Contains(err.Error(), "alias edge/other was not stored, and nothing retries it: put it again once Vault answers") {
		t.Errorf("PutAlias with Vault down: %v; want Unavailable naming the secrets service and Vault, and saying nothing was stored", err)
	}
	_, err = s.API.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "later", CertificatesPem: string(ca.CertPEM())}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "secrets service: Vault at "+v.Addr) || !strings.Contains(err.Error(), "truststore later was not stored") {
		t.Errorf("PutTruststore with Vault down: %v", err)
	}

	// Vault back (a dev server starts empty: the alias is written again,
	// rotated, as a restore would): the service catches up.
	v.Restart(vaulttest.Options{})
	rotated := ca.Client("gw")
	if _, err := v.Do(ctx, http.MethodPost, "secret/data/keyway/keystores/edge/gw", map[string]any{"data": map[string]any{
		"certificate": string(rotated.CertPEM), "private_key": string(rotated.KeyPEM), "usage": "client"}}); err != nil {
		t.Fatal(err)
	}
	s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, sv *secretsv1.SecretVersion) bool {
		return put(e) && sv.GetSha256Fingerprint() == rotated.Fingerprint()
	})
	testwait.Until(t, 60*time.Second, "healthz to report the backend back", func() bool {
		code, _ := get(t, s.APIURL+"/healthz")
		return code == http.StatusOK
	})
	// The refused writes did not land once Vault came back: a put that the
	// service serialises after the polls that caught up proves those ran.
	if _, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "after", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM)})); err != nil {
		t.Fatalf("PutAlias with Vault back: %v", err)
	}
	for _, path := range []string{"keystores/edge/other", "truststores/later"} {
		if _, err := v.Do(ctx, http.MethodGet, "secret/metadata/keyway/"+path, nil); err == nil || !strings.Contains(err.Error(), "404") {
			t.Errorf("Vault holds %s, refused while it was down: %v", path, err)
		}
	}
	if _, err := s.API.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: "edge", Alias: "other"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("GetAlias of the alias refused while Vault was down: %v; want NotFound", err)
	}
	if got := health(t, s, secretsv1connect.SecretsServiceName); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health of SecretsService with Vault back: %v", got)
	}
	if !strings.Contains(s.Logs.String(), "secrets backend reachable again") {
		t.Errorf("no log line says the backend is back")
	}
}

// health asks the API's gRPC health service about service.
func health(t *testing.T, s *service, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	c := connect.NewClient[healthpb.HealthCheckRequest, healthpb.HealthCheckResponse](http.DefaultClient, s.APIURL+"/grpc.health.v1.Health/Check")
	resp, err := c.CallUnary(context.Background(), connect.NewRequest(&healthpb.HealthCheckRequest{Service: service}))
	if err != nil {
		t.Fatalf("health check of %q: %v", service, err)
	}
	return resp.Msg.GetStatus()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
