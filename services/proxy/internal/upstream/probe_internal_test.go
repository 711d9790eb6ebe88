package upstream

import (
	"context"
	"crypto/x509"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// Concurrent failing requests share one probe of an endpoint instead of
// each opening its own connection.
func TestProbeIsSingleFlightPerEndpoint(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			t.Cleanup(func() { c.Close() }) // accept, never handshake
		}
	}()
	ca := testca.New(t, "CA")
	u, err := New(&model.Service{Name: "stuck", Endpoints: []string{ln.Addr().String()}, Protocol: model.ProtocolHTTP1},
		&model.OutboundTLS{TrustedCAs: []*x509.Certificate{ca.Cert}, MinVersion: 0x0303, MaxVersion: 0x0304, Fingerprint: "t"},
		Options{HandshakeTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const callers = 8
	var wg sync.WaitGroup
	errs := make([]*Error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = u.probe(context.Background(), ln.Addr().String())
		}()
	}
	wg.Wait()
	for i, e := range errs {
		if e == nil || e.Reason != failure.HandshakeTimeout {
			t.Errorf("caller %d: %v, want handshake_timeout", i, e)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("%d connections for %d concurrent probes of one endpoint, want 1", n, callers)
	}
}
