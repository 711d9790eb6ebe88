package app_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/audit"
	"keyway.dev/internal/audit/audittest"
	"keyway.dev/internal/natstest"
	"keyway.dev/internal/testca"
	"keyway.dev/secrets/internal/app"
)

func TestSecretWritesAreAudited(t *testing.T) {
	t.Parallel()
	natsURL := natstest.Start(t).URL
	s := startOn(t, app.Config{Backend: "local", Dir: t.TempDir(), Audit: audit.Config{MaxAge: 48 * time.Hour, MaxBytes: 16 << 20}}, natsURL)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	ca := testca.New(t, "upstream CA")
	gw := ca.Client("gw")

	put, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM)}))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := s.API.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "partners", CertificatesPem: string(ca.CertPEM())}))
	if err != nil {
		t.Fatal(err)
	}
	// A dry run and a refused put record nothing.
	if _, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "dry", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM), DryRun: true})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "bad", CertificatePem: "not PEM"})); err == nil {
		t.Fatal("a bad alias was stored")
	}
	if _, err := s.API.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: "edge", Alias: "gw"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.API.DeleteTruststore(ctx, connect.NewRequest(&secretsv1.DeleteTruststoreRequest{Name: "partners"})); err != nil {
		t.Fatal(err)
	}

	msgs := audittest.Messages(t, nc)
	type want struct{ subject, kind, name, result, version string }
	wants := []want{
		{"keyway.audit.secrets.secret.put", "alias", "edge/gw", "attempt", ""},
		{"keyway.audit.secrets.secret.put", "alias", "edge/gw", "ok", put.Msg.GetAlias().GetVersion()},
		{"keyway.audit.secrets.secret.put", "truststore", "partners", "attempt", ""},
		{"keyway.audit.secrets.secret.put", "truststore", "partners", "ok", ts.Msg.GetTruststore().GetVersion()},
		{"keyway.audit.secrets.secret.delete", "alias", "edge/gw", "attempt", ""},
		{"keyway.audit.secrets.secret.delete", "alias", "edge/gw", "ok", ""},
		{"keyway.audit.secrets.secret.delete", "truststore", "partners", "attempt", ""},
		{"keyway.audit.secrets.secret.delete", "truststore", "partners", "ok", ""},
	}
	if len(msgs) != len(wants) {
		for _, m := range msgs {
			t.Logf("%s %s", m.Subject, m.Data)
		}
		t.Fatalf("%d audit records, want %d", len(msgs), len(wants))
	}
	var texts []string
	for i, w := range wants {
		m, r := msgs[i], msgs[i].Record
		texts = append(texts, string(m.Data))
		if m.Subject != w.subject || r.Kind != w.kind || r.Name != w.name || r.Result != w.result || r.Version != w.version || r.Service != "secrets" {
			t.Errorf("record %d: %s %s; want %+v", i, m.Subject, m.Data, w)
		}
		if !strings.HasPrefix(r.Actor.Addr, "127.0.0.1:") || r.ID == "" {
			t.Errorf("record %d: actor %+v, ID %q", i, r.Actor, r.ID)
		}
		if put := strings.HasSuffix(w.subject, "put"); put != (len(r.Digest) == 64) {
			t.Errorf("record %d: digest %q; want a SHA-256 for puts, none for deletes", i, r.Digest)
		}
	}
	if msgs[0].Record.ID != msgs[1].Record.ID || msgs[1].Record.ID == msgs[2].Record.ID {
		t.Errorf("record IDs: want one per call, shared by attempt and outcome")
	}
	noKeyMaterial(t, "the audit stream", texts, gw.KeyPEM)

	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, audit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxAge != 48*time.Hour || c.MaxBytes != 16<<20 {
		t.Errorf("audit stream: max age %s, max bytes %d; want 48h and 16MiB", c.MaxAge, c.MaxBytes)
	}
}

func TestSecretWriteRefusedWhenAuditCannotBeWritten(t *testing.T) {
	t.Parallel()
	natsURL := natstest.Start(t).URL
	dir := t.TempDir()
	s := startOn(t, app.Config{Backend: "local", Dir: dir}, natsURL)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(ctx, audit.StreamName); err != nil {
		t.Fatal(err)
	}
	gw := testca.New(t, "upstream CA").Client("gw")
	_, err = s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM)}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "audit") || !strings.Contains(err.Error(), "nothing was stored") {
		t.Errorf("put without an audit stream: %v; want Unavailable naming the audit trail", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "keystores/edge/gw/key.pem")); !os.IsNotExist(err) {
		t.Errorf("the key was written although the write was refused: %v", err)
	}
}
