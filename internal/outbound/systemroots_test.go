package outbound_test

import (
	"context"
	"strings"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/outbound"
	"keyway.dev/internal/testca"
)

// TestSystemRootsDefault: an https:// Service that no binding targets is
// reached over TLS verified against the system's trusted roots, so an
// upstream whose CA is only the test's own is refused as unknown_authority,
// with a fix that says where the roots came from; never reached in plain
// HTTP, never unverified. (That the pool is the system's, SSL_CERT_FILE
// included, is shown through the real binaries in tests/e2e.)
func TestSystemRootsDefault(t *testing.T) {
	ca := testca.New(t, "a CA in no system bundle")
	addr := testca.ServeTLS(t, ca.Server("localhost"))
	objs, rep := model.Validate([]*policyv1.Resource{{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
		ApiVersion: model.APIVersion, Kind: model.KindService, Metadata: &policyv1.ObjectMeta{Name: "backend"},
		Spec: &policyv1.ServiceSpec{Address: "https://localhost:" + strings.Split(addr, ":")[1]},
	}}}}, nil, time.Now())
	if !rep.OK() {
		t.Fatal(rep.Errors)
	}
	tlsCtx := objs[0].Service.DefaultTLS
	if tlsCtx == nil || !tlsCtx.SystemRoots {
		t.Fatalf("DefaultTLS = %+v, want the system roots", tlsCtx)
	}
	d, err := outbound.NewDialer("backend", tlsCtx, outbound.Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn, _, herr := d.Handshake(context.Background(), "tcp", addr)
	if herr == nil {
		conn.Close()
		t.Fatal("handshake with an upstream of an unknown CA succeeded")
	}
	if herr.Reason != failure.UnknownAuthority || !strings.Contains(herr.Detail, "system trusted roots") || !strings.Contains(herr.Detail, "trustedCA") {
		t.Fatalf("reason %s (%s), want unknown_authority naming the system roots and trustedCA", herr.Reason, herr.Detail)
	}
}
