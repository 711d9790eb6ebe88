package node_test

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/revocation"
	"keyway.dev/proxy/internal/forward"
	"keyway.dev/proxy/internal/node"
)

// newUpstreamRevocationEnv is newEnv with a node that refreshes CRLs every
// 200ms at most, so that a test sees a revocation within one refresh.
func newUpstreamRevocationEnv(t *testing.T) *env {
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
	return e
}

// failed is the JSON body of a 502, checked to name reason and the fix.
func failed(t *testing.T, a answer, reason failure.Reason) {
	t.Helper()
	var body forward.ErrorBody
	if err := json.Unmarshal(a.body, &body); err != nil {
		t.Fatalf("%d %s: %v", a.status, a.body, err)
	}
	if a.status != http.StatusBadGateway || body.Reason != reason || body.Fix != reason.Fix() || body.Upstream != "orders" {
		t.Errorf("%d %+v; want 502 %s with its fix", a.status, body, reason)
	}
}

// An upstream whose certificate its CA revoked is refused at the handshake:
// 502 revoked, and the check is counted.
func TestRevokedUpstreamRefused(t *testing.T) {
	t.Parallel()
	e := newUpstreamRevocationEnv(t)
	pub := e.ca.Publisher()
	pub.Revoke(e.server.Cert, int(revocation.KeyCompromise))
	srv := upstreamServer(t, e.server, e.clients, false, nil)
	e.apply(t, "orders", "http1", addr(srv), mtls(e.ca, e.gateway, map[string]any{
		"revocation": map[string]any{"mode": "hard-fail", "crl": []any{pub.CRLURL()}},
	}))
	failed(t, do(t, "GET", e.url("/orders/x")), failure.Revoked)
	if st := e.node.Status(); len(st.Upstreams) != 1 || st.Upstreams[0].Revocation != revocation.HardFail {
		t.Errorf("/status upstreams %+v, want orders with revocation hard-fail", st.Upstreams)
	}
	if n := counterValue(t, e, "keyway_revocation_checks_total", map[string]string{"mode": "hard-fail", "phase": "handshake", "result": "revoked"}); n != 1 {
		t.Errorf("handshake checks that found the upstream revoked: %v, want 1", n)
	}
	if n := counterValue(t, e, "keyway_upstream_handshakes_total", map[string]string{"upstream": "orders", "result": "error", "reason": string(failure.Revoked)}); n < 1 {
		t.Errorf("upstream handshakes failed as revoked: %v, want at least 1", n)
	}
	var logged bool
	for _, rec := range e.logs.lines("upstream request failed") {
		logged = logged || rec["reason"] == string(failure.Revoked) && strings.Contains(rec["detail"].(string), "is revoked (keyCompromise)")
	}
	if !logged {
		t.Error("no log line says which certificate is revoked and why")
	}
}

// A keep-alive connection to an upstream whose certificate is revoked
// while the connection is pooled is not used again once the node holds the
// new CRL: the next request dials, and is refused with 502 revoked. Over
// the direct HTTP/1.1 pool and over h2.
func TestUpstreamRevokedOnPooledConnection(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, protocol string
		h2             bool
	}{
		{"http1", "http1", false},
		{"h2", "h2", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newUpstreamRevocationEnv(t)
			pub := e.ca.Publisher()
			var conns atomic.Int64
			// One handshake per connection, resumed ones included.
			srv := upstreamServer(t, e.server, e.clients, tt.h2, func(c *tls.Config) {
				c.VerifyConnection = func(tls.ConnectionState) error {
					conns.Add(1)
					return nil
				}
			})
			e.apply(t, "orders", tt.protocol, addr(srv), mtls(e.ca, e.gateway, map[string]any{
				"revocation": map[string]any{"mode": "hard-fail", "crl": []any{pub.CRLURL()}},
			}))
			do(t, "GET", e.url("/orders/x")).echo(t)
			// The first fetch is a change of the lists too: once it is
			// installed, nothing changes until the revocation.
			waitGauge(t, e, "keyway_revocation_crls", map[string]string{"state": "current"}, 1)
			for range 2 {
				do(t, "GET", e.url("/orders/x")).echo(t)
			}
			if n := conns.Load(); n > 2 {
				t.Fatalf("%d connections to the upstream for three requests, want the last two on one kept alive", n)
			}

			pub.Revoke(e.server.Cert, int(revocation.KeyCompromise))
			// The next refresh installs the new list; no sleep. The
			// request after it is refused: had it gone over the pooled
			// connection, the upstream would have answered 200. (The
			// refused handshake is not counted above: the node aborts it
			// before the upstream sees the node's certificate.)
			waitGauge(t, e, "keyway_revocation_crl_revoked_entries", nil, 1)
			failed(t, do(t, "GET", e.url("/orders/x")), failure.Revoked)
		})
	}
}

// With the CRL server down and no list ever fetched, hard-fail refuses the
// upstream with 502 revocation_unknown, and soft-fail lets the request
// through and counts the unknown status.
func TestUpstreamRevocationWithCRLServerDown(t *testing.T) {
	t.Parallel()
	e := newUpstreamRevocationEnv(t)
	down := closedCRL(t)
	srv := upstreamServer(t, e.server, e.clients, false, nil)
	e.apply(t, "orders", "http1", addr(srv), mtls(e.ca, e.gateway, map[string]any{
		"revocation": map[string]any{"mode": "hard-fail", "crl": []any{down}},
	}))
	failed(t, do(t, "GET", e.url("/orders/x")), failure.RevocationUnknown)

	e.apply(t, "soft", "http1", addr(srv), mtls(e.ca, e.gateway, map[string]any{
		"revocation": map[string]any{"mode": "soft-fail", "crl": []any{down}},
	}))
	do(t, "GET", e.url("/soft/x")).echo(t)
	if n := counterValue(t, e, "keyway_revocation_checks_total", map[string]string{"mode": "soft-fail", "phase": "handshake", "result": "unknown"}); n != 1 {
		t.Errorf("soft-fail handshake checks with an unknown status: %v, want 1", n)
	}
	if n := counterValue(t, e, "keyway_revocation_checks_total", map[string]string{"mode": "hard-fail", "phase": "handshake", "result": "unknown"}); n < 1 {
		t.Errorf("hard-fail handshake checks with an unknown status: %v, want at least 1", n)
	}
}
