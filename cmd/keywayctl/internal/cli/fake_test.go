package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"keyway.dev/keywayctl/internal/resource"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"
)

// fakePolicyService is a FAKE PolicyService for keywayctl's command tests:
// this checkout has no policy service yet, so it stands in for one. It keeps
// resources in a slice, answers Apply with a canned error or "created" for
// each resource, and records every Apply request. It validates nothing. The
// real service's end-to-end tests, which keywayctl must also pass, live in
// /work/main/tests.
type fakePolicyService struct {
	policyv1connect.UnimplementedPolicyServiceHandler

	mu sync.Mutex
	// stored answers Get and List.
	stored []*policyv1.Resource
	// applyErr, when set, is Apply's answer.
	applyErr error
	// decorate, when set, adds warnings and certificates to results.
	decorate func(i int, r *policyv1.ApplyResult)
	// deleteErr, when set, is Delete's answer.
	deleteErr error
	// applies records the Apply requests received.
	applies []*policyv1.ApplyRequest
	// protocols records the protocol of each request.
	protocols []string
	revision  uint64
	// rollout answers GetRollout; watch is what WatchRollout streams.
	rollout *policyv1.Rollout
	watch   []*policyv1.Rollout
}

func (f *fakePolicyService) GetRollout(context.Context, *connect.Request[policyv1.GetRolloutRequest]) (*connect.Response[policyv1.GetRolloutResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return connect.NewResponse(&policyv1.GetRolloutResponse{Rollout: f.rollout}), nil
}

func (f *fakePolicyService) WatchRollout(_ context.Context, _ *connect.Request[policyv1.WatchRolloutRequest], stream *connect.ServerStream[policyv1.WatchRolloutResponse]) error {
	f.mu.Lock()
	watch := f.watch
	f.mu.Unlock()
	for _, r := range watch {
		if err := stream.Send(&policyv1.WatchRolloutResponse{Rollout: r}); err != nil {
			return err
		}
	}
	return nil
}

var _ policyv1connect.PolicyServiceHandler = (*fakePolicyService)(nil)

func (f *fakePolicyService) Apply(_ context.Context, req *connect.Request[policyv1.ApplyRequest]) (*connect.Response[policyv1.ApplyResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies = append(f.applies, proto.Clone(req.Msg).(*policyv1.ApplyRequest))
	f.protocols = append(f.protocols, req.Peer().Protocol)
	if f.applyErr != nil {
		return nil, f.applyErr
	}
	resp := &policyv1.ApplyResponse{}
	for i, r := range req.Msg.GetResources() {
		k, _ := resource.Of(r)
		res := &policyv1.ApplyResult{Kind: k.Name, Name: resource.Metadata(r).GetName()}
		if req.Msg.GetDryRun() {
			res.Action = policyv1.Action_ACTION_VALID
		} else {
			f.revision++
			res.Action, res.Revision = policyv1.Action_ACTION_CREATED, f.revision
		}
		if f.decorate != nil {
			f.decorate(i, res)
		}
		resp.Results = append(resp.Results, res)
		resp.Revision = max(resp.Revision, res.Revision)
	}
	return connect.NewResponse(resp), nil
}

func (f *fakePolicyService) Get(_ context.Context, req *connect.Request[policyv1.GetRequest]) (*connect.Response[policyv1.GetResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.protocols = append(f.protocols, req.Peer().Protocol)
	for _, r := range f.stored {
		if k, _ := resource.Of(r); strings.EqualFold(k.Name, req.Msg.GetKind()) && resource.Metadata(r).GetName() == req.Msg.GetName() {
			return connect.NewResponse(&policyv1.GetResponse{Resource: r}), nil
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("%s %q not found", req.Msg.GetKind(), req.Msg.GetName()))
}

func (f *fakePolicyService) List(_ context.Context, req *connect.Request[policyv1.ListRequest]) (*connect.Response[policyv1.ListResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.protocols = append(f.protocols, req.Peer().Protocol)
	resp := &policyv1.ListResponse{}
	for _, r := range f.stored {
		if k, _ := resource.Of(r); req.Msg.GetKind() == "" || strings.EqualFold(k.Name, req.Msg.GetKind()) {
			resp.Resources = append(resp.Resources, r)
		}
	}
	return connect.NewResponse(resp), nil
}

func (f *fakePolicyService) Delete(_ context.Context, req *connect.Request[policyv1.DeleteRequest]) (*connect.Response[policyv1.DeleteResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deleteErr != nil {
		return nil, f.deleteErr
	}
	f.revision++
	return connect.NewResponse(&policyv1.DeleteResponse{Revision: f.revision}), nil
}

// serve starts the fake on loopback, speaking HTTP/1.1 and h2c so that
// both --protocol connect and grpc reach it.
func (f *fakePolicyService) serve(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(policyv1connect.NewPolicyServiceHandler(f))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func (f *fakePolicyService) requests() []*policyv1.ApplyRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies
}
