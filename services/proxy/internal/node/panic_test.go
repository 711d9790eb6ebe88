package node_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/proxy/internal/node"
	"keyway.dev/proxy/internal/publish"
)

// poisonEndpoint marks the Service value whose decoding panics.
const poisonEndpoint = "127.0.0.1:9"

// panickingDecode is a test hook (watch.Options.Decode through
// node.Config.Decode): model.Decode, except that it panics on a Service
// listing poisonEndpoint, as a decoder bug would on some stored value. No
// real stored value is known to panic (FuzzDecodeStoredValue looks for one).
func panickingDecode(res *policyv1.Resource) (model.Object, error) {
	if slices.Contains(res.GetService().GetSpec().GetEndpoints(), poisonEndpoint) {
		var m map[string]int
		m["boom"]++ //nolint:staticcheck // a nil map write: a real runtime panic, on purpose
	}
	return model.Decode(res)
}

// A stored value whose decoding panics does not take the node down: the
// value is refused and reported in /status with the key and revision, the
// key keeps its last good value, the panic is counted in /metrics, and the
// node goes on serving and applying the other keys.
func TestPanicInDecodingIsRefusedAndTheNodeServes(t *testing.T) {
	t.Parallel()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(backend.Close)
	e := newEnv(t, func(c *node.Config) { c.Decode = panickingDecode })
	put(t, e.kv, service("billing", "http1", "127.0.0.1:2"))
	put(t, e.kv, route("orders", "/orders/", "orders"))
	waitRevision(t, e.node, put(t, e.kv, service("orders", "http1", "127.0.0.1:1")))

	poisoned := put(t, e.kv, service("billing", "http1", poisonEndpoint))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.node.WaitRevision(ctx, poisoned)
	var sk *publish.SkippedError
	if !errors.As(err, &sk) || sk.Key != "service.billing" || sk.Revision != poisoned || !errors.Is(err, publish.ErrPanic) {
		t.Fatalf("WaitRevision(%d) = %v, want service.billing refused for a panic", poisoned, err)
	}

	// The node applies and serves another key after the panic.
	rev := put(t, e.kv, service("orders", "http1", strings.TrimPrefix(backend.URL, "http://")))
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.node.WaitRevision(ctx, rev); !errors.As(err, &sk) || sk.Key != "service.billing" {
		t.Fatalf("WaitRevision(%d) = %v, want only the earlier refusal", rev, err)
	}
	if a := do(t, "GET", "http://"+e.node.Addr()+"/orders/x"); a.status != http.StatusOK {
		t.Errorf("GET /orders/x after the panic: status %d: %s", a.status, a.body)
	}

	st := e.node.Status()
	if len(st.Skipped) != 1 || st.Skipped[0].Key != "service.billing" || st.Skipped[0].Revision != poisoned || !strings.Contains(st.Skipped[0].Error, "panic") {
		t.Errorf("status skipped = %+v, want service.billing at %d refused for a panic", st.Skipped, poisoned)
	}
	for _, u := range st.Upstreams {
		if u.Name == "billing" && !slices.Equal(u.Endpoints, []string{"127.0.0.1:2"}) {
			t.Errorf("billing serves %v, want its last good value 127.0.0.1:2", u.Endpoints)
		}
	}
	if st.Watch.Panics != 1 {
		t.Errorf("status counts %d panics, want 1", st.Watch.Panics)
	}
	got := series(scrape(t, e), "keyway_config_panics_total", map[string]string{"source": "config", "stage": "decode"})
	if len(got) != 1 || got[0].GetCounter().GetValue() != 1 {
		t.Errorf("keyway_config_panics_total{source=config,stage=decode} = %v, want 1", got)
	}
	if logs := e.logs.lines("recovered a panic; the value is refused and the last good one kept"); len(logs) != 1 || logs[0]["key"] != "service.billing" {
		t.Errorf("panic logged as %v", logs)
	}
	if logs := e.logs.lines("stack of the recovered panic"); len(logs) != 1 || !strings.Contains(logs[0]["stack"].(string), "panickingDecode") {
		t.Errorf("no stack naming the panicking function at debug level: %v", logs)
	}

	// A good value for the key supersedes the refusal.
	waitRevision(t, e.node, put(t, e.kv, service("billing", "http1", "127.0.0.1:3")))
	if st := e.node.Status(); len(st.Skipped) != 0 {
		t.Errorf("after a good value: skipped %+v", st.Skipped)
	}
}
