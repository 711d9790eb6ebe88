package upstream_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/upstream"
)

// An Upstream whose context checks revocation takes a checker from the
// node's cache, shows its mode, and gives the checker back when drained
// (its CRL is no longer fetched); without the node's checks it is not
// built, rather than left unchecked.
func TestUpstreamRevocationChecker(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	const crl = "http://127.0.0.1:1/ca.crl"
	svc := &model.Service{Name: "orders", Endpoints: []string{"127.0.0.1:1"}}
	o := &model.OutboundTLS{
		TrustedCAs: []*x509.Certificate{ca.Cert}, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13,
		Revocation: model.Revocation{Mode: revocation.HardFail, CRLs: []string{crl}},
	}

	if _, err := upstream.New(svc, o, upstream.Options{}); err == nil || !strings.Contains(err.Error(), "without revocation checks") {
		t.Errorf("built without the node's revocation checks: %v", err)
	}

	cache := revocation.NewCache(revocation.Options{})
	t.Cleanup(cache.Close)
	opts := upstream.Options{Revocation: &upstream.Revocation{Cache: func() *revocation.Cache { return cache }}}
	u, err := upstream.New(svc, o, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Status().Revocation; got != revocation.HardFail {
		t.Errorf("status revocation %q, want %q", got, revocation.HardFail)
	}
	if lists := cache.Lists(); len(lists) != 1 || lists[0].Location != crl {
		t.Errorf("cache lists %+v, want %s", lists, crl)
	}
	if err := u.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if lists := cache.Lists(); len(lists) != 0 {
		t.Errorf("cache lists %+v after the drain, want none", lists)
	}

	skip := *o
	skip.SkipValidation, skip.TrustedCAs = true, nil
	u, err = upstream.New(svc, &skip, upstream.Options{})
	if err != nil {
		t.Fatalf("skipValidation: %v", err)
	}
	if got := u.Status().Revocation; got != "" {
		t.Errorf("skipValidation: status revocation %q, want none", got)
	}
}
