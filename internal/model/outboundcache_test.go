package model_test

import (
	"runtime"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
)

func TestOutboundCacheSharesEqualContexts(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	kp := ca.Client("gateway")
	cache := model.NewOutboundCache()
	decode := func(name, target string, cfg map[string]any) *model.OutboundTLS {
		t.Helper()
		obj, err := model.Decode(binding(t, name, target, cfg), model.WithOutboundCache(cache))
		if err != nil {
			t.Fatal(err)
		}
		return obj.Binding.Outbound
	}
	cfg := with(verified(ca), "certificate", clientCert(kp))
	a := decode("a-mtls", "a", cfg)
	b := decode("b-mtls", "b", cfg)
	if a != b {
		t.Fatal("two bindings with the same config got two TLS contexts, want one shared")
	}
	uncached, err := model.Decode(binding(t, "c-mtls", "c", cfg))
	if err != nil {
		t.Fatal(err)
	}
	if got := uncached.Binding.Outbound; got.Fingerprint != a.Fingerprint || got == a {
		t.Fatalf("without the cache: fingerprint %s (want %s), shared %v (want a context of its own)", got.Fingerprint, a.Fingerprint, got == a)
	}
	other := decode("d-mtls", "d", with(cfg, "sni", "other.example"))
	if other == a || other.SNI != "other.example" {
		t.Fatalf("a different config got the shared context (sni %q)", other.SNI)
	}

	h2First := decode("f-mtls", "f", with(cfg, "alpn", []any{"h2", "http/1.1"}))
	h1First := decode("g-mtls", "g", with(cfg, "alpn", []any{"http/1.1", "h2"}))
	if h2First == h1First || h2First.ALPN[0] != "h2" || h1First.ALPN[0] != "http/1.1" {
		t.Fatalf("alpn lists in another order share a context: %q and %q", h2First.ALPN, h1First.ALPN)
	}

	// An invalid config is refused every time, never shared.
	bad := with(verified(ca), "minversion", "0.9")
	for range 2 {
		if _, err := model.Decode(binding(t, "e-mtls", "e", bad), model.WithOutboundCache(cache)); err == nil {
			t.Fatal("an invalid config decoded through the cache")
		}
	}

	// Once nothing holds the contexts, their entries go.
	if n := model.OutboundCacheLen(cache); n != 4 {
		t.Fatalf("%d entries, want 4 (the shared context and the three others)", n)
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(other)
	runtime.KeepAlive(h2First)
	runtime.KeepAlive(h1First)
	testwait.Until(t, 10*time.Second, "the cache to drop contexts nothing holds", func() bool {
		runtime.GC()
		return model.OutboundCacheLen(cache) == 0
	})
}
