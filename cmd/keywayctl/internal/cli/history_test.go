package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"
)

// fakeHistory is a FAKE PolicyService answering History, Rollback and
// ListAudit with canned answers and recording the requests, for the command
// tests; the real service's History and Rollback are tested in
// services/policy/internal/server.
type fakeHistory struct {
	policyv1connect.UnimplementedPolicyServiceHandler

	mu        sync.Mutex
	revisions []*policyv1.Revision
	rollback  *policyv1.ApplyResult
	records   []*policyv1.AuditRecord
	err       error
	rollbacks []*policyv1.RollbackRequest
	audits    []*policyv1.ListAuditRequest
}

func (f *fakeHistory) History(_ context.Context, req *connect.Request[policyv1.HistoryRequest]) (*connect.Response[policyv1.HistoryResponse], error) {
	if f.err != nil {
		return nil, f.err
	}
	return connect.NewResponse(&policyv1.HistoryResponse{Revisions: f.revisions}), nil
}

func (f *fakeHistory) Rollback(_ context.Context, req *connect.Request[policyv1.RollbackRequest]) (*connect.Response[policyv1.RollbackResponse], error) {
	f.mu.Lock()
	f.rollbacks = append(f.rollbacks, req.Msg)
	f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return connect.NewResponse(&policyv1.RollbackResponse{Result: f.rollback}), nil
}

func (f *fakeHistory) ListAudit(_ context.Context, req *connect.Request[policyv1.ListAuditRequest]) (*connect.Response[policyv1.ListAuditResponse], error) {
	f.mu.Lock()
	f.audits = append(f.audits, req.Msg)
	f.mu.Unlock()
	return connect.NewResponse(&policyv1.ListAuditResponse{Records: f.records}), nil
}

func (f *fakeHistory) serve(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(policyv1connect.NewPolicyServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func historyFixture() []*policyv1.Revision {
	at := func(h int) *timestamppb.Timestamp { return timestamppb.New(now.Add(-time.Duration(h) * time.Hour)) }
	svc := func(addr string) *policyv1.Resource {
		return &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
			ApiVersion: "keyway.dev/v1alpha1", Kind: "Service",
			Metadata: &policyv1.ObjectMeta{Name: "orders"}, Spec: &policyv1.ServiceSpec{Address: addr},
		}}}
	}
	return []*policyv1.Revision{
		{Revision: 9, CreateTime: at(1), Operation: policyv1.Operation_OPERATION_DELETE},
		{Revision: 7, CreateTime: at(2), Operation: policyv1.Operation_OPERATION_PUT, Digest: strings.Repeat("ab", 32), Resource: svc("10.0.0.2:443")},
		{Revision: 3, CreateTime: at(3), Operation: policyv1.Operation_OPERATION_PUT, Digest: strings.Repeat("cd", 32), Resource: svc("10.0.0.1:443")},
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	fake := &fakeHistory{revisions: historyFixture()}
	url := fake.serve(t)

	stdout, stderr, err := keywayctl(t, url, "", "history", "svc", "orders")
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	want := `REVISION   CREATED                OP       DIGEST
9          2026-05-31T23:00:00Z   delete   -
7          2026-05-31T22:00:00Z   put      abababababab
3          2026-05-31T21:00:00Z   put      cdcdcdcdcdcd
`
	if stdout != want {
		t.Errorf("history table:\n%s\nwant:\n%s", stdout, want)
	}

	stdout, _, err = keywayctl(t, url, "", "history", "service/orders", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Items []struct {
			Revision  uint64
			Operation string
			Digest    string
			Resource  struct {
				Kind string
				Spec struct{ Address string }
			}
		}
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("history -o json is not JSON: %v\n%s", err, stdout)
	}
	if len(got.Items) != 3 || got.Items[1].Revision != 7 || got.Items[1].Operation != "put" || got.Items[1].Resource.Kind != "Service" || got.Items[2].Resource.Spec.Address != "10.0.0.1:443" || got.Items[0].Operation != "delete" {
		t.Errorf("history -o json = %s", stdout)
	}

	stdout, _, err = keywayctl(t, url, "", "history", "svc", "orders", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "- revision: 7\n") || !strings.Contains(stdout, "address: 10.0.0.2:443") {
		t.Errorf("history -o yaml:\n%s", stdout)
	}

	notFound := &fakeHistory{err: connect.NewError(connect.CodeNotFound, errors.New("Service/nope has no revision in the store: it was never applied, or its history was purged"))}
	_, stderr, err = keywayctl(t, notFound.serve(t), "", "history", "svc", "nope")
	if err == nil || stderr != "error: Service/nope has no revision in the store: it was never applied, or its history was purged\n" {
		t.Errorf("history of a missing resource: %q", stderr)
	}
	for _, args := range [][]string{{"history", "svc"}, {"history", "svc", "orders", "-o", "name"}} {
		if _, stderr, err := keywayctl(t, url, "", args...); err == nil {
			t.Errorf("%v: accepted", args)
		} else if !strings.Contains(stderr, "NAME") && !strings.Contains(stderr, "output format") {
			t.Errorf("%v: %q", args, stderr)
		}
	}
}

func TestRollback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		result  *policyv1.ApplyResult
		err     error
		wantOut string
		wantErr string
		wantReq *policyv1.RollbackRequest
	}{
		{
			name:    "rolled back",
			args:    []string{"rollback", "svc", "orders", "--to-revision", "3"},
			result:  &policyv1.ApplyResult{Kind: "Service", Name: "orders", Action: policyv1.Action_ACTION_UPDATED, Revision: 10},
			wantOut: "service/orders rolled back to revision 3 (stored as revision 10)\n",
			wantReq: &policyv1.RollbackRequest{Kind: "Service", Name: "orders", ToRevision: 3},
		},
		{
			name:    "dry run",
			args:    []string{"rollback", "pb/orders-mtls", "--to-revision", "3", "--dry-run"},
			result:  &policyv1.ApplyResult{Action: policyv1.Action_ACTION_VALID},
			wantOut: "policybinding/orders-mtls: revision 3 is valid and would be stored again (dry run)\n",
			wantReq: &policyv1.RollbackRequest{Kind: "PolicyBinding", Name: "orders-mtls", ToRevision: 3, DryRun: true},
		},
		{
			name:    "no longer valid",
			args:    []string{"rollback", "route", "shop", "--to-revision", "3"},
			err:     connect.NewError(connect.CodeInvalidArgument, errors.New("rollback of Route/shop to revision 3 refused: 1 problem; nothing was applied\nresources[0].route.spec.service: Service \"orders\" does not exist; apply it first or in the same request")),
			wantErr: "error: rollback of Route/shop to revision 3 refused: 1 problem; nothing was applied\nresources[0].route.spec.service: Service \"orders\" does not exist; apply it first or in the same request\n",
			wantReq: &policyv1.RollbackRequest{Kind: "Route", Name: "shop", ToRevision: 3},
		},
		{
			name:    "no revision",
			args:    []string{"rollback", "svc", "orders"},
			wantErr: "error: missing --to-revision: give the revision to store again ('keywayctl history service orders' lists them)\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := &fakeHistory{rollback: tt.result, err: tt.err}
			stdout, stderr, err := keywayctl(t, fake.serve(t), "", tt.args...)
			if (err != nil) != (tt.wantErr != "") || stdout != tt.wantOut || stderr != tt.wantErr {
				t.Errorf("got stdout %q stderr %q err %v\nwant stdout %q stderr %q", stdout, stderr, err, tt.wantOut, tt.wantErr)
			}
			switch {
			case tt.wantReq == nil && len(fake.rollbacks) != 0:
				t.Errorf("sent %v, want nothing sent", fake.rollbacks)
			case tt.wantReq != nil && (len(fake.rollbacks) != 1 || fake.rollbacks[0].String() != tt.wantReq.String()):
				t.Errorf("sent %v, want %v", fake.rollbacks, tt.wantReq)
			}
		})
	}
}

func TestAudit(t *testing.T) {
	t.Parallel()
	fake := &fakeHistory{records: []*policyv1.AuditRecord{
		{Sequence: 1, Time: timestamppb.New(now.Add(-time.Minute)), ActorAddress: "127.0.0.1:50000", Service: "policy", Action: "apply", Kind: "Service", Name: "orders", Result: "attempt", Id: "aa", Digest: strings.Repeat("ab", 32)},
		{Sequence: 2, Time: timestamppb.New(now.Add(-time.Minute)), ActorIdentity: "spiffe://keyway.local/operator", ActorMethod: "certificate", ActorAddress: "127.0.0.1:50000", Service: "policy", Action: "apply", Kind: "Service", Name: "orders", Revision: 4, Result: "ok", Id: "aa"},
		{Sequence: 3, Time: timestamppb.New(now), ActorAddress: "127.0.0.1:50001", Service: "secrets", Action: "secret.put", Kind: "alias", Name: "edge/gw", Version: "v2", Result: "ok", Id: "bb"},
	}}
	url := fake.serve(t)
	stdout, stderr, err := keywayctl(t, url, "", "audit", "--since", "1h", "--limit", "50")
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	want := `TIME                   ACTOR                                              SERVICE   ACTION       RESOURCE         REVISION   RESULT
2026-05-31T23:59:00Z   127.0.0.1:50000                                    policy    apply        Service/orders   -          attempt
2026-05-31T23:59:00Z   spiffe://keyway.local/operator (127.0.0.1:50000)   policy    apply        Service/orders   4          ok
2026-06-01T00:00:00Z   127.0.0.1:50001                                    secrets   secret.put   alias/edge/gw    v2         ok
`
	if stdout != want {
		t.Errorf("audit table:\n%s\nwant:\n%s", stdout, want)
	}
	if len(fake.audits) != 1 || fake.audits[0].GetLimit() != 50 || !fake.audits[0].GetSince().AsTime().Equal(now.Add(-time.Hour)) {
		t.Errorf("sent %v, want limit 50 since %s", fake.audits, now.Add(-time.Hour))
	}
	stdout, _, err = keywayctl(t, url, "", "audit", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Items []struct {
			Sequence uint64
			Actor    struct{ Identity, Address string }
			Digest   string
			Result   string
		}
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got.Items) != 3 || got.Items[1].Actor.Identity != "spiffe://keyway.local/operator" || got.Items[0].Digest == "" {
		t.Errorf("audit -o json (%v):\n%s", err, stdout)
	}
}
