package audit_test

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"keyway.dev/internal/audit"
	"keyway.dev/internal/audit/audittest"
	"keyway.dev/internal/envflag"
	"keyway.dev/internal/natstest"
)

func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	return natstest.Start(t).Connect(t)
}

func open(t *testing.T, js jetstream.JetStream, cfg audit.Config) *audit.Writer {
	t.Helper()
	w, err := audit.Open(context.Background(), js, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func TestStreamLimitsAsConfigured(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	js, _ := jetstream.New(nc)
	ctx := context.Background()

	open(t, js, audit.Config{Service: audit.ServicePolicy})
	st, err := js.Stream(ctx, audit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	c := st.CachedInfo().Config
	if c.MaxAge != 90*24*time.Hour || c.MaxBytes != 1<<30 || c.Discard != jetstream.DiscardOld || len(c.Subjects) != 1 || c.Subjects[0] != "keyway.audit.>" {
		t.Errorf("default stream: max age %s, max bytes %d, discard %v, subjects %v; want 2160h, 1GiB, old, keyway.audit.>", c.MaxAge, c.MaxBytes, c.Discard, c.Subjects)
	}

	// A service started with other limits updates the existing stream.
	open(t, js, audit.Config{Service: audit.ServiceSecrets, MaxAge: 2 * time.Hour, MaxBytes: 8 << 20})
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.MaxAge != 2*time.Hour || c.MaxBytes != 8<<20 {
		t.Errorf("updated stream: max age %s, max bytes %d; want 2h, 8MiB", c.MaxAge, c.MaxBytes)
	}
}

func TestRecordsAreBoundedAndOnTheirSubject(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	js, _ := jetstream.New(nc)
	w := open(t, js, audit.Config{Service: audit.ServiceSecrets})
	long := strings.Repeat("é", 5000)
	ctx := audit.WithPeer(context.Background(), "127.0.0.1:5555")
	rec := audit.Record{Actor: audit.ActorFrom(ctx), Action: audit.ActionSecretPut, Kind: "alias", Name: long, Error: long}
	rec.Actor.Identity = long
	if err := w.Attempt(ctx, rec); err != nil {
		t.Fatal(err)
	}
	msgs := audittest.Messages(t, nc)
	if len(msgs) != 1 {
		t.Fatalf("%d records, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Subject != "keyway.audit.secrets.secret.put" {
		t.Errorf("subject %q, want keyway.audit.secrets.secret.put", m.Subject)
	}
	r := m.Record
	if len(m.Data) > 2048 || len(r.Name) > 256 || len(r.Actor.Identity) > 256 || !strings.HasSuffix(r.Name, "…") {
		t.Errorf("record of %d bytes, name %d bytes, identity %d bytes: not bounded", len(m.Data), len(r.Name), len(r.Actor.Identity))
	}
	if r.Result != audit.ResultAttempt || r.Service != audit.ServiceSecrets || r.ID == "" || r.Time.IsZero() || r.Actor.Addr != "127.0.0.1:5555" {
		t.Errorf("record %+v: want an attempt by secrets from 127.0.0.1:5555 with ID and time", r)
	}
}

// An attempt the stream does not take is an error (the write must not be
// made); an outcome it does not take is retried until it does.
func TestFailClosedAttemptAndRetriedOutcome(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	w := open(t, js, audit.Config{Service: audit.ServicePolicy})
	if err := js.DeleteStream(ctx, audit.StreamName); err != nil {
		t.Fatal(err)
	}
	rec := audit.Record{ID: "0123456789abcdef", Action: audit.ActionApply, Kind: "Service", Name: "orders"}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := w.Attempt(actx, rec); err == nil || !strings.Contains(err.Error(), "did not take the record") {
		t.Fatalf("Attempt without a stream: %v, want an error", err)
	}

	rec.Result, rec.Revision = audit.ResultOK, 7
	w.Outcome(ctx, rec)
	reg := prometheus.NewRegistry()
	reg.MustRegister(w.Collectors()...)
	if got := metric(t, reg, "keyway_audit_pending"); got != 1 {
		t.Errorf("keyway_audit_pending = %v, want 1", got)
	}
	if got := metric(t, reg, "keyway_audit_publish_errors_total"); got < 2 {
		t.Errorf("keyway_audit_publish_errors_total = %v, want at least 2", got)
	}
	sub, err := nc.SubscribeSync("keyway.audit.>")
	if err != nil {
		t.Fatal(err)
	}
	// The stream comes back (another service starting creates it).
	open(t, js, audit.Config{Service: audit.ServiceSecrets})
	msg, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("the outcome record was not retried: %v", err)
	}
	if !strings.Contains(string(msg.Data), `"result":"ok"`) || !strings.Contains(string(msg.Data), `"revision":7`) {
		t.Errorf("retried record %s", msg.Data)
	}
	if msgs := audittest.Messages(t, nc); len(msgs) != 1 || msgs[0].Record.ID != rec.ID {
		t.Errorf("stream holds %d records, want the retried outcome", len(msgs))
	}
}

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	n, err := testutil.GatherAndCount(reg, name)
	if err != nil || n != 1 {
		t.Fatalf("metric %s: %d series, %v", name, n, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		age     time.Duration
		bytes   int64
		wantErr string
	}{
		{name: "defaults", age: 90 * 24 * time.Hour, bytes: 1 << 30},
		{name: "flags", args: []string{"--audit-max-age", "24h", "--audit-max-bytes", "512MiB"}, age: 24 * time.Hour, bytes: 512 << 20},
		{name: "env", env: map[string]string{"KEYWAY_AUDIT_MAX_AGE": "1h", "KEYWAY_AUDIT_MAX_BYTES": "2097152"}, age: time.Hour, bytes: 2 << 20},
		{name: "flag over env", env: map[string]string{"KEYWAY_AUDIT_MAX_BYTES": "2GiB"}, args: []string{"--audit-max-bytes", "3GB"}, age: 90 * 24 * time.Hour, bytes: 3e9},
		{name: "bad age", args: []string{"--audit-max-age", "90d"}, wantErr: "--audit-max-age"},
		{name: "too small", args: []string{"--audit-max-bytes", "1KiB"}, wantErr: "--audit-max-bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			f := audit.AddFlags(fs)
			if err := envflag.Parse(fs, envflag.Prefix, tc.args, nil); err != nil {
				t.Fatal(err)
			}
			c, err := f.Config(audit.ServicePolicy, 3)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.MaxAge != tc.age || c.MaxBytes != tc.bytes || c.Replicas != 3 || c.Service != audit.ServicePolicy {
				t.Errorf("config %+v, want max age %s, max bytes %d, 3 replicas", c, tc.age, tc.bytes)
			}
		})
	}
}

// BenchmarkWriteRecords is what the audit trail adds to one write: an
// attempt record acknowledged before it, an outcome record after it.
func BenchmarkWriteRecords(b *testing.B) {
	js := natstest.Start(b).JetStream(b)
	w, err := audit.Open(context.Background(), js, audit.Config{Service: audit.ServicePolicy}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	rec := audit.Record{Action: audit.ActionApply, Kind: "Service", Name: "orders", Digest: strings.Repeat("ab", 32), Actor: audit.Actor{Addr: "127.0.0.1:50000"}}
	b.ResetTimer()
	for b.Loop() {
		rec.ID = audit.NewID()
		if err := w.Attempt(ctx, rec); err != nil {
			b.Fatal(err)
		}
		out := rec
		out.Result, out.Revision = audit.ResultOK, 1
		w.Outcome(ctx, out)
	}
}
