package node_test

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/forward"
	"keyway.dev/proxy/internal/node"
)

// newRevocationEnv is newMTLSEnv with a node that refreshes CRLs every
// 200ms at most, so that a test sees a revocation within one refresh.
func newRevocationEnv(t *testing.T, hosts func(servers *testca.CA) []*policyv1.ListenerHost) *mtlsEnv {
	t.Helper()
	e := newEnv(t, func(c *node.Config) {
		c.RevocationMaxRefresh, c.RevocationMinRefresh = 200*time.Millisecond, 50*time.Millisecond
	})
	t.Cleanup(func() {
		if t.Failed() {
			e.logs.mu.Lock()
			defer e.logs.mu.Unlock()
			t.Log(e.logs.buf.String())
		}
	})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string][]string{"xfcc": r.Header.Values(forward.HeaderXFCC)})
	}))
	t.Cleanup(backend.Close)
	put(t, e.kv, service("app", "http1", backend.Listener.Addr().String()))
	put(t, e.kv, route("public", "/public/", "app"))
	m := &mtlsEnv{env: e, servers: testca.New(t, "server CA")}
	m.apply(t, hosts(m.servers))
	if m.addr = e.node.ListenerAddr("public"); m.addr == "" {
		t.Fatal("listener public is not served")
	}
	return m
}

// waitGauge waits until the gauge name (no labels) reaches want: the node
// fetches in the background, and the metric is how it says what it holds.
func waitGauge(t *testing.T, e *env, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ms := series(scrape(t, e), name, labels)
		if len(ms) == 1 && ms[0].GetGauge().GetValue() == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v: %v, want %v", name, labels, ms, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func counterValue(t *testing.T, e *env, name string, labels map[string]string) float64 {
	t.Helper()
	ms := series(scrape(t, e), name, labels)
	if len(ms) != 1 {
		return 0
	}
	return ms[0].GetCounter().GetValue()
}

// A client certificate revoked while its connection is open is refused at
// the next request on that connection, with 401 revoked; a new connection
// with it is refused at the handshake; other clients go on.
func TestRevokedClientRefusedOnOpenConnection(t *testing.T) {
	t.Parallel()
	clients := testca.New(t, "client CA")
	pub := clients.Publisher()
	alice, bob := clients.Client("alice"), clients.Client("bob")
	m := newRevocationEnv(t, func(servers *testca.CA) []*policyv1.ListenerHost {
		h := listenerHost(servers.Server("test.com"), "require-and-verify", []*testca.CA{clients}, "test.com")
		h.Revocation = &policyv1.Revocation{Mode: "hard-fail", Crl: []string{pub.CRLURL()}}
		return []*policyv1.ListenerHost{h}
	})
	url := "https://" + m.addr + "/public/x"
	keep := m.tlsClient("test.com", alice, true, nil)
	if rep, err := call(t, keep, url, nil); err != nil || rep.status != 200 || len(rep.xfcc) != 1 {
		t.Fatalf("before the revocation: %v %+v", err, rep)
	}
	waitGauge(t, m.env, "keyway_revocation_crls", map[string]string{"state": "current"}, 1)

	pub.Revoke(alice.Cert, int(revocation.KeyCompromise))
	waitGauge(t, m.env, "keyway_revocation_crl_revoked_entries", nil, 1)

	rep, err := call(t, keep, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.reused || rep.status != 401 || rep.body.Reason != failure.Revoked || rep.body.Error != "certificate revoked" || !strings.Contains(rep.body.Fix, "new certificate") {
		t.Errorf("open connection after the revocation: reused %v, %d %+v; want 401 %s", rep.reused, rep.status, rep.body, failure.Revoked)
	}
	if _, err := call(t, m.tlsClient("test.com", alice, false, nil), url, nil); err == nil {
		t.Error("a new connection with the revoked certificate got through")
	}
	waitHandshakes(t, m.env, failure.Revoked, 1)
	if rep, err := call(t, m.tlsClient("test.com", bob, true, nil), url, nil); err != nil || rep.status != 200 {
		t.Errorf("a client not revoked: %v %+v", err, rep)
	}
	if n := counterValue(t, m.env, "keyway_revocation_checks_total", map[string]string{"mode": "hard-fail", "phase": "request", "result": "revoked"}); n != 1 {
		t.Errorf("request checks that found the certificate revoked: %v, want 1", n)
	}
	var refused int
	for _, rec := range m.logs.lines("client refused") {
		if rec["reason"] == string(failure.Revoked) {
			refused++
		}
	}
	if refused != 1 {
		t.Errorf("%d log lines for the refused request, want 1", refused)
	}
}

// With the CRL server down and no list ever fetched, soft-fail allows the
// client (and counts the unknown status) and hard-fail refuses it at the
// handshake with revocation_unknown.
func TestRevocationWithCRLServerDown(t *testing.T) {
	t.Parallel()
	clients := testca.New(t, "client CA")
	down := closedCRL(t)
	m := newRevocationEnv(t, func(servers *testca.CA) []*policyv1.ListenerHost {
		soft := listenerHost(servers.Server("soft.test"), "require-and-verify", []*testca.CA{clients}, "soft.test")
		soft.Revocation = &policyv1.Revocation{Mode: "soft-fail", Crl: []string{down}}
		hard := listenerHost(servers.Server("hard.test"), "require-and-verify", []*testca.CA{clients}, "hard.test")
		hard.Revocation = &policyv1.Revocation{Mode: "hard-fail", Crl: []string{down}}
		return []*policyv1.ListenerHost{soft, hard}
	})
	alice := clients.Client("alice")
	if rep, err := call(t, m.tlsClient("soft.test", alice, true, nil), "https://"+m.addr+"/public/x", nil); err != nil || rep.status != 200 {
		t.Fatalf("soft-fail with the CRL server down: %v %+v", err, rep)
	}
	if n := counterValue(t, m.env, "keyway_revocation_checks_total", map[string]string{"mode": "soft-fail", "phase": "handshake", "result": "unknown"}); n != 1 {
		t.Errorf("soft-fail handshake checks with an unknown status: %v, want 1", n)
	}
	if _, err := call(t, m.tlsClient("hard.test", alice, true, nil), "https://"+m.addr+"/public/x", nil); err == nil {
		t.Fatal("hard-fail with the CRL server down let the client through")
	}
	waitHandshakes(t, m.env, failure.RevocationUnknown, 1)
	waitGauge(t, m.env, "keyway_revocation_crls", map[string]string{"state": "missing"}, 1)
	var logged bool
	for _, rec := range m.logs.lines("revocation: fetching CRL failed") {
		logged = logged || rec["crl"] == down && strings.Contains(rec["error"].(string), "refused")
	}
	if !logged {
		t.Error("no log line names the CRL and why its fetch failed")
	}
}

// closedCRL is the URL of a CRL on a port that refuses connections.
func closedCRL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String() + "/ca.crl"
}

// A CRL that goes stale (its nextUpdate passes, and the CA publishes no
// newer one) leaves a hard-fail host without a current list: the next
// request on an open connection is refused with revocation_unknown, even
// though the connection's last check found the certificate good.
func TestStaleCRLRefusesOpenConnectionInHardFail(t *testing.T) {
	t.Parallel()
	clients := testca.New(t, "client CA")
	pub := clients.Publisher()
	pub.SetValidity(3 * time.Second)
	pub.Publish()
	nextUpdate := time.Now().Add(3 * time.Second)
	alice := clients.Client("alice")
	m := newRevocationEnv(t, func(servers *testca.CA) []*policyv1.ListenerHost {
		h := listenerHost(servers.Server("test.com"), "require-and-verify", []*testca.CA{clients}, "test.com")
		h.Revocation = &policyv1.Revocation{Mode: "hard-fail", Crl: []string{pub.CRLURL()}}
		return []*policyv1.ListenerHost{h}
	})
	url := "https://" + m.addr + "/public/x"
	keep := m.tlsClient("test.com", alice, true, nil)
	for range 2 { // the second request uses the connection's last judgement
		if rep, err := call(t, keep, url, nil); err != nil || rep.status != 200 {
			t.Fatalf("with a current CRL: %v %+v", err, rep)
		}
	}
	stale := time.NewTimer(time.Until(nextUpdate.Add(time.Second)))
	<-stale.C
	rep, err := call(t, keep, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.reused || rep.status != 401 || rep.body.Reason != failure.RevocationUnknown {
		t.Errorf("open connection once the CRL is stale: reused %v, %d %+v; want 401 %s", rep.reused, rep.status, rep.body, failure.RevocationUnknown)
	}
}
