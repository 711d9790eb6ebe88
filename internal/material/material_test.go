package material_test

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"

	"keyway.dev/internal/material"
	"keyway.dev/internal/material/materialtest"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testca"
)

func TestFetch(t *testing.T) {
	t.Parallel()
	f := materialtest.Start(t)
	ca := testca.New(t, "Gateway CA")
	gw := ca.Client("gateway")
	f.PutAlias("edge", "gw", gw)
	f.PutTruststore("upstream-cas", ca.Cert)
	c := f.Client(t)
	ctx := context.Background()

	a, err := c.Alias(ctx, secretref.Ref{Keystore: "edge", Alias: "gw"})
	if err != nil {
		t.Fatalf("Alias: %v", err)
	}
	if a.Version != "1" || a.Fingerprint != gw.Fingerprint() || a.Certificate.Leaf == nil || a.Certificate.PrivateKey == nil {
		t.Errorf("alias %+v, want version 1 of gateway's key pair", a)
	}
	ts, err := c.Truststore(ctx, "upstream-cas")
	if err != nil {
		t.Fatalf("Truststore: %v", err)
	}
	if len(ts.CAs) != 1 || !ts.CAs[0].Equal(ca.Cert) {
		t.Errorf("truststore %+v, want the CA", ts)
	}
	if _, err := c.Alias(ctx, secretref.Ref{Keystore: "edge", Alias: "nope"}); !errors.Is(err, material.ErrNotFound) {
		t.Errorf("missing alias: %v, want ErrNotFound", err)
	}

	// The internal port refuses a client without a certificate from the
	// internal CA.
	stranger := material.NewWithTLS(f.InternalURL, &tls.Config{RootCAs: f.Internal.Pool(), Certificates: []tls.Certificate{ca.Client("stranger").TLS}}, 0)
	if _, err := stranger.Alias(ctx, secretref.Ref{Keystore: "edge", Alias: "gw"}); err == nil {
		t.Error("a client certificate from another CA fetched key material")
	}
}
