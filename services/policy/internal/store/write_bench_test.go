package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/natstest"
)

// BenchmarkWrite is the time of Write against an embedded NATS server on
// loopback, for applies of one and of three changed resources (Service,
// Route, Service: every one changed at each iteration). STORE_BENCH_DIR
// puts the server's store under another directory (/dev/shm: no disk
// syncs), to tell the server's file syncs from the rest.
func BenchmarkWrite(b *testing.B) {
	dir := benchDir(b)
	nc := natstest.Start(b, func(o *server.Options) { o.StoreDir = dir }).Connect(b)
	st, err := Open(context.Background(), nc, Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	svc := func(name string, port int) *policyv1.Resource {
		return &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
			ApiVersion: model.APIVersion, Kind: model.KindService, Metadata: &policyv1.ObjectMeta{Name: name},
			Spec: &policyv1.ServiceSpec{Endpoints: []string{fmt.Sprintf("127.0.0.1:%d", port)}, Protocol: "http1"},
		}}}
	}
	rt := func(name string, i int) *policyv1.Resource {
		return &policyv1.Resource{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{
			ApiVersion: model.APIVersion, Kind: model.KindRoute, Metadata: &policyv1.ObjectMeta{Name: name},
			Spec: &policyv1.RouteSpec{Path: fmt.Sprintf("/%s/%d/", name, i), Service: name},
		}}}
	}
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("resources=%d", n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				i++
				res := []*policyv1.Resource{svc(fmt.Sprintf("a%d", n), 1000+i%2), rt(fmt.Sprintf("a%d", n), i%2), svc(fmt.Sprintf("b%d", n), 1000+i%2)}[:n]
				if _, err := st.Write(context.Background(), res, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchDir(b *testing.B) string {
	if d := os.Getenv("STORE_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "store")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}
