package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/testca"
	"keyway.dev/policy/internal/app"
)

// applyProbing is an Apply with the live probe on, as keywayctl sends it
// by default.
func applyProbing(s *stack, dryRun bool, rs ...*policyv1.Resource) (*policyv1.ApplyResponse, error) {
	resp, err := s.connect.Apply(context.Background(), connect.NewRequest(&policyv1.ApplyRequest{Resources: rs, DryRun: dryRun, Probe: policyv1.ProbeMode_PROBE_MODE_ON}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// closedPort is a loopback address nothing listens on: a listener's, closed.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// serviceAt is a Service with endpoints.
func serviceAt(name string, endpoints ...string) *policyv1.Resource {
	r := service(name, "")
	r.GetService().Spec = &policyv1.ServiceSpec{Endpoints: endpoints}
	return r
}

// stored says whether a resource is stored, failing on any answer but
// found or NotFound.
func stored(t *testing.T, s *stack, kind, name string) bool {
	t.Helper()
	_, err := s.connect.Get(context.Background(), connect.NewRequest(&policyv1.GetRequest{Kind: kind, Name: name}))
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("get %s %s: %v", kind, name, err)
	}
	return err == nil
}

// warningsOf returns the Warnings detail of a refused apply.
func warningsOf(err error) []*policyv1.Warning {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return nil
	}
	for _, d := range cerr.Details() {
		if v, derr := d.Value(); derr == nil {
			if ws, ok := v.(*policyv1.Warnings); ok {
				return ws.GetWarnings()
			}
		}
	}
	return nil
}

// nginxLikeUpstream completes every TLS handshake, asking for a client
// certificate without requiring one, and refuses at the HTTP layer as nginx
// does with `ssl_verify_client on`: 400 "No required SSL certificate was
// sent" without one, 400 "The SSL certificate error" with one clientCA did
// not issue.
func nginxLikeUpstream(t *testing.T, cert *testca.KeyPair, clientCA *testca.CA) string {
	t.Helper()
	page := func(w http.ResponseWriter, title string) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "<html>\r\n<head><title>"+title+"</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>"+title[4:]+"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		certs := r.TLS.PeerCertificates
		if len(certs) == 0 {
			page(w, "400 No required SSL certificate was sent")
			return
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: clientCA.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			page(w, "400 The SSL certificate error")
			return
		}
		io.WriteString(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.TLS}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// An upstream that answers and refuses the binding's context refuses the
// apply, with the typed reason and the fix, and nothing of the request is
// stored.
func TestProbeRefusalStoresNothing(t *testing.T) {
	t.Parallel()
	s := startStack(t, withKeyStore(t))
	ca := testca.New(t, "upstream CA")
	other := testca.New(t, "partner CA") // the upstreams trust client certificates from this CA only
	gateway := ca.Client("keyway-gateway")
	cfg := map[string]any{
		"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal",
		"certificate": map[string]any{"key": string(gateway.KeyPEM), "crt": string(gateway.CertPEM)},
	}
	for _, tc := range []struct {
		name, addr string
		want       []string
	}{
		{"TLS 1.3 upstream refuses the client certificate", mtlsUpstream(t, ca.Server("orders.internal"), other, 0),
			[]string{"client_certificate_rejected", "make the upstream trust the CA that issued the binding's client certificate"}},
		{"TLS 1.2 upstream refuses the client certificate", mtlsUpstream(t, ca.Server("orders.internal"), other, tls.VersionTLS12),
			[]string{"client_certificate_rejected"}},
		{"nginx answers 400 The SSL certificate error", nginxLikeUpstream(t, ca.Server("orders.internal"), other),
			[]string{"client_certificate_rejected", `400 "400 The SSL certificate error"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := applyProbing(s, false, service("orders", tc.addr), binding(t, "orders-mtls", "orders", cfg))
			vs := violations(t, err)
			if len(vs) != 1 || vs[0].Field != "resources[1].policyBinding.spec.config" {
				t.Fatalf("violations %v, want one at the binding's config", vs)
			}
			for _, w := range append(tc.want, "live probe of Service \"orders\" at "+tc.addr, "fix: ") {
				if !strings.Contains(vs[0].Description, w) {
					t.Errorf("violation %q lacks %q", vs[0].Description, w)
				}
			}
			if stored(t, s, "Service", "orders") || stored(t, s, "PolicyBinding", "orders-mtls") {
				t.Error("a refused apply stored a resource")
			}
		})
	}

	// The nginx page for no client certificate at all.
	noCert := map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal"}
	_, err := applyProbing(s, false, service("orders", nginxLikeUpstream(t, ca.Server("orders.internal"), other)), binding(t, "orders-mtls", "orders", noCert))
	if vs := violations(t, err); len(vs) != 1 || !strings.Contains(vs[0].Description, "no_client_certificate") || !strings.Contains(vs[0].Description, "No required SSL certificate was sent") {
		t.Errorf("nginx refusing a missing certificate: %v", vs)
	}
	if stored(t, s, "Service", "orders") {
		t.Error("a refused apply stored the Service")
	}
}

// An endpoint the policy service cannot reach is a warning: the apply is
// stored, and the probe result says the endpoint was not reached.
func TestProbeUnreachableIsAWarning(t *testing.T) {
	t.Parallel()
	s := startStack(t, func(c *app.Config) { c.ProbeTimeout = 2 * time.Second })
	ca := testca.New(t, "upstream CA")
	cfg := map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal"}
	closed := closedPort(t)

	for _, dryRun := range []bool{true, false} {
		resp, err := applyProbing(s, dryRun, serviceAt("orders", closed, "orders.invalid:443"), binding(t, "orders-tls", "orders", cfg))
		if err != nil {
			t.Fatalf("dry run %t: apply of unreachable endpoints: %v, want it stored with warnings", dryRun, err)
		}
		probes := resp.Results[1].GetProbes()
		if len(probes) != 2 {
			t.Fatalf("dry run %t: %d probe results, want 2", dryRun, len(probes))
		}
		for _, p := range probes {
			if p.GetOk() || p.GetReachable() {
				t.Errorf("dry run %t: probe of %s: ok %t, reachable %t; want neither", dryRun, p.GetEndpoint(), p.GetOk(), p.GetReachable())
			}
		}
		if probes[0].GetReason() != "connection_refused" {
			t.Errorf("dry run %t: probe of the closed port: %s, want connection_refused", dryRun, probes[0].GetReason())
		}
		if r := probes[1].GetReason(); r != "dns_failure" && r != "dial_timeout" {
			t.Errorf("dry run %t: probe of a name that does not resolve: %s, want dns_failure (or dial_timeout without a resolver)", dryRun, r)
		}
		var warned []string
		for _, w := range resp.Results[1].GetWarnings() {
			if strings.Contains(w.GetMessage(), "could not reach") {
				warned = append(warned, w.GetMessage())
				if w.GetField() != "resources[1].policyBinding.spec.config" {
					t.Errorf("warning at %q, want the binding's config", w.GetField())
				}
			}
		}
		if len(warned) != 2 || !strings.Contains(warned[0], closed) || !strings.Contains(warned[0], "connection_refused") || !strings.Contains(warned[0], "start the upstream or fix the Service's address/endpoints") {
			t.Errorf("dry run %t: warnings %q, want one per endpoint naming it, the reason and the fix", dryRun, warned)
		}
	}
	if !stored(t, s, "PolicyBinding", "orders-tls") || !stored(t, s, "Service", "orders") {
		t.Error("an apply whose endpoints could not be reached was not stored")
	}
}

// One endpoint unreachable and one refusing: the apply is refused for the
// refusal only, and the unreachable endpoint comes back as a warning.
func TestProbeRefusalBesideUnreachable(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	ca := testca.New(t, "upstream CA")
	refusing := mtlsUpstream(t, ca.Server("orders.internal"), ca, 0) // wants a client certificate; the binding has none
	closed := closedPort(t)
	cfg := map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal"}
	_, err := applyProbing(s, false, serviceAt("orders", closed, refusing), binding(t, "orders-tls", "orders", cfg))
	vs := violations(t, err)
	if len(vs) != 1 || !strings.Contains(vs[0].Description, refusing) || !strings.Contains(vs[0].Description, "no_client_certificate") {
		t.Errorf("violations %v, want one: %s no_client_certificate", vs, refusing)
	}
	ws := warningsOf(err)
	if len(ws) != 1 || !strings.Contains(ws[0].GetMessage(), closed) || !strings.Contains(ws[0].GetMessage(), "could not reach") {
		t.Errorf("warnings %v, want one for %s", ws, closed)
	}
	if stored(t, s, "Service", "orders") {
		t.Error("a refused apply stored the Service")
	}
}

// holdListener accepts connections and never answers; each accepted
// connection is announced on accepted.
func holdListener(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 16)
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			go func() {
				<-done
				c.Close()
			}()
		}
	}()
	return ln.Addr().String(), accepted
}

// The probe is bounded by the per-endpoint timeout, and runs outside the
// write lock: an apply whose upstream never completes the handshake is
// refused after the timeout, and other applies are stored meanwhile.
func TestProbeIsBoundedAndDoesNotBlockOtherApplies(t *testing.T) {
	t.Parallel()
	const timeout = 3 * time.Second
	s := startStack(t, func(c *app.Config) { c.ProbeTimeout, c.ProbeDeadline = timeout, 2*timeout })
	ca := testca.New(t, "upstream CA")
	silent, accepted := holdListener(t)
	cfg := map[string]any{"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal"}

	type result struct {
		err     error
		elapsed time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		_, err := applyProbing(s, false, service("orders", silent), binding(t, "orders-tls", "orders", cfg))
		done <- result{err, time.Since(start)}
	}()
	select {
	case <-accepted:
	case r := <-done:
		t.Fatalf("the apply ended before its probe connected: %v", r.err)
	}
	if _, err := applyProbing(s, false, service("billing", closedPort(t))); err != nil {
		t.Fatalf("another apply during the probe: %v", err)
	}
	select {
	case r := <-done:
		t.Fatalf("the probing apply ended (%v) before the other apply, after %s: was the other one waiting for it?", r.err, r.elapsed)
	default:
	}
	r := <-done
	vs := violations(t, r.err)
	if len(vs) != 1 || !strings.Contains(vs[0].Description, "handshake_timeout") || !strings.Contains(vs[0].Description, "the live probe gives each endpoint 3s") {
		t.Errorf("violations %v, want handshake_timeout naming the bound", vs)
	}
	if r.elapsed < timeout || r.elapsed > 2*timeout {
		t.Errorf("the probe took %s, want about the %s timeout", r.elapsed, timeout)
	}
	if stored(t, s, "Service", "orders") || !stored(t, s, "Service", "billing") {
		t.Error("want billing stored and orders not")
	}
}

// gate forwards each connection to upstream once the test lets it: the
// probe waits there while the test writes.
type gate struct {
	addr     string
	arrived  chan struct{}
	let      chan struct{}
	upstream string
}

func startGate(t *testing.T, upstream string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	g := &gate{addr: ln.Addr().String(), arrived: make(chan struct{}, 16), let: make(chan struct{}), upstream: upstream}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.arrived <- struct{}{}
			go func() {
				defer c.Close()
				<-g.let
				u, err := net.Dial("tcp", g.upstream)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
	return g
}

// What the probe checked is checked again before the write: a write to
// something else while the probe ran does not matter; a change of the
// probed Service's endpoints aborts the apply, storing nothing.
func TestProbeTargetChangedMeanwhile(t *testing.T) {
	t.Parallel()
	s := startStack(t, withKeyStore(t))
	ca := testca.New(t, "upstream CA")
	gateway := ca.Client("keyway-gateway")
	up := mtlsUpstream(t, ca.Server("orders.internal"), ca, 0)
	g := startGate(t, up)
	cfg := map[string]any{
		"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal",
		"certificate": map[string]any{"key": string(gateway.KeyPEM), "crt": string(gateway.CertPEM)},
	}
	if _, err := applyProbing(s, false, service("orders", g.addr)); err != nil {
		t.Fatal(err)
	}
	probeWhile := func(write func()) error {
		done := make(chan error, 1)
		go func() {
			_, err := applyProbing(s, false, binding(t, "orders-mtls", "orders", cfg))
			done <- err
		}()
		select {
		case <-g.arrived:
		case err := <-done:
			t.Fatalf("the apply ended before its probe connected: %v", err)
		}
		write()
		g.let <- struct{}{}
		return <-done
	}

	err := probeWhile(func() {
		if _, err := applyProbing(s, false, service("billing", closedPort(t))); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatalf("apply with an unrelated write during its probe: %v", err)
	}
	if !stored(t, s, "PolicyBinding", "orders-mtls") {
		t.Fatal("binding not stored")
	}

	err = probeWhile(func() {
		if _, err := applyProbing(s, false, serviceAt("orders", g.addr, closedPort(t))); err != nil {
			t.Fatal(err)
		}
	})
	if connect.CodeOf(err) != connect.CodeAborted || !strings.Contains(err.Error(), `Service "orders" changed while the live probe ran`) {
		t.Fatalf("apply whose Service changed during its probe: %v, want Aborted naming it", err)
	}
}

// Applies probe by default, and pipelines apply the same configuration
// again and again: re-probing endpoints that answered is free, so many more
// applies than the handshake budget allows in a row all go through.
func TestReapplyingDoesNotRunOutOfProbes(t *testing.T) {
	t.Parallel()
	s := startStack(t, withKeyStore(t))
	ca := testca.New(t, "upstream CA")
	gateway := ca.Client("keyway-gateway")
	a := mtlsUpstream(t, ca.Server("orders.internal"), ca, 0)
	b := mtlsUpstream(t, ca.Server("orders.internal"), ca, tls.VersionTLS12)
	cfg := map[string]any{
		"skipValidation": false, "trustedCA": string(ca.CertPEM()), "sni": "orders.internal",
		"certificate": map[string]any{"key": string(gateway.KeyPEM), "crt": string(gateway.CertPEM)},
	}
	rs := []*policyv1.Resource{serviceAt("orders", a, b), binding(t, "orders-mtls", "orders", cfg)}
	// 2 endpoints each: 120 handshakes, where the budget is 50 at once and
	// 10 a second.
	const applies = 60
	start := time.Now()
	for i := range applies {
		resp, err := applyProbing(s, i%2 == 1, rs...)
		if err != nil {
			t.Fatalf("apply %d of %d after %s: %v", i+1, applies, time.Since(start), err)
		}
		for _, p := range resp.Results[1].GetProbes() {
			if !p.GetOk() {
				t.Fatalf("apply %d: probe of %s: %s %s", i+1, p.GetEndpoint(), p.GetReason(), p.GetDetail())
			}
		}
	}
	t.Logf("%d probing applies (every other one a dry run), 2 endpoints each, in %s", applies, time.Since(start).Round(time.Millisecond))
}
