package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/telemetry"
	"keyway.dev/tests/harness"
)

// An apply and the node rebuild it causes are one trace across three
// processes: keywayctl, keyway-policy and keyway-proxy export to a real
// OTLP/gRPC receiver, configured by the standard OTEL_* variables only.
func TestApplyAndNodeRebuildAreOneTrace(t *testing.T) {
	collector := harness.StartCollector(t)
	env := []string{
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.Endpoint,
		"OTEL_TRACES_SAMPLER=always_on",
		// Export within a tenth of a second rather than five.
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_SERVICE_NAME=", // each process names itself
	}
	w := newWorldEnv(t, env, 1)
	good := w.write(t, "good.yaml", w.manifest(w.upstreamCA.CertPEM(), w.gateway, ""))
	// keywayctl too, so that the trace starts at the command.
	if stdout, stderr, code := harness.RunEnv(t, harness.Bin(t, "keywayctl"), append(env, harness.Operator(t).Env...), "--server", w.policyURL, "apply", "-f", good); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, stdout, stderr)
	}
	px := w.proxies[0]
	eventually(t, "the node serves the binding", func() (bool, string) {
		code, body := get(t, px.URL+"/orders/42")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})

	const applyRPC = telemetry.SpanPolicyApply
	var rpc harness.Span
	// A node may apply the three keys in more than one batch (one
	// node.apply span each), exported at different times: wait for all.
	keys := []string{"service.orders", "route.orders", "policybinding.orders-mtls"}
	spans := collector.Wait(t, "the Apply span, and node.apply spans in its trace covering every key", 60*time.Second, func(spans []harness.Span) bool {
		i := slices.IndexFunc(spans, func(s harness.Span) bool { return s.Name == applyRPC })
		if i < 0 {
			return false
		}
		rpc = spans[i]
		var covered string
		for _, s := range spans {
			if s.Name == telemetry.SpanNodeApply && s.TraceID() == rpc.TraceID() {
				covered += " " + s.Attr("keyway.config.keys")
			}
		}
		return !slices.ContainsFunc(keys, func(k string) bool { return !strings.Contains(covered, k) })
	})
	if rpc.Service != "keyway-policy" {
		t.Errorf("Apply span from service %q, want keyway-policy", rpc.Service)
	}
	byID := map[string]harness.Span{}
	for _, s := range spans {
		if s.TraceID() == rpc.TraceID() {
			byID[s.SpanID()] = s
		}
	}
	// Every node.apply of the trace descends, through the store's write
	// and put spans, from the Apply RPC.
	var applied []string
	for _, s := range byID {
		if s.Name != telemetry.SpanNodeApply {
			continue
		}
		if s.Service != "keyway-proxy" {
			t.Errorf("node.apply from service %q, want keyway-proxy", s.Service)
		}
		var path []string
		for p := s; ; {
			path = append(path, p.Name+"@"+p.Service)
			parent, ok := byID[p.ParentID()]
			if !ok {
				break
			}
			p = parent
		}
		want := []string{
			telemetry.SpanNodeApply + "@keyway-proxy", telemetry.SpanStorePut + "@keyway-policy",
			telemetry.SpanStoreWrite + "@keyway-policy", applyRPC + "@keyway-policy", "keywayctl apply@keywayctl",
		}
		if !slices.Equal(path, want) {
			t.Errorf("node.apply's ancestry %v, want %v", path, want)
		}
		if s.Attr("keyway.config.revision") == "" || s.Attr("keyway.config.keys") == "" {
			t.Errorf("node.apply attributes %v", s.Attributes)
		}
		applied = append(applied, s.Attr("keyway.config.keys"))
	}
	if len(applied) == 0 {
		t.Fatalf("no node.apply in trace %s", rpc.TraceID())
	}
	for _, key := range keys {
		if !strings.Contains(strings.Join(applied, " "), key) {
			t.Errorf("no node.apply of the trace covers %s (%v)", key, applied)
		}
	}

	// The request through the node: its span and the outbound handshake.
	collector.Wait(t, "the request's spans", 60*time.Second, func(spans []harness.Span) bool {
		var req, hs bool
		for _, s := range spans {
			req = req || s.Name == telemetry.SpanRequest && s.Attr("keyway.route") == "orders" && s.Attr("http.response.status_code") == "200"
			// The node's handshake (the apply's live probe makes one too, in keyway-policy).
			hs = hs || s.Name == telemetry.SpanOutboundHandshake && s.Service == "keyway-proxy" && s.Attr("tls.server.hash.sha256") != "" && s.Attr("keyway.upstream") == "orders"
		}
		return req && hs
	})
}
