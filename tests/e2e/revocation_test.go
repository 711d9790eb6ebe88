package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/testca"
	"keyway.dev/tests/harness"
)

// revocationEnv makes the node fetch CRLs at least every 500ms, so that a
// revocation reaches it within half a second.
var revocationEnv = []string{"KEYWAY_REVOCATION_MAX_REFRESH=500ms", "KEYWAY_REVOCATION_MIN_REFRESH=100ms"}

// A client on an open keep-alive connection is served; its CA revokes its
// certificate and publishes a new CRL; once the node has fetched it, the
// next request on the same connection gets 401 revoked, and a new
// connection is refused at the handshake. With the CRL server down, a
// soft-fail host serves the client and a hard-fail host refuses it.
func TestRevokedClientCertificateRefusedOnOpenConnection(t *testing.T) {
	w := newWorldEnv(t, revocationEnv, 1)
	px := w.proxies[0]
	clients := testca.New(t, "e2e client CA")
	pub := clients.Publisher() // the CA's CRL, served by this test on 127.0.0.1
	down := "http://" + harness.FreeAddr(t) + "/ca.crl"
	server := w.upstreamCA.Server("gw.e2e", "soft.e2e", "hard.e2e")
	addr := harness.FreeAddr(t)

	host := func(name, revocation string) string {
		return fmt.Sprintf(`    - hostnames: [%s]
      certificate:
        crt: |
%s        key: |
%s      clientAuth: require-and-verify
      clientCAs: |
%s      revocation:
%s`, name, indentPEM(server.CertPEM, "          "), indentPEM(server.KeyPEM, "          "), indentPEM(clients.CertPEM(), "        "), revocation)
	}
	listener := fmt.Sprintf(`---
apiVersion: keyway.dev/v1alpha1
kind: Listener
metadata:
  name: edge
spec:
  address: %s
  hosts:
%s%s%s`, addr,
		host("gw.e2e", fmt.Sprintf("        mode: hard-fail\n        crl: [%q]\n", pub.CRLURL())),
		host("soft.e2e", fmt.Sprintf("        mode: soft-fail\n        crl: [%q]\n        distributionPoints: false\n", down)),
		host("hard.e2e", fmt.Sprintf("        mode: hard-fail\n        crl: [%q]\n        distributionPoints: false\n", down)))
	m := w.write(t, "revocation.yaml", w.manifest(w.upstreamCA.CertPEM(), w.gateway, "")+listener)
	if out, errOut, code := w.ctl(t, "apply", "-f", m, "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	waitMetric(t, px, `keyway_revocation_crls{state="current"}`, 1)

	alice := clients.Client("alice")
	keep := revocationClient(w.upstreamCA, "gw.e2e", alice, true)
	if code, reason, _ := call(t, keep, addr); code != http.StatusOK {
		t.Fatalf("before the revocation: %d %s", code, reason)
	}

	published := time.Now()
	pub.Revoke(alice.Cert, 1) // keyCompromise
	waitMetric(t, px, "keyway_revocation_crl_revoked_entries", 1)
	seen := time.Since(published)
	code, reason, reused := call(t, keep, addr)
	refused := time.Since(published)
	if code != http.StatusUnauthorized || reason != "revoked" || !reused {
		t.Fatalf("next request on the open connection after the revocation: %d %q (reused %v), want 401 revoked on the same connection", code, reason, reused)
	}
	t.Logf("revocation: the node held the new CRL %v after it was published; the next request was refused %v after", seen.Round(time.Millisecond), refused.Round(time.Millisecond))
	if _, _, _, err := try(revocationClient(w.upstreamCA, "gw.e2e", alice, false), addr); err == nil {
		t.Error("a new connection with the revoked certificate got through")
	}
	if code, _, _ := call(t, revocationClient(w.upstreamCA, "gw.e2e", clients.Client("bob"), true), addr); code != http.StatusOK {
		t.Errorf("a client not revoked: %d", code)
	}

	// The CRL server of soft.e2e and hard.e2e is down.
	bob := clients.Client("bob")
	if code, reason, _ := call(t, revocationClient(w.upstreamCA, "soft.e2e", bob, true), addr); code != http.StatusOK {
		t.Errorf("soft-fail with the CRL server down: %d %s, want 200", code, reason)
	}
	if _, _, _, err := try(revocationClient(w.upstreamCA, "hard.e2e", bob, true), addr); err == nil {
		t.Error("hard-fail with the CRL server down let the client through")
	}
	waitMetric(t, px, `keyway_inbound_handshakes_total{listener="edge",reason="revocation_unknown",result="error"}`, 1)
	waitMetric(t, px, `keyway_inbound_handshakes_total{listener="edge",reason="revoked",result="error"}`, 1)
	waitMetric(t, px, `keyway_revocation_checks_total{mode="soft-fail",phase="handshake",result="unknown"}`, 1)
	waitMetric(t, px, `keyway_revocation_checks_total{mode="hard-fail",phase="request",result="revoked"}`, 1)
	if !strings.Contains(px.Output(), "revocation: fetching CRL failed") || !strings.Contains(px.Output(), down) {
		t.Error("the node's log does not say which CRL it cannot fetch")
	}
}

// revocationClient presents kp to the Listener for sni, trusting ca.
func revocationClient(ca *testca.CA, sni string, kp *testca.KeyPair, keepAlive bool) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: !keepAlive,
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool(), ServerName: sni, Certificates: []tls.Certificate{kp.TLS}},
	}}
}

// try sends GET /orders/x to the Listener at addr: the status, the typed
// reason of a refusal, and whether the request went on an open
// connection.
func try(c *http.Client, addr string) (code int, reason string, reused bool, err error) {
	req, err := http.NewRequest("GET", "https://"+addr+"/orders/x", nil)
	if err != nil {
		return 0, "", false, err
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", reused, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct{ Reason string }
	if resp.StatusCode != http.StatusOK {
		_ = json.Unmarshal(body, &e)
	}
	return resp.StatusCode, e.Reason, reused, nil
}

// call is try that fails the test on a transport error.
func call(t *testing.T, c *http.Client, addr string) (code int, reason string, reused bool) {
	t.Helper()
	code, reason, reused, err := try(c, addr)
	if err != nil {
		t.Fatalf("GET through the Listener: %v", err)
	}
	return code, reason, reused
}

// waitMetric waits until the node's series (name with its labels, as
// /metrics writes them) reaches want: the node fetches CRLs in the
// background, and its metrics are where it says what it holds.
func waitMetric(t *testing.T, px *harness.Proxy, series string, want float64) {
	t.Helper()
	var last string
	deadline := time.Now().Add(15 * time.Second)
	for {
		v, ok := metricValue(t, px, series)
		if ok && v >= want {
			return
		}
		last = fmt.Sprintf("%v (present %v)", v, ok)
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s, want %v within 15s", series, last, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func metricValue(t *testing.T, px *harness.Proxy, series string) (float64, bool) {
	t.Helper()
	resp, err := harness.Operator(t).HTTP.Get(px.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}
