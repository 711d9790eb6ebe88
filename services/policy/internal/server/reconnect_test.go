package server_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/access"
	"keyway.dev/internal/natstest"
	"keyway.dev/internal/testwait"
	"keyway.dev/policy/internal/app"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestReconnectsAfterServerClosesConnection makes the NATS server close the
// policy service's connection with a protocol error, which nats.go does not
// reconnect from (a 4,100-character name did it with "maximum control line
// exceeded"; names are bounded now, so the server's max_payload is lowered
// under the connection's feet instead, and the next write gets "maximum
// payload violation"), and checks that the service connects anew: health
// returns to SERVING and applies work.
func TestReconnectsAfterServerClosesConnection(t *testing.T) {
	ns := natstest.Start(t)
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Config{Listen: "127.0.0.1:0", NATSURL: ns.URL, Access: access.Options{InsecureNoAuth: true}, OnListen: func(a net.Addr) { addrc <- a },
			Log: slog.New(slog.NewTextHandler(logs, nil))})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("policy service: %v", err)
		}
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		done <- nil
		t.Fatalf("policy service did not start: %v\n%s", err, logs.String())
	}
	c := policyv1connect.NewPolicyServiceClient(http.DefaultClient, "http://"+addr.String())
	cc, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	health := func() healthpb.HealthCheckResponse_ServingStatus {
		r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: policyv1connect.PolicyServiceName})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetStatus()
	}
	if s := health(); s != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health at start: %v", s)
	}
	// The server's limit drops below what the connection was told at
	// connect time; the next larger write is a protocol violation.
	ns.Reload(func(o *natsserver.Options) { o.MaxPayload = 2048 })
	endpoints := make([]string, 64)
	for i := range endpoints {
		endpoints[i] = fmt.Sprintf("endpoint-%02d.orders.internal:9443", i)
	}
	big := service("big", "")
	big.GetService().Spec.Address, big.GetService().Spec.Endpoints = "", endpoints
	if _, err := apply(ctx, c, false, big); err == nil {
		t.Fatal("a write over the server's new max_payload was stored")
	}
	testwait.Until(t, 30*time.Second, "the NATS connection to be closed by the server and replaced", func() bool {
		return strings.Contains(logs.String(), "nats connection replaced")
	})
	if !strings.Contains(strings.ToLower(logs.String()), "maximum payload") {
		t.Errorf("the connection was replaced, but not after the protocol error")
	}
	testwait.Until(t, 30*time.Second, "health to say SERVING again", func() bool { return health() == healthpb.HealthCheckResponse_SERVING })
	if _, err := apply(ctx, c, false, service("after", "after.internal:443")); err != nil {
		t.Fatalf("apply after the new connection: %v", err)
	}
}
