package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/access"
	"keyway.dev/internal/natstest"
	"keyway.dev/internal/testca"
	"keyway.dev/policy/internal/app"
	"keyway.dev/policy/internal/store"
)

// stack is a policy service on loopback over an embedded NATS server.
type stack struct {
	url     string
	connect policyv1connect.PolicyServiceClient
	grpc    policyv1.PolicyServiceClient
	nc      *nats.Conn
	cc      *grpc.ClientConn
}

// startStack starts the policy service with each of configure applied to
// its configuration.
func startStack(t *testing.T, configure ...func(*app.Config)) *stack {
	t.Helper()
	return startStackWith(t, func(c *app.Config) {
		for _, f := range configure {
			f(c)
		}
	})
}

// startStackWith is startStack with mod (may be nil) applied to the
// service's configuration.
func startStackWith(t *testing.T, mod func(*app.Config)) *stack {
	t.Helper()
	ns := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	cfg := app.Config{
		Listen: "127.0.0.1:0", NATSURL: ns.URL, Store: store.Config{},
		Access:   access.Options{InsecureNoAuth: true},
		OnListen: func(a net.Addr) { addrc <- a },
	}
	if mod != nil {
		mod(&cfg)
	}
	go func() { done <- app.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("policy service: %v", err)
		}
	})
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("policy service did not start: %v", err)
	}
	url := "http://" + addr.String()
	cc, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	nc := ns.Connect(t)
	return &stack{
		url:     url,
		connect: policyv1connect.NewPolicyServiceClient(http.DefaultClient, url),
		grpc:    policyv1.NewPolicyServiceClient(cc),
		nc:      nc,
		cc:      cc,
	}
}

func service(name, addr string) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "Service",
		Metadata: &policyv1.ObjectMeta{Name: name},
		Spec:     &policyv1.ServiceSpec{Address: addr},
	}}}
}

func route(name, path, svc string) *policyv1.Resource {
	return &policyv1.Resource{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{
		ApiVersion: "keyway.dev/v1alpha1", Kind: "Route",
		Metadata: &policyv1.ObjectMeta{Name: name},
		Spec:     &policyv1.RouteSpec{Path: path, Service: svc},
	}}}
}

func binding(t *testing.T, name, target string, config map[string]any) *policyv1.Resource {
	t.Helper()
	cfg, err := structpb.NewStruct(config)
	if err != nil {
		t.Fatal(err)
	}
	return &policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
		ApiVersion: "gateway.mulesoft.com/v1alpha1", Kind: "PolicyBinding",
		Metadata: &policyv1.ObjectMeta{Name: name},
		Spec: &policyv1.PolicyBindingSpec{
			TargetRef: &policyv1.TargetRef{Kind: "Service", Name: target},
			PolicyRef: &policyv1.PolicyRef{Name: "tls-outbound"},
			Config:    cfg,
		},
	}}}
}

func mtlsConfig(t *testing.T) map[string]any {
	ca := testca.New(t, "upstream CA")
	client := testca.New(t, "gateway CA").Client("gateway")
	return map[string]any{
		"skipValidation": false,
		"trustedCA":      string(ca.CertPEM()),
		"certificate":    map[string]any{"key": string(client.KeyPEM), "crt": string(client.CertPEM)},
		"minversion":     "1.2",
		"maxversion":     "1.3",
	}
}

func apply(ctx context.Context, c policyv1connect.PolicyServiceClient, dryRun bool, rs ...*policyv1.Resource) (*policyv1.ApplyResponse, error) {
	resp, err := c.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: rs, DryRun: dryRun}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func violations(t *testing.T, err error) []*errdetails.BadRequest_FieldViolation {
	t.Helper()
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInvalidArgument {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
	for _, d := range cerr.Details() {
		v, derr := d.Value()
		if br, ok := v.(*errdetails.BadRequest); derr == nil && ok {
			return br.GetFieldViolations()
		}
	}
	t.Fatalf("InvalidArgument without a BadRequest detail: %v", err)
	return nil
}

func TestApplyStoresAndReadsBack(t *testing.T) {
	t.Parallel()
	s := startStack(t, withKeyStore(t))
	ctx := context.Background()

	resp, err := apply(ctx, s.connect, false,
		service("orders", "127.0.0.1:9443"),
		route("orders", "/orders/{id}", "orders"),
		binding(t, "orders-mtls", "orders", mtlsConfig(t)))
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if len(resp.Results) != 3 {
		t.Fatalf("got %d results, want 3", len(resp.Results))
	}
	for _, r := range resp.Results {
		if r.Action != policyv1.Action_ACTION_CREATED || r.Revision == 0 {
			t.Errorf("%s/%s: action %v revision %d, want created with a revision", r.Kind, r.Name, r.Action, r.Revision)
		}
	}
	if certs := resp.Results[2].Certificates; len(certs) == 0 || certs[0].NotAfter == nil || certs[0].Sha256Fingerprint == "" {
		t.Errorf("binding result carries no certificate expiry: %v", certs)
	}

	got, err := s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "policybinding", Name: "orders-mtls"}))
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	pb := got.Msg.GetResource().GetPolicyBinding()
	if pb.GetSpec().GetTargetRef().GetName() != "orders" || pb.GetMetadata().GetRevision() != resp.Results[2].Revision {
		t.Errorf("get returned %v, want the binding at revision %d", pb, resp.Results[2].Revision)
	}
	if pb.GetApiVersion() != "gateway.mulesoft.com/v1alpha1" {
		t.Errorf("apiVersion %q: the binding should be stored as written", pb.GetApiVersion())
	}

	// Same content again: nothing is written.
	again, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443"))
	if err != nil {
		t.Fatal(err)
	}
	if r := again.Results[0]; r.Action != policyv1.Action_ACTION_UNCHANGED || r.Revision != resp.Results[0].Revision {
		t.Errorf("re-apply: %v at %d, want unchanged at %d", r.Action, r.Revision, resp.Results[0].Revision)
	}

	list, err := s.connect.List(ctx, connect.NewRequest(&policyv1.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.Msg.Resources); n != 3 {
		t.Errorf("list: %d resources, want 3", n)
	}
}

func TestInvalidApplyChangesNothing(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	if _, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443")); err != nil {
		t.Fatal(err)
	}
	cfg := mtlsConfig(t)
	cfg["ciphers"] = []any{"TLS_FOO"}
	delete(cfg, "skipValidation")
	_, err := apply(ctx, s.connect, false,
		service("orders", "127.0.0.1:9999"), // valid change, must not be stored
		service("Bad_Name", "nowhere"),
		binding(t, "orders-mtls", "orders", cfg))
	vs := violations(t, err)
	fields := map[string]bool{}
	for _, v := range vs {
		fields[v.Field] = true
		if v.Description == "" {
			t.Errorf("%s: empty description", v.Field)
		}
	}
	for _, want := range []string{
		"resources[1].service.metadata.name",
		"resources[1].service.spec.address",
		"resources[2].policyBinding.spec.config.skipValidation",
		"resources[2].policyBinding.spec.config.ciphers[0]",
	} {
		if !fields[want] {
			t.Errorf("no violation for %s; got %v", want, vs)
		}
	}
	got, err := s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "Service", Name: "orders"}))
	if err != nil {
		t.Fatal(err)
	}
	if a := got.Msg.GetResource().GetService().GetSpec().GetAddress(); a != "127.0.0.1:9443" {
		t.Errorf("orders address is %q after a refused apply, want the old 127.0.0.1:9443", a)
	}
	list, _ := s.connect.List(ctx, connect.NewRequest(&policyv1.ListRequest{}))
	if n := len(list.Msg.Resources); n != 1 {
		t.Errorf("%d resources stored after a refused apply, want 1", n)
	}
}

func TestDryRunStoresNothing(t *testing.T) {
	t.Parallel()
	s := startStack(t, withKeyStore(t))
	ctx := context.Background()
	resp, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{
		Resources: []*policyv1.Resource{service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", mtlsConfig(t))},
		DryRun:    true,
		Probe:     policyv1.ProbeMode_PROBE_MODE_OFF, // nothing listens there; this test is about storage
	}))
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	for _, r := range resp.Msg.Results {
		if r.Action != policyv1.Action_ACTION_VALID || r.Revision != 0 {
			t.Errorf("%s: %v at %d, want valid at 0", r.Name, r.Action, r.Revision)
		}
	}
	_, err = s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "Service", Name: "orders"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("get after dry run: %v, want NotFound", err)
	}
}

func TestGRPCClient(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	resp, err := s.grpc.Apply(ctx, &policyv1.ApplyRequest{Resources: []*policyv1.Resource{service("orders", "127.0.0.1:9443")}})
	if err != nil {
		t.Fatalf("gRPC apply: %v", err)
	}
	if resp.Results[0].Action != policyv1.Action_ACTION_CREATED {
		t.Errorf("action %v", resp.Results[0].Action)
	}
	_, err = s.grpc.Apply(ctx, &policyv1.ApplyRequest{Resources: []*policyv1.Resource{service("orders", "no-port")}})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("gRPC invalid apply: %v", err)
	}
	var found bool
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				found = found || v.Field == "resources[0].service.spec.address"
			}
		}
	}
	if !found {
		t.Errorf("gRPC error lacks the field violation for the address: %v", st.Details())
	}
	got, err := s.grpc.Get(ctx, &policyv1.GetRequest{Kind: "svc", Name: "orders"})
	if err != nil || got.Resource.GetService().GetSpec().GetAddress() != "127.0.0.1:9443" {
		t.Errorf("gRPC get: %v %v", got, err)
	}
}

func TestRevisionConflicts(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	first, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:1001"))
	if err != nil {
		t.Fatal(err)
	}
	rev := first.Results[0].Revision

	// Stale revision: refused, nothing changes.
	stale := service("orders", "127.0.0.1:1002")
	stale.GetService().Metadata.Revision = rev + 100
	if _, err := apply(ctx, s.connect, false, stale); connect.CodeOf(err) != connect.CodeAborted {
		t.Fatalf("stale revision: %v, want Aborted", err)
	}

	// Many writers, all conditioned on the same revision: exactly one wins.
	const writers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := service("orders", "127.0.0.1:"+string(rune('2'+i))+"000")
			r.GetService().Metadata.Revision = rev
			_, err := apply(ctx, s.connect, false, r)
			mu.Lock()
			defer mu.Unlock()
			switch connect.CodeOf(err) {
			case connect.CodeAborted:
				conflicts++
			default:
				if err != nil {
					t.Errorf("writer %d: %v", i, err)
				} else {
					wins++
				}
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != writers-1 {
		t.Errorf("%d wins and %d conflicts among %d writers at one revision, want exactly 1 win", wins, conflicts, writers)
	}
}

func TestDeleteRefusesServiceInUse(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	if _, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443"), route("orders", "/orders/", "orders")); err != nil {
		t.Fatal(err)
	}
	_, err := s.connect.Delete(ctx, connect.NewRequest(&policyv1.DeleteRequest{Kind: "Service", Name: "orders"}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "Route/orders") {
		t.Fatalf("delete of a service in use: %v, want FailedPrecondition naming Route/orders", err)
	}
	if _, err := s.connect.Delete(ctx, connect.NewRequest(&policyv1.DeleteRequest{Kind: "route", Name: "orders"})); err != nil {
		t.Fatalf("delete route: %v", err)
	}
	if _, err := s.connect.Delete(ctx, connect.NewRequest(&policyv1.DeleteRequest{Kind: "service", Name: "orders"})); err != nil {
		t.Fatalf("delete service: %v", err)
	}
	_, err = s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "service", Name: "orders"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("get after delete: %v", err)
	}
	// A deleted resource can be created again.
	resp, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443"))
	if err != nil || resp.Results[0].Action != policyv1.Action_ACTION_CREATED {
		t.Errorf("re-create after delete: %v %v", resp, err)
	}
}

func TestReflectionAndHealth(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()

	// gRPC reflection lists the service, so buf curl and grpcurl need no schema.
	stream, err := reflectionpb.NewServerReflectionClient(s.cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	got, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range got.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	if !slices.Contains(names, "keyway.policy.v1.PolicyService") || !slices.Contains(names, "grpc.health.v1.Health") {
		t.Errorf("reflection lists %v", names)
	}

	h, err := healthpb.NewHealthClient(s.cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "keyway.policy.v1.PolicyService"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health: %v %v", h, err)
	}
	resp, err := http.Get(s.url + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestResponsesNeverCarryPrivateKeys(t *testing.T) {
	t.Parallel()
	s := startStack(t, withKeyStore(t))
	ctx := context.Background()
	cfg := mtlsConfig(t)
	if _, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", cfg)); err != nil {
		t.Fatal(err)
	}
	key := cfg["certificate"].(map[string]any)["key"].(string)

	got, err := s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "PolicyBinding", Name: "orders-mtls"}))
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.connect.List(ctx, connect.NewRequest(&policyv1.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for what, msg := range map[string]fmt.Stringer{"get": got.Msg, "list": list.Msg} {
		text := msg.String()
		if strings.Contains(text, "PRIVATE KEY") || strings.Contains(text, strings.Split(key, "\n")[1]) {
			t.Errorf("%s response carries the private key", what)
		}
		if !strings.Contains(text, "keyway-inline") {
			t.Errorf("%s response does not show where the key went (keystore keyway-inline)", what)
		}
	}

	// What get returns applies back unchanged: the reference keeps the
	// moved key.
	back := got.Msg.GetResource()
	resp, err := apply(ctx, s.connect, false, back)
	if err != nil {
		t.Fatalf("re-apply of get's output: %v", err)
	}
	if a := resp.Results[0].Action; a != policyv1.Action_ACTION_UNCHANGED {
		t.Errorf("re-apply of get's output: %v, want unchanged", a)
	}

	// A marker that names no stored key is refused at the key's field.
	other := binding(t, "billing-mtls", "orders", mtlsConfig(t))
	other.GetPolicyBinding().Spec.Config.Fields["certificate"].GetStructValue().Fields["key"] = structpb.NewStringValue("redacted:sha256:00")
	vs := violations(t, func() error { _, err := apply(ctx, s.connect, false, other); return err }())
	if len(vs) != 1 || vs[0].Field != "resources[0].policyBinding.spec.config.certificate.key" {
		t.Errorf("violations %v, want one at the key", vs)
	}
}

func TestRefusedApplyStillReportsWarnings(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ctx := context.Background()
	cfg := mtlsConfig(t)
	cfg["ciphers"] = []any{"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_NOT_A_SUITE"} // weak (warning), unknown (error)
	_, err := apply(ctx, s.connect, false, service("orders", "127.0.0.1:9443"), binding(t, "orders-mtls", "orders", cfg))
	violations(t, err) // the error is there
	var cerr *connect.Error
	errors.As(err, &cerr)
	var warned []string
	for _, d := range cerr.Details() {
		if v, derr := d.Value(); derr == nil {
			if ws, ok := v.(*policyv1.Warnings); ok {
				for _, w := range ws.Warnings {
					warned = append(warned, w.Field)
				}
			}
		}
	}
	if !slices.Contains(warned, "resources[1].policyBinding.spec.config.ciphers[0]") {
		t.Errorf("warnings detail %v lacks the weak cipher", warned)
	}
}
