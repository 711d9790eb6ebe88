package publish

import (
	"context"
	"crypto/x509"
	"runtime"
	"testing"
	"time"

	"keyway.dev/internal/material"
	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/internal/tlsconf"
)

// fakeSecrets stands in for the secrets package's Source: like it, it
// hands out the same material until its version changes.
type fakeSecrets struct {
	alias      *material.Alias
	truststore *material.Truststore
}

func (f *fakeSecrets) Alias(context.Context, secretref.Ref) (*material.Alias, error) {
	return f.alias, nil
}

func (f *fakeSecrets) Truststore(context.Context, string) (*material.Truststore, error) {
	return f.truststore, nil
}

// Bindings that decode to one context and resolve to the same material
// share the resolved context, and with it one tls.Config; a new version
// of the material is a new context.
func TestResolveOutboundSharesOneResolution(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "upstream CA")
	client := ca.Client("proxy")
	secrets := &fakeSecrets{
		alias:      &material.Alias{Version: "1", Certificate: &client.TLS},
		truststore: &material.Truststore{Version: "1", CAs: []*x509.Certificate{ca.Cert}},
	}
	p := New(Options{Secrets: secrets})
	in := &model.OutboundTLS{CertificateRef: &secretref.Ref{Keystore: "ks", Alias: "proxy"}, Truststore: "cas"}

	first, err := p.resolveOutbound(in)
	if err != nil {
		t.Fatal(err)
	}
	second, err := p.resolveOutbound(in)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatal("two resolutions of one context to the same material gave two contexts; want one, shared")
	}
	if first.Certificate != &client.TLS || len(first.TrustedCAs) != 1 || first.TrustedCAs[0] != ca.Cert {
		t.Fatalf("resolved context has certificate %p and CAs %v; want the alias's and the truststore's", first.Certificate, first.TrustedCAs)
	}
	cfg1, err := tlsconf.SharedOutbound("svc-1", first, "http1")
	if err != nil {
		t.Fatal(err)
	}
	cfg2, err := tlsconf.SharedOutbound("svc-2", second, "http1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg1 != cfg2 {
		t.Fatal("two Upstreams of one resolved context built two tls.Configs; want one")
	}

	// The truststore's next version: a context of its own.
	next := testca.New(t, "next upstream CA")
	secrets.truststore = &material.Truststore{Version: "2", CAs: []*x509.Certificate{next.Cert}}
	third, err := p.resolveOutbound(in)
	if err != nil {
		t.Fatal(err)
	}
	if third == first || len(third.TrustedCAs) != 1 || third.TrustedCAs[0] != next.Cert {
		t.Fatalf("after the truststore changed, the resolved context trusts %v; want the new CA in a new context", third.TrustedCAs)
	}
	if third.Fingerprint == first.Fingerprint {
		t.Fatal("the new context has the old one's fingerprint; want it told apart, so that its Upstreams are rebuilt")
	}

	// Contexts no one holds any more are let go.
	testwait.Until(t, 10*time.Second, "the resolved contexts to be let go", func() bool {
		runtime.GC()
		return p.outbound.len() == 0
	})
}
