package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"runtime"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/internal/tlsconf"
)

func TestSharedOutboundOneConfigPerContextAndALPN(t *testing.T) {
	root := testca.New(t, "root CA")
	newCtx := func() *model.OutboundTLS {
		return &model.OutboundTLS{TrustedCAs: []*x509.Certificate{root.Cert}, SNI: "orders.internal", MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
	}
	shared := func(o *model.OutboundTLS, protocol string) *tls.Config {
		t.Helper()
		cfg, err := tlsconf.SharedOutbound("orders", o, protocol)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	before := tlsconf.SharedLen()
	a, b := newCtx(), newCtx()
	h1 := shared(a, model.ProtocolHTTP1)
	if again := shared(a, model.ProtocolHTTP1); again != h1 {
		t.Fatal("the same context and protocol got two configs, want one shared")
	}
	if h2 := shared(a, model.ProtocolH2); h2 == h1 || len(h2.NextProtos) != 2 {
		t.Fatalf("an h2 Service got the HTTP/1.1 Service's config (ALPN %q), want its own offering h2", h2.NextProtos)
	}
	if other := shared(b, model.ProtocolHTTP1); other == h1 {
		t.Fatal("another context (an equal one not shared by the decoder) got the first one's config")
	}
	if h1.ClientSessionCache != nil {
		t.Fatal("the shared config has a session cache: resumption would cross upstreams")
	}
	if n := tlsconf.SharedLen() - before; n != 2 {
		t.Fatalf("%d contexts with shared configs, want 2", n)
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	testwait.Until(t, 10*time.Second, "the configs of contexts nothing holds to go", func() bool {
		runtime.GC()
		return tlsconf.SharedLen() <= before
	})
}
