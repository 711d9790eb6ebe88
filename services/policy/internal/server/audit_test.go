package server_test

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/audit"
	"keyway.dev/internal/audit/audittest"
	"keyway.dev/internal/configkv"
	"keyway.dev/policy/internal/app"
	"keyway.dev/policy/internal/store"
)

// storedDigest is the digest of the configuration bucket's value at rev,
// read straight from the bucket's stream.
func storedDigest(t *testing.T, s *stack, rev uint64) string {
	t.Helper()
	js, _ := jetstream.New(s.nc)
	st, err := js.Stream(context.Background(), "KV_"+configkv.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(context.Background(), rev)
	if err != nil {
		t.Fatal(err)
	}
	return store.Digest(m.Data)
}

// keyNeedles are pieces of a PEM key as any encoding of it would show them.
func keyNeedles(t *testing.T, keyPEM string) []string {
	t.Helper()
	block, _ := pem.Decode([]byte(keyPEM))
	if block == nil {
		t.Fatal("not a PEM key")
	}
	b64 := base64.StdEncoding.EncodeToString(block.Bytes)
	return []string{"PRIVATE KEY", b64[len(b64)/2 : len(b64)/2+24], string(block.Bytes[len(block.Bytes)/2 : len(block.Bytes)/2+16])}
}

func TestApplyAndDeleteAreAudited(t *testing.T) {
	t.Parallel()
	s := startStack(t, withKeyStore(t))
	ctx := context.Background()
	cfg := mtlsConfig(t)
	key := cfg["certificate"].(map[string]any)["key"].(string)

	resp, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", cfg))
	if err != nil {
		t.Fatal(err)
	}
	del, err := s.connect.Delete(ctx, connect.NewRequest(&policyv1.DeleteRequest{Kind: "PolicyBinding", Name: "orders-mtls"}))
	if err != nil {
		t.Fatal(err)
	}
	// A refused apply and an unchanged one store nothing and record nothing.
	if _, err := apply(ctx, s.connect, false, route("r", "/r", "missing")); err == nil {
		t.Fatal("a route to a missing Service was applied")
	}
	if _, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443")); err != nil {
		t.Fatal(err)
	}

	// The policy service's own records; the secrets service records the
	// moving of the inline key in the same stream, under its own subjects.
	var msgs []audittest.Message
	for _, m := range audittest.Messages(t, s.nc) {
		if strings.HasPrefix(m.Subject, "keyway.audit.policy.") {
			msgs = append(msgs, m)
		} else if !strings.HasPrefix(m.Subject, "keyway.audit.secrets.") {
			t.Errorf("an audit record on %s", m.Subject)
		}
	}
	type want struct {
		subject, action, kind, name, result string
		revision                            uint64
		digest                              bool
	}
	svcRev, bindRev := resp.Results[0].Revision, resp.Results[1].Revision
	wants := []want{
		{"keyway.audit.policy.apply", "apply", "Service", "orders", "attempt", 0, true},
		{"keyway.audit.policy.apply", "apply", "PolicyBinding", "orders-mtls", "attempt", 0, true},
		{"keyway.audit.policy.apply", "apply", "Service", "orders", "ok", svcRev, true},
		{"keyway.audit.policy.apply", "apply", "PolicyBinding", "orders-mtls", "ok", bindRev, true},
		{"keyway.audit.policy.delete", "delete", "PolicyBinding", "orders-mtls", "attempt", 0, false},
		{"keyway.audit.policy.delete", "delete", "PolicyBinding", "orders-mtls", "ok", del.Msg.Revision, false},
	}
	if len(msgs) != len(wants) {
		for _, m := range msgs {
			t.Logf("%s %s", m.Subject, m.Data)
		}
		t.Fatalf("%d audit records, want %d", len(msgs), len(wants))
	}
	for i, w := range wants {
		m, r := msgs[i], msgs[i].Record
		if m.Subject != w.subject || r.Action != w.action || r.Kind != w.kind || r.Name != w.name || r.Result != w.result || r.Revision != w.revision || r.Service != "policy" {
			t.Errorf("record %d: %s %s; want %+v", i, m.Subject, m.Data, w)
		}
		if !strings.HasPrefix(r.Actor.Addr, "127.0.0.1:") || r.ID == "" || time.Since(r.Time) > time.Minute {
			t.Errorf("record %d: actor %+v, ID %q, time %s: want the caller's loopback address, an ID and the time", i, r.Actor, r.ID, r.Time)
		}
		if w.digest != (r.Digest != "") {
			t.Errorf("record %d: digest %q", i, r.Digest)
		}
	}
	// One ID per call, shared by its attempt and outcome records.
	if msgs[0].Record.ID != msgs[3].Record.ID || msgs[0].Record.ID == msgs[4].Record.ID || msgs[4].Record.ID != msgs[5].Record.ID {
		t.Errorf("record IDs %s %s %s %s: want one per call", msgs[0].Record.ID, msgs[3].Record.ID, msgs[4].Record.ID, msgs[5].Record.ID)
	}
	// The digest is that of the bytes stored at the revision.
	if got, want := msgs[3].Record.Digest, storedDigest(t, s, bindRev); got != want {
		t.Errorf("binding digest %s, want the stored value's %s", got, want)
	}
	if got, want := msgs[2].Record.Digest, storedDigest(t, s, svcRev); got != want {
		t.Errorf("service digest %s, want the stored value's %s", got, want)
	}
	for i, m := range msgs {
		for _, n := range keyNeedles(t, key) {
			if strings.Contains(string(m.Data), n) {
				t.Errorf("audit record %d holds key material", i)
			}
		}
	}

	// ListAudit reads the same records back, the secrets service's among
	// them; with a limit, the newest.
	list, err := s.connect.ListAudit(ctx, connect.NewRequest(&policyv1.ListAuditRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var policyRecs []*policyv1.AuditRecord
	for _, r := range list.Msg.GetRecords() {
		if r.GetService() == "policy" {
			policyRecs = append(policyRecs, r)
		}
	}
	if n := len(policyRecs); n != 6 {
		t.Fatalf("ListAudit = %d policy records, want 6", n)
	}
	if last := policyRecs[5]; last.GetAction() != "delete" || last.GetResult() != "ok" || last.GetRevision() != del.Msg.Revision || policyRecs[4].GetResult() != "attempt" {
		t.Errorf("ListAudit's last policy records = %v, want the delete's attempt and outcome", policyRecs[4:])
	}
	all := list.Msg.GetRecords()
	list, err = s.connect.ListAudit(ctx, connect.NewRequest(&policyv1.ListAuditRequest{Limit: 2}))
	if err != nil {
		t.Fatal(err)
	}
	if rs := list.Msg.GetRecords(); len(rs) != 2 || rs[1].GetSequence() != all[len(all)-1].GetSequence() || rs[0].GetSequence() != all[len(all)-2].GetSequence() {
		t.Errorf("ListAudit limit 2 = %v, want the newest two of %d", rs, len(all))
	}
}

// With no audit stream to take the record, a write is refused and nothing
// is stored.
func TestWriteRefusedWhenAuditCannotBeWritten(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	if _, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443")); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(s.nc)
	if err := js.DeleteStream(ctx, audit.StreamName); err != nil {
		t.Fatal(err)
	}
	_, err := apply(ctx, s.connect, false, service("billing", "127.0.0.1:9444"))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "audit") || !strings.Contains(err.Error(), "nothing was stored") {
		t.Errorf("apply without an audit stream: %v; want Unavailable naming the audit trail", err)
	}
	if _, err := s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "Service", Name: "billing"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("get billing after the refused apply: %v, want NotFound", err)
	}
	_, err = s.connect.Delete(ctx, connect.NewRequest(&policyv1.DeleteRequest{Kind: "Service", Name: "orders"}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("delete without an audit stream: %v; want Unavailable", err)
	}
	if _, err := s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "Service", Name: "orders"})); err != nil {
		t.Errorf("orders after the refused delete: %v, want it still stored", err)
	}
}

func TestAuditStreamLimitsAsConfigured(t *testing.T) {
	t.Parallel()
	s := startStack(t, func(c *app.Config) { c.Audit = audit.Config{MaxAge: 36 * time.Hour, MaxBytes: 64 << 20} })
	js, _ := jetstream.New(s.nc)
	st, err := js.Stream(context.Background(), audit.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxAge != 36*time.Hour || c.MaxBytes != 64<<20 || c.Replicas != 1 {
		t.Errorf("audit stream: max age %s, max bytes %d, replicas %d; want 36h, 64MiB, 1", c.MaxAge, c.MaxBytes, c.Replicas)
	}
}

func history(t *testing.T, s *stack, kind, name string) []*policyv1.Revision {
	t.Helper()
	resp, err := s.connect.History(context.Background(), connect.NewRequest(&policyv1.HistoryRequest{Kind: kind, Name: name}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetRevisions()
}

func TestHistoryAndRollback(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	first, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9555"))
	if err != nil {
		t.Fatal(err)
	}
	revs := history(t, s, "service", "orders")
	if len(revs) != 2 || revs[0].GetRevision() != second.Revision || revs[1].GetRevision() != first.Revision {
		t.Fatalf("history = %v, want revisions %d and %d, newest first", revs, second.Revision, first.Revision)
	}
	for _, r := range revs {
		if r.GetOperation() != policyv1.Operation_OPERATION_PUT || r.GetDigest() != storedDigest(t, s, r.GetRevision()) || r.GetCreateTime() == nil {
			t.Errorf("revision %v: want a put with the stored value's digest and a time", r)
		}
	}
	// The same through a gRPC client.
	g, err := s.grpc.History(ctx, &policyv1.HistoryRequest{Kind: "Service", Name: "orders"})
	if err != nil || len(g.GetRevisions()) != 2 || g.GetRevisions()[0].GetDigest() != revs[0].GetDigest() {
		t.Errorf("gRPC History = %v, %v; want the same two revisions", g, err)
	}
	if got := revs[1].GetResource().GetService().GetSpec().GetAddress(); got != "127.0.0.1:9443" {
		t.Errorf("revision %d holds address %q, want 127.0.0.1:9443", first.Revision, got)
	}

	// A dry run validates and stores nothing.
	dry, err := s.connect.Rollback(ctx, connect.NewRequest(&policyv1.RollbackRequest{Kind: "Service", Name: "orders", ToRevision: first.Revision, DryRun: true}))
	if err != nil {
		t.Fatal(err)
	}
	if dry.Msg.GetResult().GetAction() != policyv1.Action_ACTION_VALID {
		t.Errorf("dry-run rollback: %v, want valid", dry.Msg.GetResult())
	}
	if n := len(history(t, s, "Service", "orders")); n != 2 {
		t.Errorf("a dry-run rollback stored something: %d revisions", n)
	}

	rb, err := s.connect.Rollback(ctx, connect.NewRequest(&policyv1.RollbackRequest{Kind: "Service", Name: "orders", ToRevision: first.Revision}))
	if err != nil {
		t.Fatal(err)
	}
	if r := rb.Msg.GetResult(); r.GetAction() != policyv1.Action_ACTION_UPDATED || r.GetRevision() <= second.Revision {
		t.Errorf("rollback: %v, want updated at a new revision", r)
	}
	got, err := s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "Service", Name: "orders"}))
	if err != nil {
		t.Fatal(err)
	}
	if a := got.Msg.GetResource().GetService().GetSpec().GetAddress(); a != "127.0.0.1:9443" {
		t.Errorf("after rollback the address is %q, want revision %d's 127.0.0.1:9443", a, first.Revision)
	}
	rbRecords := audittest.Find(audittest.Messages(t, s.nc), func(r audit.Record) bool { return r.Action == audit.ActionRollback })
	if len(rbRecords) != 2 || rbRecords[1].Record.Revision != rb.Msg.GetResult().GetRevision() || rbRecords[1].Subject != "keyway.audit.policy.rollback" {
		t.Errorf("rollback audit records %v, want attempt and outcome at revision %d", rbRecords, rb.Msg.GetResult().GetRevision())
	}
}

func TestRollbackRefusals(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	if _, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443"), service("billing", "127.0.0.1:9444")); err != nil {
		t.Fatal(err)
	}
	v1, err := apply(ctx, s.connect, false, route("shop", "/shop", "orders"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply(ctx, s.connect, false, route("shop", "/shop", "billing")); err != nil {
		t.Fatal(err)
	}
	del, err := s.connect.Delete(ctx, connect.NewRequest(&policyv1.DeleteRequest{Kind: "Service", Name: "orders"}))
	if err != nil {
		t.Fatal(err)
	}
	before := len(history(t, s, "Route", "shop"))

	rollback := func(kind, name string, to uint64) error {
		_, err := s.connect.Rollback(ctx, connect.NewRequest(&policyv1.RollbackRequest{Kind: kind, Name: name, ToRevision: to}))
		return err
	}
	// Revision 1 of the route names a Service that is gone.
	err = rollback("Route", "shop", v1.Revision)
	t.Logf("refused: %v", err)
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "orders") || !strings.Contains(err.Error(), "revision") {
		t.Errorf("rollback to a revision that no longer validates: %v; want InvalidArgument naming the missing Service", err)
	}
	if vs := violations(t, err); len(vs) == 0 || !strings.Contains(vs[0].GetDescription(), "orders") {
		t.Errorf("violations %v, want one naming orders", vs)
	}
	// A revision of another resource.
	err = rollback("Route", "shop", v1.Revision-1) // Service/billing's
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound || !strings.Contains(ce.Message(), "not a revision of Route/shop but of Service/billing") {
		t.Errorf("rollback to another resource's revision: %v; want NotFound saying so", err)
	}
	// A deletion, and a revision never written.
	if err := rollback("Service", "orders", del.Msg.Revision); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "deleted") {
		t.Errorf("rollback to a deletion: %v; want InvalidArgument", err)
	}
	if err := rollback("Route", "shop", 999); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("rollback to revision 999: %v; want NotFound", err)
	}
	if err := rollback("Route", "shop", 0); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("rollback to revision 0: %v; want InvalidArgument", err)
	}
	if n := len(history(t, s, "Route", "shop")); n != before {
		t.Errorf("refused rollbacks stored something: %d revisions, want %d", n, before)
	}
	// History of a resource never applied.
	if _, err := s.connect.History(ctx, connect.NewRequest(&policyv1.HistoryRequest{Kind: "Route", Name: "never"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("history of a resource never applied: %v, want NotFound", err)
	}
}
