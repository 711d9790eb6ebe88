package publish

import (
	"fmt"
	"testing"

	"keyway.dev/internal/model"
	"keyway.dev/proxy/internal/upstream"
)

// An edit changes the next Upstreams only, copying the shards it writes:
// the published one is never modified.
func TestUpstreamsEditCopiesOnWrite(t *testing.T) {
	t.Parallel()
	ups := make([]*upstream.Upstream, 1000)
	e := (*Upstreams)(nil).edit()
	for i := range ups {
		ups[i] = new(upstream.Upstream)
		e.set(fmt.Sprintf("svc-%d", i), ups[i])
	}
	first := e.next
	if first.Len() != 1000 || first.Get("svc-7") != ups[7] || first.Get("nope") != nil {
		t.Fatalf("first: %d upstreams, svc-7 %p", first.Len(), first.Get("svc-7"))
	}

	e = first.edit()
	replacement := new(upstream.Upstream)
	e.set("svc-7", replacement)
	e.delete("svc-8")
	e.delete("absent")
	second := e.next
	if second.Len() != 999 || second.Get("svc-7") != replacement || second.Get("svc-8") != nil || second.Get("svc-9") != ups[9] {
		t.Errorf("second: %d upstreams, svc-7 replaced %t, svc-8 %p", second.Len(), second.Get("svc-7") == replacement, second.Get("svc-8"))
	}
	if first.Len() != 1000 || first.Get("svc-7") != ups[7] || first.Get("svc-8") != ups[8] {
		t.Errorf("the published Upstreams changed under the edit")
	}
	shared := 0
	for i := range first.shards {
		if fmt.Sprintf("%p", first.shards[i]) == fmt.Sprintf("%p", second.shards[i]) {
			shared++
		}
	}
	if shared < upstreamShards-2 {
		t.Errorf("%d of %d shards shared after changing two names, want all but at most 2", shared, upstreamShards)
	}
	n := 0
	for range second.All() {
		n++
	}
	if n != 999 || len(second.names()) != 999 {
		t.Errorf("All yields %d, names %d; want 999", n, len(second.names()))
	}
}

// TLSLen follows every edit: Upstreams that gain, lose or keep outbound
// TLS, and deleted ones.
func TestUpstreamsCountTLS(t *testing.T) {
	t.Parallel()
	mk := func(name string, tls bool) *upstream.Upstream {
		var ctx *model.OutboundTLS
		if tls {
			ctx = &model.OutboundTLS{SkipValidation: true}
		}
		u, err := upstream.New(&model.Service{Name: name, Endpoints: []string{"127.0.0.1:1"}}, ctx, upstream.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	e := (*Upstreams)(nil).edit()
	for i := range 10 {
		name := fmt.Sprintf("svc-%d", i)
		e.set(name, mk(name, i%2 == 0)) // 5 with TLS
	}
	first := e.next
	if first.TLSLen() != 5 {
		t.Fatalf("TLSLen %d after 5 of 10 with TLS, want 5", first.TLSLen())
	}
	e = first.edit()
	e.set("svc-1", mk("svc-1", true))  // gains TLS
	e.set("svc-0", mk("svc-0", false)) // loses it
	e.set("svc-2", mk("svc-2", true))  // keeps it
	e.delete("svc-4")                  // had it
	e.delete("svc-3")                  // had none
	e.delete("absent")
	if got := e.next.TLSLen(); got != 4 || first.TLSLen() != 5 {
		t.Errorf("TLSLen %d after the edit (want 4), %d before it (want 5)", got, first.TLSLen())
	}
	if (*Upstreams)(nil).TLSLen() != 0 {
		t.Error("nil Upstreams count TLS")
	}
}
