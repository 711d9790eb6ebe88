package app_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/audit"
	"keyway.dev/internal/audit/audittest"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/natstest"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/internal/vaulttest"
)

// getAlias describes an alias through the API.
func getAlias(t *testing.T, s *service, keystore, alias string) *secretsv1.Alias {
	t.Helper()
	resp, err := s.API.GetAlias(context.Background(), connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: keystore, Alias: alias}))
	if err != nil {
		t.Fatalf("GetAlias %s/%s: %v", keystore, alias, err)
	}
	return resp.Msg.GetAlias()
}

// waitRejected waits until the API says that the backend's version of
// the alias (version, or any when empty) is rejected.
func waitRejected(t *testing.T, s *service, keystore, alias, version string) *secretsv1.Alias {
	t.Helper()
	var a *secretsv1.Alias
	testwait.Until(t, 60*time.Second, fmt.Sprintf("alias %s/%s version %q to be rejected", keystore, alias, version), func() bool {
		a = getAlias(t, s, keystore, alias)
		return a.GetStatus() == secretsv1.Status_STATUS_REJECTED && (version == "" || a.GetRejection().GetVersion() == version)
	})
	return a
}

// metric reads one sample of the service's /metrics; -1 when absent.
func metric(t *testing.T, s *service, series string) float64 {
	t.Helper()
	_, body := get(t, s.APIURL+"/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", series, err)
	}
	return v
}

// vaultKV writes a new version of a secret straight into Vault KV v2, as
// `vault kv put secret/keyway/…` does: outside the secrets service.
func vaultKV(t *testing.T, v *vaulttest.Server, path string, data map[string]any) {
	t.Helper()
	v.Write("secret/data/keyway/"+path, map[string]any{"data": data})
}

func pair(kp *testca.KeyPair) map[string]any {
	return map[string]any{"certificate": string(kp.CertPEM), "private_key": string(kp.KeyPEM), "usage": "client"}
}

// Values written into Vault outside the service that break the rules of a
// put are rejected one by one: the API says rejected, with the version
// refused, the reason and the fix, next to the version still served;
// MaterialService keeps handing out the last good key pair; nothing is
// published for the bad versions; the metrics count each and say how many
// secrets are rejected now. A good value makes the alias ok again.
func TestVaultOutOfBandBadValues(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t, vaulttest.Options{})
	s := start(t, vaultConfig(v))
	ctx := context.Background()
	ca := testca.New(t, "CA")
	good := ca.Client("gw")
	if _, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(good.CertPEM), PrivateKeyPem: string(good.KeyPEM)})); err != nil {
		t.Fatal(err)
	}
	s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, sv *secretsv1.SecretVersion) bool {
		return put(e) && sv.GetVersion() == "1"
	})
	if got := metric(t, s, `keyway_secrets_rejected{kind="alias"}`); got != 0 {
		t.Errorf("rejected gauge before any rejection: %v, want 0", got)
	}

	mismatched := pair(good)
	mismatched["private_key"] = string(ca.Client("other").KeyPEM)
	weak := ca.RSA("weak", 1024)
	garbage := pair(good)
	garbage["certificate"] = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
	for i, tc := range []struct {
		name, reason, text string
		data               map[string]any
	}{
		{"key mismatch", "key_mismatch", `the private_key field does not match the certificate "CN=gw" (the first one in the certificate field)`, mismatched},
		{"expired", "expired", "expired at", pair(ca.Expired("gw"))},
		{"RSA 1024", "weak_key", "the RSA key is 1024 bits; keys must be at least 2048 bits: make a new key with `openssl genrsa", pair(weak)},
		{"garbage PEM", "unparsable", "the certificate field certificate 1 does not parse", garbage},
	} {
		version := strconv.Itoa(i + 2) // Vault's versions: 1 was the good one
		vaultKV(t, v, "keystores/edge/gw", tc.data)
		a := waitRejected(t, s, "edge", "gw", version)
		r := a.GetRejection()
		if r.GetReason() != tc.reason || !strings.Contains(r.GetMessage(), tc.text) || r.GetTime() == nil {
			t.Errorf("%s: rejection %v; want reason %s and a message with %q", tc.name, r, tc.reason, tc.text)
		}
		if a.GetVersion() != "1" || len(a.GetChain()) == 0 || a.GetChain()[0].GetSha256Fingerprint() != good.Fingerprint() {
			t.Errorf("%s: the API says version %q is served, want the last good version 1", tc.name, a.GetVersion())
		}
		m, err := s.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
		if err != nil || m.Msg.GetPrivateKeyPem() != string(good.KeyPEM) || m.Msg.GetAlias().GetVersion() != "1" {
			t.Errorf("%s: FetchAlias: %v; want the last good key pair, version 1", tc.name, err)
		}
		if got := metric(t, s, `keyway_secrets_rejected_versions_total{kind="alias",reason="`+tc.reason+`"}`); got != 1 {
			t.Errorf("%s: keyway_secrets_rejected_versions_total{reason=%q} = %v, want 1", tc.name, tc.reason, got)
		}
		if got := metric(t, s, `keyway_secrets_rejected{kind="alias"}`); got != 1 {
			t.Errorf("%s: keyway_secrets_rejected{kind=alias} = %v, want 1", tc.name, got)
		}
	}
	list, err := s.API.ListKeystores(ctx, connect.NewRequest(&secretsv1.ListKeystoresRequest{}))
	if err != nil || len(list.Msg.GetKeystores()) != 1 || list.Msg.GetKeystores()[0].GetAliases()[0].GetStatus() != secretsv1.Status_STATUS_REJECTED {
		t.Errorf("ListKeystores with a rejected alias: %v %v", list, err)
	}
	for _, b := range s.Bucket.all() {
		if sv, err := secretref.DecodeVersion(b); err == nil && sv.GetVersion() != "1" {
			t.Errorf("a rejected version was published: %v", sv)
		}
	}
	// The version counter did not count one version twice.
	if got := metric(t, s, `keyway_secrets_rejected_versions_total{kind="alias",reason="key_mismatch"}`); got != 1 {
		t.Errorf("key_mismatch counted %v times, want once", got)
	}

	// A good value again: ok, served and published.
	next := ca.Client("gw")
	vaultKV(t, v, "keystores/edge/gw", pair(next))
	s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, sv *secretsv1.SecretVersion) bool {
		return put(e) && sv.GetVersion() == "6" && sv.GetSha256Fingerprint() == next.Fingerprint()
	})
	if a := getAlias(t, s, "edge", "gw"); a.GetStatus() != secretsv1.Status_STATUS_OK || a.GetRejection() != nil || a.GetVersion() != "6" {
		t.Errorf("after a good value: status %v, version %s, rejection %v", a.GetStatus(), a.GetVersion(), a.GetRejection())
	}
	if got := metric(t, s, `keyway_secrets_rejected{kind="alias"}`); got != 0 {
		t.Errorf("keyway_secrets_rejected{kind=alias} after a good value: %v, want 0", got)
	}

	// A service that starts after a bad value was written serves the
	// newest good earlier version, as a running one does.
	vaultKV(t, v, "keystores/edge/gw", mismatched)
	waitRejected(t, s, "edge", "gw", "7")
	again := start(t, vaultConfig(v))
	testwait.Until(t, 60*time.Second, "the new service to reject version 7 and serve version 6", func() bool {
		a := getAlias(t, again, "edge", "gw")
		return a.GetRejection().GetVersion() == "7" && a.GetVersion() == "6" && len(a.GetChain()) > 0 && a.GetChain()[0].GetSha256Fingerprint() == next.Fingerprint()
	})
	if m, err := again.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"})); err != nil || m.Msg.GetPrivateKeyPem() != string(next.KeyPEM) {
		t.Errorf("FetchAlias from a service started after the bad value: %v; want version 6's key", err)
	}
	if !strings.Contains(again.Logs.String(), "serving an earlier good version") {
		t.Errorf("no log line says an earlier version is served")
	}

	// A truststore overwritten with something that is not a CA bundle.
	if _, err := s.API.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "cas", CertificatesPem: string(ca.CertPEM())})); err != nil {
		t.Fatal(err)
	}
	vaultKV(t, v, "truststores/cas", map[string]any{"certificates": "not PEM"})
	testwait.Until(t, 60*time.Second, "truststore cas version 2 to be rejected", func() bool {
		resp, err := s.API.GetTruststore(ctx, connect.NewRequest(&secretsv1.GetTruststoreRequest{Name: "cas"}))
		ts := resp.Msg.GetTruststore()
		return err == nil && ts.GetStatus() == secretsv1.Status_STATUS_REJECTED && ts.GetRejection().GetVersion() == "2" &&
			ts.GetRejection().GetReason() == "unparsable" && ts.GetVersion() == "1" && strings.Contains(ts.GetRejection().GetMessage(), "the certificates field is not PEM")
	})
	if got := metric(t, s, `keyway_secrets_rejected_versions_total{kind="truststore",reason="unparsable"}`); got != 1 {
		t.Errorf("truststore rejections counted: %v, want 1", got)
	}
	if m, err := s.Material.FetchTruststore(ctx, connect.NewRequest(&secretsv1.FetchTruststoreRequest{Name: "cas"})); err != nil || m.Msg.GetCertificatesPem() != string(ca.CertPEM()) {
		t.Errorf("FetchTruststore after a bad value: %v; want the last good bundle", err)
	}

	// An alias whose first version is bad: listed as rejected, serving
	// nothing; nodes are told why.
	vaultKV(t, v, "keystores/edge/fresh", pair(ca.Expired("fresh")))
	a := waitRejected(t, s, "edge", "fresh", "1")
	if a.GetVersion() != "" || len(a.GetChain()) != 0 || a.GetRejection().GetReason() != "expired" {
		t.Errorf("a first version that is bad: %v", a)
	}
	_, err = s.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "fresh"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "version 1") || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("FetchAlias of an alias with no good version: %v; want FailedPrecondition saying why", err)
	}
	if got := metric(t, s, `keyway_secrets_rejected{kind="alias"}`); got != 2 { // edge/gw version 7 and edge/fresh
		t.Errorf("keyway_secrets_rejected{kind=alias} = %v, want 2", got)
	}
	if got := metric(t, s, `keyway_secrets_rejected{kind="truststore"}`); got != 1 {
		t.Errorf("keyway_secrets_rejected{kind=truststore} = %v, want 1", got)
	}
}

// configBucket is the policy service's configuration bucket, written the
// way the policy service writes it (configkv), for the secrets service to
// read.
type configBucket struct{ kv jetstream.KeyValue }

func openConfigBucket(t *testing.T, natsURL string) *configBucket {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: configkv.Bucket, History: 5})
	if err != nil {
		t.Fatal(err)
	}
	return &configBucket{kv: kv}
}

func (c *configBucket) put(t *testing.T, res *policyv1.Resource) {
	t.Helper()
	b, err := configkv.Encode(res, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.kv.Put(context.Background(), configkv.Key(configkv.RefOf(res)), b); err != nil {
		t.Fatal(err)
	}
}

func (c *configBucket) delete(t *testing.T, res *policyv1.Resource) {
	t.Helper()
	if err := c.kv.Delete(context.Background(), configkv.Key(configkv.RefOf(res))); err != nil {
		t.Fatal(err)
	}
}

func outboundBinding(t *testing.T, name string, cfg map[string]any) *policyv1.Resource {
	t.Helper()
	st, err := structpb.NewStruct(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
		ApiVersion: model.APIVersion, Kind: model.KindPolicyBinding, Metadata: &policyv1.ObjectMeta{Name: name},
		Spec: &policyv1.PolicyBindingSpec{
			TargetRef: &policyv1.TargetRef{Kind: model.KindService, Name: "orders"},
			PolicyRef: &policyv1.PolicyRef{Name: model.PolicyTLSOutbound}, Config: st,
		},
	}}}
}

// A secret that resources of the configuration reference is not deleted:
// the answer names each resource and field. Once they are gone the delete
// goes through; --force goes through at once and is audited as forced,
// naming the users.
func TestDeleteRefusedWhileInUse(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t, vaulttest.Options{})
	natsURL := natstest.Start(t).URL
	s := startOn(t, vaultConfig(v), natsURL)
	cfg := openConfigBucket(t, natsURL)
	ctx := context.Background()
	ca := testca.New(t, "CA")
	for _, alias := range []string{"gw", "web", "spare"} {
		kp := ca.Server(alias + ".example.com")
		if _, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: alias, CertificatePem: string(kp.CertPEM), PrivateKeyPem: string(kp.KeyPEM)})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.API.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "upstream-cas", CertificatesPem: string(ca.CertPEM())})); err != nil {
		t.Fatal(err)
	}
	orders := outboundBinding(t, "orders-mtls", map[string]any{
		"skipValidation": false, "sni": "orders.internal",
		"trustedCA":   map[string]any{"truststore": "upstream-cas"},
		"certificate": map[string]any{"keystore": "edge", "alias": "gw"},
	})
	public := &policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
		ApiVersion: model.APIVersion, Kind: model.KindListener, Metadata: &policyv1.ObjectMeta{Name: "public"},
		Spec: &policyv1.ListenerSpec{Address: "127.0.0.1:8443", Hosts: []*policyv1.ListenerHost{
			{Hostnames: []string{"gw.example.com"}, Certificate: &policyv1.KeyPair{Keystore: "edge", Alias: "gw"}},
			{Hostnames: []string{"web.example.com"}, Certificate: &policyv1.KeyPair{Keystore: "edge", Alias: "web"}},
		}},
	}}}
	cfg.put(t, orders)
	cfg.put(t, public)

	_, err := s.API.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: "edge", Alias: "gw"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition ||
		!strings.Contains(err.Error(), "alias edge/gw is still used by Listener/public (listener.spec.hosts[0].certificate), PolicyBinding/orders-mtls (policyBinding.spec.config.certificate); delete or re-point those first") {
		t.Errorf("delete of an alias in use: %v", err)
	}
	_, err = s.API.DeleteTruststore(ctx, connect.NewRequest(&secretsv1.DeleteTruststoreRequest{Name: "upstream-cas"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "truststore upstream-cas is still used by PolicyBinding/orders-mtls (policyBinding.spec.config.trustedCA.truststore)") {
		t.Errorf("delete of a truststore in use: %v", err)
	}
	if a := getAlias(t, s, "edge", "gw"); a.GetVersion() != "1" {
		t.Errorf("the refused delete removed the alias: %v", a)
	}
	if _, err := v.Do(ctx, http.MethodGet, "secret/metadata/keyway/keystores/edge/gw", nil); err != nil {
		t.Errorf("the refused delete removed the alias from Vault: %v", err)
	}
	// A secret no resource uses is deleted.
	if _, err := s.API.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: "edge", Alias: "spare"})); err != nil {
		t.Errorf("delete of an unused alias: %v", err)
	}

	// The users go: the deletes go through.
	cfg.delete(t, orders)
	if _, err := s.API.DeleteTruststore(ctx, connect.NewRequest(&secretsv1.DeleteTruststoreRequest{Name: "upstream-cas"})); err != nil {
		t.Errorf("delete of a truststore no longer used: %v", err)
	}
	_, err = s.API.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: "edge", Alias: "gw"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || strings.Contains(err.Error(), "orders-mtls") || !strings.Contains(err.Error(), "Listener/public") {
		t.Errorf("delete of an alias the listener still uses: %v", err)
	}
	cfg.delete(t, public)
	if _, err := s.API.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: "edge", Alias: "gw"})); err != nil {
		t.Errorf("delete of an alias no longer used: %v", err)
	}
	if _, err := v.Do(ctx, http.MethodGet, "secret/metadata/keyway/keystores/edge/gw", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Vault still holds the deleted alias: %v", err)
	}

	// Forced: deleted, and the audit record says so with the users.
	cfg.put(t, public)
	if _, err := s.API.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: "edge", Alias: "web", Force: true})); err != nil {
		t.Fatalf("forced delete: %v", err)
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var forced []audit.Record
	for _, m := range audittest.Messages(t, nc) {
		if m.Record.Action == audit.ActionSecretForceDelete {
			forced = append(forced, m.Record)
		}
	}
	if len(forced) != 2 || forced[0].Name != "edge/web" || forced[1].Result != audit.ResultOK ||
		forced[0].Detail != "forced while in use by Listener/public (listener.spec.hosts[1].certificate)" {
		t.Errorf("audit records of the forced delete: %+v", forced)
	}
}
