package revocation_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
)

func TestOCSP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// setup shapes the responder's answers for leaf.
		setup      func(ca *testca.CA, pub *testca.Publisher, leaf *testca.KeyPair)
		want       revocation.Result
		reason     revocation.ReasonCode
		whyHas     string
		hardRefuse bool
	}{
		{name: "good", setup: func(*testca.CA, *testca.Publisher, *testca.KeyPair) {}, want: revocation.Good},
		{name: "revoked", want: revocation.Revoked, reason: revocation.KeyCompromise, hardRefuse: true,
			setup: func(_ *testca.CA, pub *testca.Publisher, leaf *testca.KeyPair) {
				pub.Revoke(leaf.Cert, int(revocation.KeyCompromise))
			}},
		{name: "unknown to the responder", want: revocation.Unknown, whyHas: "does not know this certificate", hardRefuse: true,
			setup: func(_ *testca.CA, pub *testca.Publisher, leaf *testca.KeyPair) { pub.Unknown(leaf.Cert) }},
		{name: "delegated responder", want: revocation.Good,
			setup: func(ca *testca.CA, pub *testca.Publisher, _ *testca.KeyPair) {
				pub.SignOCSPWith(ca.OCSPResponder("ocsp"))
			}},
		{name: "delegated responder revokes", want: revocation.Revoked, reason: revocation.Superseded, hardRefuse: true,
			setup: func(ca *testca.CA, pub *testca.Publisher, leaf *testca.KeyPair) {
				pub.SignOCSPWith(ca.OCSPResponder("ocsp"))
				pub.Revoke(leaf.Cert, int(revocation.Superseded))
			}},
		{name: "signed by another key", want: revocation.Unknown, whyHas: "signature does not verify", hardRefuse: true,
			setup: func(_ *testca.CA, pub *testca.Publisher, leaf *testca.KeyPair) {
				pub.SignOCSPWithKey(testca.New(t, "other").Key)
				pub.Revoke(leaf.Cert, int(revocation.KeyCompromise)) // a forged answer must not count either way
			}},
		{name: "responder of another CA", want: revocation.Unknown, whyHas: "did not issue", hardRefuse: true,
			setup: func(_ *testca.CA, pub *testca.Publisher, _ *testca.KeyPair) {
				pub.SignOCSPWith(testca.New(t, "other").OCSPResponder("ocsp"))
			}},
		{name: "delegate without the OCSP signing usage", want: revocation.Unknown, whyHas: "lacks the OCSP signing", hardRefuse: true,
			setup: func(ca *testca.CA, pub *testca.Publisher, _ *testca.KeyPair) {
				pub.SignOCSPWith(ca.Client("not-a-responder"))
			}},
		{name: "responder down", want: revocation.Unknown, whyHas: "503", hardRefuse: true,
			setup: func(_ *testca.CA, pub *testca.Publisher, _ *testca.KeyPair) { pub.Fail(http.StatusServiceUnavailable) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca := testca.New(t, "ocsp-ca")
			pub := ca.Publisher()
			leaf := ca.Issue(testca.Options{CommonName: "client", OCSPServer: []string{pub.OCSPURL()}})
			tc.setup(ca, pub, leaf)

			c := newCache(t, revocation.Options{})
			hard := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, OCSP: true})
			soft := newChecker(t, c, revocation.Policy{Mode: revocation.SoftFail, OCSP: true})
			s := await(t, hard, leaf.Cert, ca.Cert)
			if s.Result != tc.want || s.Reason != tc.reason || !strings.Contains(s.Why, tc.whyHas) {
				t.Fatalf("status: %+v, want %s (reason %s) with why containing %q", s, tc.want, tc.reason, tc.whyHas)
			}
			if s.Source != "ocsp "+pub.OCSPURL() {
				t.Errorf("source %q", s.Source)
			}
			if err := hard.Verify(leaf.Cert, ca.Cert); (err != nil) != tc.hardRefuse {
				t.Errorf("hard-fail Verify = %v, want refused %v", err, tc.hardRefuse)
			}
			wantSoftRefuse := tc.want == revocation.Revoked
			if err := soft.Verify(leaf.Cert, ca.Cert); (err != nil) != wantSoftRefuse || wantSoftRefuse && !errors.Is(err, revocation.ErrRevoked) {
				t.Errorf("soft-fail Verify = %v, want refused %v", err, wantSoftRefuse)
			}
		})
	}
}

func TestOCSPConfiguredResponder(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ocsp-ca")
	pub := ca.Publisher()
	leaf := ca.Client("no-aia")
	c := newCache(t, revocation.Options{})
	named := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, OCSP: true})
	if s := named.Check(leaf.Cert, ca.Cert); s.Result != revocation.Unknown || s.Pending || !strings.Contains(s.Why, "no OCSP responder") {
		t.Fatalf("certificate without responder: %+v", s)
	}
	configured := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, OCSP: true, OCSPResponder: pub.OCSPURL()})
	if s := await(t, configured, leaf.Cert, ca.Cert); s.Result != revocation.Good {
		t.Fatalf("configured responder: %+v", s)
	}
}

func TestOCSPRefresh(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ocsp-ca")
	pub := ca.Publisher()
	leaf := ca.Issue(testca.Options{CommonName: "client", OCSPServer: []string{pub.OCSPURL()}})
	failed := make(chan struct{}, 1)
	opts := fastOptions()
	opts.OnFetch = func(e revocation.FetchEvent) {
		if e.Kind == "ocsp" && e.Err != nil {
			select {
			case failed <- struct{}{}:
			default:
			}
		}
	}
	c := newCache(t, opts)
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, OCSP: true})
	if s := await(t, ch, leaf.Cert, ca.Cert); s.Result != revocation.Good {
		t.Fatalf("first answer: %+v", s)
	}

	// The responder goes down: the last good answer stands.
	pub.Fail(http.StatusServiceUnavailable)
	select {
	case <-failed:
	case <-timeout(t):
		t.Fatal("no failed OCSP refresh")
	}
	if s := ch.Check(leaf.Cert, ca.Cert); s.Result != revocation.Good {
		t.Fatalf("after a failed refresh: %+v", s)
	}

	// It comes back with a revocation: the next refresh sees it.
	pub.Fail(0)
	pub.Revoke(leaf.Cert, int(revocation.KeyCompromise))
	waitUntil(t, c, "the OCSP revocation is seen", func() bool {
		return ch.Check(leaf.Cert, ca.Cert).Result == revocation.Revoked
	})
	if n := c.OCSPResponses(); n != 1 {
		t.Fatalf("%d OCSP responses held, want 1", n)
	}
}

// Staple gives the response as the responder signed it, once verified: a
// TLS client parses it and finds it about the certificate; nothing is given
// while none verified (a forged one is never stapled).
func TestOCSPStaple(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ocsp-ca")
	pub := ca.Publisher()
	leaf := ca.Issue(testca.Options{DNSNames: []string{"gw.test"}, OCSPServer: []string{pub.OCSPURL()}})
	forged := ca.Issue(testca.Options{DNSNames: []string{"forged.test"}, OCSPServer: []string{pub.OCSPURL()}})
	c := newCache(t, revocation.Options{})
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.SoftFail, OCSP: true})
	if raw, s := ch.Staple(leaf.Cert, ca.Cert, time.Now()); raw != nil || !s.Pending {
		t.Fatalf("before the responder answered: %d bytes, %+v", len(raw), s)
	}
	await(t, ch, leaf.Cert, ca.Cert)
	raw, s := ch.Staple(leaf.Cert, ca.Cert, time.Now())
	if raw == nil || s.Result != revocation.Good {
		t.Fatalf("after a good answer: %d bytes, %+v", len(raw), s)
	}
	resp, err := ocsp.ParseResponseForCert(raw, leaf.Cert, ca.Cert)
	if err != nil || resp.Status != ocsp.Good || resp.SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("the staple does not parse as a good response for the certificate: %v %+v", err, resp)
	}

	pub.SignOCSPWithKey(testca.New(t, "other").Key)
	await(t, ch, forged.Cert, ca.Cert)
	if raw, s := ch.Staple(forged.Cert, ca.Cert, time.Now()); raw != nil || s.Result != revocation.Unknown {
		t.Fatalf("a response that does not verify was given to staple: %d bytes, %+v", len(raw), s)
	}
}
