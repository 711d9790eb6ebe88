package revocation_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
)

func TestCRLRevokedSerial(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "crl-ca")
	pub := ca.Publisher()
	revoked, kept := ca.Client("revoked"), ca.Client("kept")
	pub.Revoke(revoked.Cert, int(revocation.KeyCompromise))

	fetches := make(chan error, 16)
	c := newCache(t, revocation.Options{OnFetch: func(e revocation.FetchEvent) { fetches <- e.Err }})
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{ca.Cert}})
	ready(t, ch)
	<-fetches

	s := ch.Check(revoked.Cert, ca.Cert)
	if s.Result != revocation.Revoked || s.Reason != revocation.KeyCompromise || s.RevokedAt.IsZero() || s.Source != pub.CRLURL() {
		t.Fatalf("revoked certificate: %+v", s)
	}
	err := ch.Verify(revoked.Cert, ca.Cert)
	if !errors.Is(err, revocation.ErrRevoked) || !strings.Contains(err.Error(), "keyCompromise") {
		t.Fatalf("Verify(revoked) = %v, want ErrRevoked naming keyCompromise", err)
	}
	good := ch.Check(kept.Cert, ca.Cert)
	if good.Result != revocation.Good || good.Source != pub.CRLURL() {
		t.Fatalf("certificate not revoked: %+v", good)
	}
	if err := ch.Verify(kept.Cert, ca.Cert); err != nil {
		t.Fatalf("Verify(kept) = %v", err)
	}
	ls, ok := listStatus(c, pub.CRLURL())
	if !ok || ls.Revoked != 1 || !ls.Current(time.Now()) || ls.Err != "" {
		t.Fatalf("list status: %+v", ls)
	}
	if !good.Until.Equal(ls.NextUpdate) {
		t.Errorf("good until %s, want the list's nextUpdate %s", good.Until, ls.NextUpdate)
	}
	// A refresh that finds the list unchanged (304) changes nothing a
	// check could have cached.
	gen := c.Generation()
	c.Refresh()
	select {
	case err := <-fetches:
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
	case <-timeout(t):
		t.Fatal("no refresh")
	}
	if c.Generation() != gen {
		t.Error("an unchanged list made a new generation")
	}
}

func TestCRLOfAnotherCAIsRefused(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "real-ca")
	pub := ca.Publisher()
	leaf := ca.Client("client")
	// Same name, another key: a forged list must not make anything good,
	// nor revoke anything.
	impostor := testca.New(t, "real-ca")
	pub.Serve(impostor.CRL(testca.CRLOptions{}))

	c := newCache(t, revocation.Options{})
	hard := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{ca.Cert}})
	ready(t, hard)
	s := hard.Check(leaf.Cert, ca.Cert)
	if s.Result != revocation.Unknown || !strings.Contains(s.Why, "signed by another key") {
		t.Fatalf("status with a forged CRL: %+v", s)
	}
	if err := hard.Verify(leaf.Cert, ca.Cert); !errors.Is(err, revocation.ErrUnknown) {
		t.Fatalf("hard-fail Verify = %v, want ErrUnknown", err)
	}
	soft := newChecker(t, c, revocation.Policy{Mode: revocation.SoftFail, CRLs: []string{pub.CRLURL()}})
	if err := soft.Verify(leaf.Cert, ca.Cert); err != nil {
		t.Fatalf("soft-fail Verify = %v, want nil", err)
	}
}

func TestCRLWithBadSignatureIsRefused(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "tamper-ca")
	pub := ca.Publisher()
	leaf := ca.Client("client")
	der := ca.CRL(testca.CRLOptions{})
	der[len(der)-3] ^= 0xff // inside the signature
	pub.Serve(der)

	c := newCache(t, revocation.Options{})
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{ca.Cert}})
	ready(t, ch)
	if s := ch.Check(leaf.Cert, ca.Cert); s.Result != revocation.Unknown || !strings.Contains(s.Why, "signature does not verify") {
		t.Fatalf("status with a tampered CRL: %+v", s)
	}
}

func TestStaleCRLIsUnknown(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "stale-ca")
	pub := ca.Publisher()
	leaf, revoked := ca.Client("client"), ca.Client("revoked")
	now := time.Now()
	pub.Serve(ca.CRL(testca.CRLOptions{
		ThisUpdate: now.Add(-2 * time.Hour), NextUpdate: now.Add(-time.Hour),
		Revoked: []x509.RevocationListEntry{{SerialNumber: revoked.Cert.SerialNumber, RevocationTime: now.Add(-3 * time.Hour)}},
	}))

	c := newCache(t, revocation.Options{})
	hard := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{ca.Cert}})
	soft := newChecker(t, c, revocation.Policy{Mode: revocation.SoftFail, CRLs: []string{pub.CRLURL()}})
	ready(t, hard)

	s := hard.Check(leaf.Cert, ca.Cert)
	if s.Result != revocation.Unknown || !strings.Contains(s.Why, "stale") || s.Pending {
		t.Fatalf("status with a stale CRL: %+v", s)
	}
	if err := hard.Verify(leaf.Cert, ca.Cert); !errors.Is(err, revocation.ErrUnknown) {
		t.Fatalf("hard-fail Verify = %v, want ErrUnknown", err)
	}
	if err := soft.Verify(leaf.Cert, ca.Cert); err != nil {
		t.Fatalf("soft-fail Verify = %v, want nil", err)
	}
	// Revocation does not expire with the list.
	if s := soft.Check(revoked.Cert, ca.Cert); s.Result != revocation.Revoked {
		t.Fatalf("certificate on a stale list: %+v", s)
	}
}

func TestServerDownKeepsLastGoodList(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "down-ca")
	pub := ca.Publisher()
	leaf, revoked := ca.Client("client"), ca.Client("revoked")
	pub.Revoke(revoked.Cert, int(revocation.Superseded))

	c := newCache(t, fastOptions())
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{ca.Cert}})
	ready(t, ch)
	pub.Fail(http.StatusServiceUnavailable)
	c.Refresh()
	waitUntil(t, c, "a fetch fails", func() bool {
		ls, _ := listStatus(c, pub.CRLURL())
		return strings.Contains(ls.Err, "503")
	})
	if s := ch.Check(revoked.Cert, ca.Cert); s.Result != revocation.Revoked {
		t.Fatalf("revoked certificate after a failed refresh: %+v", s)
	}
	if s := ch.Check(leaf.Cert, ca.Cert); s.Result != revocation.Good {
		t.Fatalf("good certificate after a failed refresh: %+v", s)
	}
}

func TestServerDownWithoutList(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "never-ca")
	leaf := ca.Client("client")
	// A port that refuses connections: listened on, then closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String() + "/crl"
	_ = l.Close()

	c := newCache(t, fastOptions())
	hard := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{url}, Issuers: []*x509.Certificate{ca.Cert}})
	soft := newChecker(t, c, revocation.Policy{Mode: revocation.SoftFail, CRLs: []string{url}, Issuers: []*x509.Certificate{ca.Cert}})
	ready(t, hard)

	s := soft.Check(leaf.Cert, ca.Cert)
	if s.Result != revocation.Unknown || !strings.Contains(s.Why, "refused") || s.Pending {
		t.Fatalf("status with the CRL server down: %+v", s)
	}
	if err := soft.Verify(leaf.Cert, ca.Cert); err != nil {
		t.Fatalf("soft-fail Verify = %v, want nil", err)
	}
	err = hard.Verify(leaf.Cert, ca.Cert)
	if !errors.Is(err, revocation.ErrUnknown) || !strings.Contains(err.Error(), url) {
		t.Fatalf("hard-fail Verify = %v, want ErrUnknown naming the URL", err)
	}
}

func TestRefreshPicksUpNewRevocation(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "refresh-ca")
	pub := ca.Publisher()
	leaf := ca.Client("client")

	c := newCache(t, fastOptions())
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{ca.Cert}})
	if s := await(t, ch, leaf.Cert, ca.Cert); s.Result != revocation.Good {
		t.Fatalf("before revocation: %+v", s)
	}
	pub.Revoke(leaf.Cert, int(revocation.KeyCompromise))
	// No Refresh: the schedule (MaxRefresh) must pick it up.
	waitUntil(t, c, "the revocation is seen", func() bool {
		return ch.Check(leaf.Cert, ca.Cert).Result == revocation.Revoked
	})
}

func TestDistributionPoint(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "dp-ca")
	pub := ca.Publisher()
	leaf := ca.Issue(testca.Options{CommonName: "client", CRLDistributionPoints: []string{"ldap://ignored/cn=crl", pub.CRLURL()}})
	other := ca.Issue(testca.Options{CommonName: "other", CRLDistributionPoints: []string{pub.CRLURL()}})
	none := ca.Client("no-dp")
	pub.Revoke(leaf.Cert, int(revocation.CessationOfOperation))

	c := newCache(t, revocation.Options{})
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, DistributionPoints: true})
	if s := ch.Check(leaf.Cert, ca.Cert); s.Result != revocation.Unknown || !s.Pending {
		t.Fatalf("first check, before any fetch: %+v", s)
	}
	if s := await(t, ch, leaf.Cert, ca.Cert); s.Result != revocation.Revoked || s.Reason != revocation.CessationOfOperation {
		t.Fatalf("revoked certificate: %+v", s)
	}
	if s := ch.Check(other.Cert, ca.Cert); s.Result != revocation.Good {
		t.Fatalf("certificate with the same distribution point: %+v", s)
	}
	if s := ch.Check(none.Cert, ca.Cert); s.Result != revocation.Unknown || s.Pending || !strings.Contains(s.Why, "distribution points") {
		t.Fatalf("certificate without distribution point: %+v", s)
	}
	if ls, ok := listStatus(c, pub.CRLURL()); !ok || !ls.Discovered {
		t.Fatalf("discovered list: %+v", ls)
	}
}

func TestIntermediateCRLVerifiesOnceIssuerIsSeen(t *testing.T) {
	t.Parallel()
	root := testca.New(t, "root")
	sub := root.Intermediate("issuing")
	pub := sub.Publisher()
	leaf := sub.Client("client")
	pub.Revoke(leaf.Cert, int(revocation.KeyCompromise))

	c := newCache(t, revocation.Options{})
	// Only the root is configured; the intermediate comes with the
	// client's chain.
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{root.Cert}})
	ready(t, ch)
	if s := await(t, ch, leaf.Cert, sub.Cert); s.Result != revocation.Revoked {
		t.Fatalf("certificate of an intermediate: %+v", s)
	}
}

func TestCRLFromFile(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "file-ca")
	leaf, revoked := ca.Client("client"), ca.Client("revoked")
	der := ca.CRL(testca.CRLOptions{Revoked: []x509.RevocationListEntry{{SerialNumber: revoked.Cert.SerialNumber, RevocationTime: time.Now()}}})
	path := filepath.Join(t.TempDir(), "ca.crl")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}

	c := newCache(t, revocation.Options{})
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{"file://" + path}, Issuers: []*x509.Certificate{ca.Cert}})
	ready(t, ch)
	if s := ch.Check(revoked.Cert, ca.Cert); s.Result != revocation.Revoked || s.Source != path {
		t.Fatalf("revoked by a file: %+v", s)
	}
	if s := ch.Check(leaf.Cert, ca.Cert); s.Result != revocation.Good {
		t.Fatalf("good by a file: %+v", s)
	}
}

func TestCRLSizeIsBounded(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "big-ca")
	pub := ca.Publisher()
	c := newCache(t, revocation.Options{MaxCRLBytes: 64})
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{ca.Cert}})
	ready(t, ch)
	if s := ch.Check(ca.Client("client").Cert, ca.Cert); s.Result != revocation.Unknown || !strings.Contains(s.Why, "limit of 64") {
		t.Fatalf("status with an oversized CRL: %+v", s)
	}
}

func TestOlderCRLDoesNotReplaceNewer(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "rollback-ca")
	pub := ca.Publisher()
	leaf := ca.Client("client")
	old := ca.CRL(testca.CRLOptions{ThisUpdate: time.Now().Add(-time.Hour), Number: 1})
	pub.Revoke(leaf.Cert, int(revocation.KeyCompromise)) // number 2, now

	c := newCache(t, fastOptions())
	ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{ca.Cert}})
	ready(t, ch)
	pub.Serve(old) // a mirror replaying an older list
	c.Refresh()
	waitUntil(t, c, "the older list is refused", func() bool {
		ls, _ := listStatus(c, pub.CRLURL())
		return strings.Contains(ls.Err, "older")
	})
	if s := ch.Check(leaf.Cert, ca.Cert); s.Result != revocation.Revoked {
		t.Fatalf("after an older list was served: %+v", s)
	}
}

func TestCheckerCloseReleasesLists(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "close-ca")
	pub := ca.Publisher()
	c := newCache(t, fastOptions())
	a := newChecker(t, c, revocation.Policy{Mode: revocation.SoftFail, CRLs: []string{pub.CRLURL()}})
	b := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}})
	ready(t, a)
	a.Close()
	if _, ok := listStatus(c, pub.CRLURL()); !ok {
		t.Fatal("list dropped while another checker names it")
	}
	b.Close()
	if _, ok := listStatus(c, pub.CRLURL()); ok {
		t.Fatal("list kept after every checker naming it closed")
	}
}

func TestPolicyIsValidated(t *testing.T) {
	t.Parallel()
	c := newCache(t, revocation.Options{})
	for _, tc := range []struct {
		name string
		p    revocation.Policy
		want string
	}{
		{"mode", revocation.Policy{Mode: "strict"}, `mode "strict"`},
		{"relative file", revocation.Policy{Mode: revocation.HardFail, CRLs: []string{"ca.crl"}}, "relative path"},
		{"ldap", revocation.Policy{Mode: revocation.HardFail, CRLs: []string{"ldap://dir/cn=ca"}}, "LDAP is not supported"},
		{"credentials", revocation.Policy{Mode: revocation.HardFail, CRLs: []string{"https://u:p@ca.example/crl"}}, "credentials"},
		{"responder", revocation.Policy{Mode: revocation.HardFail, OCSP: true, OCSPResponder: "ftp://ocsp"}, "OCSP responder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Checker(tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Checker(%+v) = %v, want an error naming %q", tc.p, err, tc.want)
			}
		})
	}
}
