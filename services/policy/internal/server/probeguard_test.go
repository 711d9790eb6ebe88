package server_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/testca"
)

// tcpWitness is a loopback listener that answers nothing and closes every
// connection: a place the probe must not dial, or, when it may, where its
// handshake fails at once.
type tcpWitness struct {
	ln       net.Listener
	accepted chan net.Addr
}

func startWitness(t *testing.T) *tcpWitness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &tcpWitness{ln: ln, accepted: make(chan net.Addr, 1024)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			w.accepted <- c.RemoteAddr()
			c.Close()
		}
	}()
	return w
}

func (w *tcpWitness) addr() string { return w.ln.Addr().String() }

// dialedBefore reports whether anyone but this check connected since the
// witness started (or since the last check): connections are accepted in
// order, so the check's own is the first one only if there was none.
func (w *tcpWitness) dialedBefore(t *testing.T) bool {
	t.Helper()
	c, err := net.Dial("tcp", w.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mine := c.LocalAddr().String()
	before := false
	for a := range w.accepted {
		if a.String() == mine {
			return before
		}
		before = true
	}
	return before
}

// The probe dials the endpoints of the Service a binding targets, and
// nothing else a request names: not another Service of the request, not an
// address hidden in the binding's config.
func TestProbeDialsOnlyTheTargetedService(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ca := testca.New(t, "upstream CA")
	up := mtlsUpstream(t, ca.Server("orders.internal"), ca, 0)
	decoy := startWitness(t)
	ctx := context.Background()
	cfg := map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal"}

	// The upstream wants a client certificate the binding does not give:
	// the probe reaches it, and fails there.
	_, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{DryRun: true, Resources: []*policyv1.Resource{
		service("orders", up), service("decoy", decoy.addr()), binding(t, "orders-tls", "orders", cfg),
	}}))
	got := messages(t, err)
	if !strings.Contains(got, "live probe of Service \"orders\" at "+up) || strings.Contains(got, decoy.addr()) {
		t.Errorf("probe failures name %s only? got\n%s", up, got)
	}
	if decoy.dialedBefore(t) {
		t.Error("the probe dialled a Service no binding of the request targets")
	}

	// An address in the binding's config is no probe target: unknown
	// fields are refused, and nothing is dialled.
	for _, field := range []string{"address", "endpoint", "probeAddress", "target"} {
		c := map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal", field: decoy.addr()}
		_, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{DryRun: true, Resources: []*policyv1.Resource{
			service("orders", up), binding(t, "orders-tls", "orders", c),
		}}))
		if got := messages(t, err); !strings.Contains(got, "resources[1].policyBinding.spec.config."+field) {
			t.Errorf("config.%s: got\n%s", field, got)
		}
	}
	if decoy.dialedBefore(t) {
		t.Error("the probe dialled an address given in the binding's config")
	}
}

// Only Apply probes, and only when asked for (dry runs by default): no
// other RPC, and no plain apply, dials an upstream.
func TestOnlyApplyProbes(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ca := testca.New(t, "upstream CA")
	up := startWitness(t)
	ctx := context.Background()
	cfg := map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal"}
	rs := []*policyv1.Resource{service("orders", up.addr()), route("orders", "/orders/", "orders"), binding(t, "orders-tls", "orders", cfg)}
	if _, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: rs})); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"Get": func() error {
			_, err := s.connect.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "PolicyBinding", Name: "orders-tls"}))
			return err
		},
		"List": func() error { _, err := s.connect.List(ctx, connect.NewRequest(&policyv1.ListRequest{})); return err },
		"ListNodes": func() error {
			_, err := s.connect.ListNodes(ctx, connect.NewRequest(&policyv1.ListNodesRequest{}))
			return err
		},
		"GetRollout": func() error {
			_, err := s.connect.GetRollout(ctx, connect.NewRequest(&policyv1.GetRolloutRequest{}))
			return err
		},
		"WatchRollout": func() error {
			st, err := s.connect.WatchRollout(ctx, connect.NewRequest(&policyv1.WatchRolloutRequest{Timeout: durationpb.New(50 * time.Millisecond)}))
			if err != nil {
				return err
			}
			for st.Receive() {
			}
			return st.Err()
		},
		"Apply (no dry run, probe unset)": func() error {
			_, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: rs}))
			return err
		},
		"Apply (dry run, probe off)": func() error {
			_, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: rs, DryRun: true, Probe: policyv1.ProbeMode_PROBE_MODE_OFF}))
			return err
		},
		"Delete": func() error {
			_, err := s.connect.Delete(ctx, connect.NewRequest(&policyv1.DeleteRequest{Kind: "Route", Name: "orders"}))
			return err
		},
	}
	for name, call := range calls {
		if err := call(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if up.dialedBefore(t) {
			t.Errorf("%s dialled the upstream", name)
		}
	}
	// The witness sees a probe when there is one.
	_, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: rs[:1], DryRun: true, Probe: policyv1.ProbeMode_PROBE_MODE_ON}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{rs[2]}, DryRun: true})); err == nil {
		t.Error("a dry run probing a closed endpoint succeeded")
	}
	if !up.dialedBefore(t) {
		t.Error("the witness saw no probe from a dry run; it cannot tell")
	}
}

// A caller spends a budget of handshakes; over it, the probe is refused
// with ResourceExhausted, why, and when to retry, and nothing is dialled.
func TestProbeIsRateLimited(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ca := testca.New(t, "upstream CA")
	ctx := context.Background()
	cfg := map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal"}
	var witnesses []*tcpWitness
	var endpoints []string
	for range 51 {
		w := startWitness(t)
		witnesses = append(witnesses, w)
		endpoints = append(endpoints, w.addr())
	}
	validate := func(eps []string) error {
		svc := service("orders", "")
		svc.GetService().Spec = &policyv1.ServiceSpec{Endpoints: eps}
		_, err := s.connect.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{DryRun: true, Resources: []*policyv1.Resource{svc, binding(t, "orders-tls", "orders", cfg)}}))
		return err
	}

	// More endpoints than a caller may probe at once: refused outright.
	err := validate(endpoints)
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "51 endpoints") || !strings.Contains(err.Error(), "at most 50 at once") {
		t.Fatalf("51 endpoints: %v, want ResourceExhausted naming the limit", err)
	}
	for i, w := range witnesses {
		if w.dialedBefore(t) {
			t.Fatalf("endpoint %d dialled by a refused probe", i)
		}
	}

	// 45 handshakes pass (each fails: nothing speaks TLS there); 45 more
	// at once exceed the budget.
	if err := validate(endpoints[:45]); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("first probe: %v, want the probe's failures", err)
	}
	for _, w := range witnesses[:45] {
		w.dialedBefore(t)
	}
	err = validate(endpoints[:45])
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeResourceExhausted {
		t.Fatalf("second probe: %v, want ResourceExhausted", err)
	}
	if !strings.Contains(cerr.Message(), "has probed too often") || !strings.Contains(cerr.Message(), "retry in") {
		t.Errorf("refusal %q does not say why and when to retry", cerr.Message())
	}
	var retry *errdetails.RetryInfo
	for _, d := range cerr.Details() {
		if v, derr := d.Value(); derr == nil {
			if ri, ok := v.(*errdetails.RetryInfo); ok {
				retry = ri
			}
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("refusal carries no RetryInfo: %v", cerr.Details())
	}
	for i, w := range witnesses[:45] {
		if w.dialedBefore(t) {
			t.Fatalf("endpoint %d dialled by a refused probe", i)
		}
	}
}
