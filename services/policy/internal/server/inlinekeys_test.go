package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/material/materialtest"
	"keyway.dev/internal/testca"
	"keyway.dev/policy/internal/inlinekeys"
)

// keyBytes are the forms in which a private key could leak: its PEM body
// lines, its DER, and its private scalar or exponent.
func keyBytes(t *testing.T, kp *testca.KeyPair) [][]byte {
	t.Helper()
	b, _ := pem.Decode(kp.KeyPEM)
	out := [][]byte{b.Bytes}
	for _, line := range strings.Split(string(kp.KeyPEM), "\n") {
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			out = append(out, []byte(line))
		}
	}
	switch k := kp.Key.(type) {
	case *ecdsa.PrivateKey:
		d, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	case *rsa.PrivateKey:
		out = append(out, k.D.Bytes())
	}
	if der, err := x509.MarshalPKCS8PrivateKey(kp.Key); err == nil {
		out = append(out, der)
	}
	return out
}

// natsWitness sees what a subscriber on ">" sees, and reads every key (and
// its history) of every KV bucket.
type natsWitness struct {
	t   *testing.T
	nc  *nats.Conn
	js  jetstream.JetStream
	sub *nats.Subscription

	mu   sync.Mutex
	seen int
}

func watchNATS(t *testing.T, nc *nats.Conn) *natsWitness {
	t.Helper()
	sub, err := nc.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &natsWitness{t: t, nc: nc, js: js, sub: sub}
}

// check fails the test if anything on NATS, in flight since the last check
// or at rest in a bucket, holds a PEM private key or any of keys' bytes.
func (w *natsWitness) check(step string, keys ...*testca.KeyPair) {
	w.t.Helper()
	var forbidden [][]byte
	for _, k := range keys {
		forbidden = append(forbidden, keyBytes(w.t, k)...)
	}
	look := func(where string, data []byte) {
		if bytes.Contains(data, []byte("PRIVATE KEY")) {
			w.t.Errorf("%s: %s carries a PEM private key block", step, where)
		}
		for _, f := range forbidden {
			if bytes.Contains(data, f) {
				w.t.Errorf("%s: %s carries private key bytes", step, where)
				return
			}
		}
	}
	// Everything the server routed before the flush's PONG is in the
	// subscription's queue once Flush returns.
	if err := w.nc.Flush(); err != nil {
		w.t.Fatal(err)
	}
	for {
		n, _, err := w.sub.Pending()
		if err != nil {
			w.t.Fatal(err)
		}
		if n == 0 {
			break
		}
		msg, err := w.sub.NextMsg(0)
		if err != nil {
			w.t.Fatal(err)
		}
		w.mu.Lock()
		w.seen++
		w.mu.Unlock()
		look("message on "+msg.Subject, msg.Data)
		for h, vs := range msg.Header {
			for _, v := range vs {
				look("header "+h+" on "+msg.Subject, []byte(v))
			}
		}
	}
	ctx := context.Background()
	names := w.js.KeyValueStoreNames(ctx)
	for bucket := range names.Name() {
		kv, err := w.js.KeyValue(ctx, bucket)
		if err != nil {
			w.t.Fatal(err)
		}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			w.t.Fatal(err)
		}
		for key := range keys.Keys() {
			hist, err := kv.History(ctx, key)
			if err != nil {
				w.t.Fatal(err)
			}
			for _, e := range hist {
				look("bucket "+bucket+" key "+key, e.Value())
			}
		}
	}
}

func listenerWith(name string, kp *testca.KeyPair) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "Listener",
		Metadata: &policyv1.ObjectMeta{Name: name},
		Spec: &policyv1.ListenerSpec{Address: "127.0.0.1:9444", Hosts: []*policyv1.ListenerHost{{
			Hostnames:   []string{"api.example.com"},
			Certificate: &policyv1.KeyPair{Crt: string(kp.CertPEM), Key: string(kp.KeyPEM)},
		}}},
	}}}
}

func clientConfig(ca *testca.CA, kp *testca.KeyPair) map[string]any {
	return map[string]any{
		"skipValidation": false,
		"trustedCA":      string(ca.CertPEM()),
		"certificate":    map[string]any{"key": string(kp.KeyPEM), "crt": string(kp.CertPEM)},
	}
}

func applyProbeOff(ctx context.Context, s *stack, dryRun bool, rs ...*policyv1.Resource) (*policyv1.ApplyResponse, error) {
	resp, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: rs, DryRun: dryRun, Probe: policyv1.ProbeMode_PROBE_MODE_OFF}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// aliasVersion is the version the secrets service holds for a moved key,
// or "" when it holds none.
func aliasVersion(t *testing.T, svc *materialtest.Service, alias string) string {
	t.Helper()
	resp, err := svc.API.GetAlias(context.Background(), connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: inlinekeys.Keystore, Alias: alias}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetAlias().GetVersion()
}

func storedCertificate(t *testing.T, s *stack, kind, name string) *policyv1.Resource {
	t.Helper()
	got, err := s.connect.Get(context.Background(), connect.NewRequest(&policyv1.GetRequest{Kind: kind, Name: name}))
	if err != nil {
		t.Fatalf("get %s/%s: %v", kind, name, err)
	}
	return got.Msg.GetResource()
}

// A subscriber on ">" and a reader of every bucket see no private key while
// bindings and Listeners with inline keys are applied, rotated, re-applied
// and deleted: the keys are in the secrets service, the resources name
// them, and the aliases go when nothing names them.
func TestInlineKeysNeverReachNATS(t *testing.T) {
	t.Parallel()
	var svc *materialtest.Service
	s := startStack(t, withRealSecrets(t, &svc))
	w := watchNATS(t, s.nc)
	ctx := context.Background()
	ca := testca.New(t, "upstream CA")
	first, second := ca.Client("keyway-gateway"), ca.Client("keyway-gateway")
	server, www := ca.Server("api.example.com"), ca.Server("www.example.com")
	all := []*testca.KeyPair{first, second, server, www}

	// Apply: a binding with an inline client key, a Listener with an
	// inline server key.
	if _, err := applyProbeOff(ctx, s, false, service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", clientConfig(ca, first))); err != nil {
		t.Fatal(err)
	}
	w.check("apply of a binding", all...)
	resp, err := applyProbeOff(ctx, s, false, listenerWith("public", server))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Results[0].Action != policyv1.Action_ACTION_CREATED {
		t.Errorf("listener: %v, want created", resp.Results[0].Action)
	}
	w.check("apply of a Listener", all...)
	inbound := binding(t, "www-tls", "public", map[string]any{
		"hostnames":   []any{"www.example.com"},
		"certificate": map[string]any{"crt": string(www.CertPEM), "key": string(www.KeyPEM)},
	})
	inbound.GetPolicyBinding().Spec.TargetRef.Kind = "Listener"
	inbound.GetPolicyBinding().Spec.PolicyRef.Name = "tls-inbound"
	if _, err := applyProbeOff(ctx, s, false, inbound); err != nil {
		t.Fatal(err)
	}
	w.check("apply of a tls-inbound binding", all...)
	wwwCert := storedCertificate(t, s, "PolicyBinding", "www-tls").GetPolicyBinding().GetSpec().GetConfig().GetFields()["certificate"].GetStructValue().GetFields()
	if wwwCert["keystore"].GetStringValue() != inlinekeys.Keystore || !strings.HasPrefix(wwwCert["alias"].GetStringValue(), "pb-www-tls-") {
		t.Fatalf("stored tls-inbound certificate is %v, want a reference to %s", wwwCert, inlinekeys.Keystore)
	}
	wwwAlias := wwwCert["alias"].GetStringValue()
	if a, err := svc.API.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: inlinekeys.Keystore, Alias: wwwAlias})); err != nil || a.Msg.GetAlias().GetUsage() != secretsv1.Usage_USAGE_SERVER {
		t.Errorf("tls-inbound alias: %v %v, want a server alias", a, err)
	}

	// The stored resources reference the moved pairs.
	cert := storedCertificate(t, s, "PolicyBinding", "orders-mtls").GetPolicyBinding().GetSpec().GetConfig().GetFields()["certificate"].GetStructValue().GetFields()
	firstAlias := cert["alias"].GetStringValue()
	if cert["keystore"].GetStringValue() != inlinekeys.Keystore || !strings.HasPrefix(firstAlias, "pb-orders-mtls-") || cert["key"] != nil || cert["crt"] != nil {
		t.Fatalf("stored binding certificate is %v, want {keystore: %s, alias: pb-orders-mtls-…}", cert, inlinekeys.Keystore)
	}
	host := storedCertificate(t, s, "Listener", "public").GetListener().GetSpec().GetHosts()[0].GetCertificate()
	if host.GetKeystore() != inlinekeys.Keystore || !strings.HasPrefix(host.GetAlias(), "lst-public-") || host.GetKey() != "" || host.GetCrt() != "" {
		t.Fatalf("stored listener certificate is %v, want a reference to %s", host, inlinekeys.Keystore)
	}
	// The secrets service holds what was applied.
	got, err := svc.API.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: inlinekeys.Keystore, Alias: firstAlias}))
	if err != nil {
		t.Fatal(err)
	}
	if fp := strings.ToLower(strings.ReplaceAll(got.Msg.GetAlias().GetChain()[0].GetSha256Fingerprint(), ":", "")); fp != first.Fingerprint() {
		t.Errorf("alias holds %s, want the applied certificate %s", fp, first.Fingerprint())
	}

	// Re-applying the same manifest changes nothing, not even the alias's
	// version.
	version := aliasVersion(t, svc, firstAlias)
	again, err := applyProbeOff(ctx, s, false, service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", clientConfig(ca, first)))
	if err != nil {
		t.Fatal(err)
	}
	if a := again.Results[1].Action; a != policyv1.Action_ACTION_UNCHANGED {
		t.Errorf("re-apply: %v, want unchanged", a)
	}
	if v := aliasVersion(t, svc, firstAlias); v != version {
		t.Errorf("re-apply wrote alias version %q over %q", v, version)
	}
	// So does what get returns.
	if again, err = applyProbeOff(ctx, s, false, storedCertificate(t, s, "PolicyBinding", "orders-mtls")); err != nil || again.Results[0].Action != policyv1.Action_ACTION_UNCHANGED {
		t.Errorf("re-apply of get's output: %v %v, want unchanged", again, err)
	}
	w.check("re-apply", all...)

	// Rotation: a new key gets a new alias, and the old one goes.
	if _, err := applyProbeOff(ctx, s, false, binding(t, "orders-mtls", "orders", clientConfig(ca, second))); err != nil {
		t.Fatal(err)
	}
	w.check("rotation", all...)
	secondAlias := storedCertificate(t, s, "PolicyBinding", "orders-mtls").GetPolicyBinding().GetSpec().GetConfig().GetFields()["certificate"].GetStructValue().GetFields()["alias"].GetStringValue()
	if secondAlias == firstAlias || aliasVersion(t, svc, secondAlias) == "" {
		t.Errorf("after rotation the binding references %q (before: %q), which the secrets service should hold", secondAlias, firstAlias)
	}
	if v := aliasVersion(t, svc, firstAlias); v != "" {
		t.Errorf("the rotated-out alias %q is still stored (version %s)", firstAlias, v)
	}

	// Delete: the aliases no resource references go too.
	for _, ref := range []struct{ kind, name, alias string }{{"PolicyBinding", "orders-mtls", secondAlias}, {"PolicyBinding", "www-tls", wwwAlias}, {"Listener", "public", host.GetAlias()}} {
		if _, err := s.connect.Delete(ctx, connect.NewRequest(&policyv1.DeleteRequest{Kind: ref.kind, Name: ref.name})); err != nil {
			t.Fatal(err)
		}
		if v := aliasVersion(t, svc, ref.alias); v != "" {
			t.Errorf("%s/%s deleted, but its alias %q is still stored", ref.kind, ref.name, ref.alias)
		}
	}
	w.check("delete", all...)
	if w.seen == 0 {
		t.Fatal("the subscriber on > saw no message at all; the witness is blind")
	}
}

// A dry run validates the inline material and writes nothing anywhere.
func TestDryRunMovesNoKey(t *testing.T) {
	t.Parallel()
	var svc *materialtest.Service
	s := startStack(t, withRealSecrets(t, &svc))
	ctx := context.Background()
	ca := testca.New(t, "upstream CA")
	if _, err := applyProbeOff(ctx, s, true, service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", clientConfig(ca, ca.Client("gw")))); err != nil {
		t.Fatal(err)
	}
	ks, err := svc.API.ListKeystores(ctx, connect.NewRequest(&secretsv1.ListKeystoresRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks.Msg.GetKeystores() {
		if k.GetName() == inlinekeys.Keystore {
			t.Errorf("a dry run stored %d aliases in %s", len(k.GetAliases()), inlinekeys.Keystore)
		}
	}
	// Invalid inline material is refused as before, and nothing is moved.
	cfg := clientConfig(ca, ca.Expired("gw"))
	_, err = applyProbeOff(ctx, s, false, service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", cfg))
	if got := messages(t, err); !strings.Contains(got, "resources[1].policyBinding.spec.config.certificate") {
		t.Errorf("expired inline certificate: got\n%s", got)
	}
	ks, _ = svc.API.ListKeystores(ctx, connect.NewRequest(&secretsv1.ListKeystoresRequest{}))
	for _, k := range ks.Msg.GetKeystores() {
		if k.GetName() == inlinekeys.Keystore {
			t.Errorf("a refused apply stored %d aliases", len(k.GetAliases()))
		}
	}
}

// Without a secrets service an inline key has nowhere to go: it is refused
// at its field, with the fix, on a dry run as on an apply.
func TestInlineKeyWithoutSecretsServiceIsRefused(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	ca := testca.New(t, "upstream CA")
	for _, dryRun := range []bool{true, false} {
		_, err := applyProbeOff(ctx, s, dryRun, service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", clientConfig(ca, ca.Client("gw"))), listenerWith("public", ca.Server("api.example.com")))
		got := messages(t, err)
		for _, want := range []string{
			"resources[1].policyBinding.spec.config.certificate.key: an inline private key is moved into the secrets service at apply",
			"resources[2].listener.spec.hosts[0].certificate.key: an inline private key",
			"--secrets-server",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("dry run %v: missing %q in:\n%s", dryRun, want, got)
			}
		}
	}
	if _, err := s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "Service", Name: "orders"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("get after the refused apply: %v, want NotFound", err)
	}
}

// With the secrets service down, an inline key cannot be moved: the apply
// fails as unavailable, says so, and stores nothing; once it is back, the
// same apply goes through.
func TestInlineKeyWithSecretsServiceDownStoresNothing(t *testing.T) {
	t.Parallel()
	var svc *materialtest.Service
	s := startStack(t, withRealSecrets(t, &svc))
	ctx := context.Background()
	ca := testca.New(t, "upstream CA")
	rs := []*policyv1.Resource{service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", clientConfig(ca, ca.Client("gw")))}
	svc.Stop()
	_, err := applyProbeOff(ctx, s, false, rs...)
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "resources[1].policyBinding.spec.config.certificate.key") {
		t.Fatalf("apply with the secrets service down: %v, want Unavailable naming the key's field", err)
	}
	if _, err := s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "Service", Name: "orders"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("get after the failed apply: %v, want NotFound", err)
	}
	svc.Start(t)
	if _, err := applyProbeOff(ctx, s, false, rs...); err != nil {
		t.Fatalf("apply once the secrets service is back: %v", err)
	}
}
