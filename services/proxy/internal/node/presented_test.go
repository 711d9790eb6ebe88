package node_test

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	nodev1 "keyway.dev/gen/keyway/node/v1"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/proxy/internal/node"
)

// The node's status gives the revocation state of the certificates it
// presents, from what they name: a Listener certificate with an OCSP
// responder is good, then revoked once the responder says so (and the
// handshake staples that answer); an upstream client certificate with a
// CRL distribution point is good; a certificate that names neither, and
// the CAs the node trusts, are not checked (empty); a certificate whose
// chain lacks its issuer is unknown, saying so.
func TestStatusGivesRevocationOfPresentedCertificates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *node.Config) {
		c.RevocationMaxRefresh, c.RevocationMinRefresh = 200*time.Millisecond, 50*time.Millisecond
	})
	ca := testca.New(t, "presented CA")
	pub := ca.Publisher()
	gw := ca.Issue(testca.Options{DNSNames: []string{"gw.test"}, OCSPServer: []string{pub.OCSPURL()}})
	lone := ca.Issue(testca.Options{DNSNames: []string{"lone.test"}, OCSPServer: []string{pub.OCSPURL()}})
	plain := ca.Server("plain.test")
	client := ca.Issue(testca.Options{CommonName: "gateway", CRLDistributionPoints: []string{pub.CRLURL()}})
	chain := func(kp *testca.KeyPair) *testca.KeyPair {
		c := *kp
		c.CertPEM = append(append([]byte{}, kp.CertPEM...), ca.CertPEM()...)
		return &c
	}

	put(t, e.kv, service("orders", "http1", "127.0.0.1:1"))
	put(t, e.kv, binding(t, "orders-mtls", "orders", mtls(ca, chain(client), nil)))
	waitRevision(t, e.node, put(t, e.kv, listenerResource("public", "127.0.0.1:0",
		listenerHost(chain(gw), "none", nil, "gw.test"), listenerHost(lone, "none", nil, "lone.test"), listenerHost(plain, "none", nil, "plain.test"))))

	states := func() map[string]*nodev1.ServedCertificate {
		out := map[string]*nodev1.ServedCertificate{}
		for _, c := range e.node.NodeStatus().GetCertificates() {
			out[c.GetSha256Fingerprint()+"/"+c.GetRole()] = c
		}
		return out
	}
	want := func(kp *testca.KeyPair, role, state, detail string) func() error {
		return func() error {
			c := states()[certs.Fingerprint(kp.Cert)+"/"+role]
			if c == nil {
				return fmt.Errorf("%s (%s) is not in the status", kp.Cert.Subject, role)
			}
			if c.GetRevocation() != state || !strings.Contains(c.GetRevocationDetail(), detail) {
				return fmt.Errorf("%s (%s): revocation %q (%s), want %q with %q", kp.Cert.Subject, role, c.GetRevocation(), c.GetRevocationDetail(), state, detail)
			}
			return nil
		}
	}
	testwait.Eventually(t, 10*time.Second, want(gw, "server", "good", "ocsp "+pub.OCSPURL()))
	testwait.Eventually(t, 10*time.Second, want(client, "client", "good", pub.CRLURL()))
	for _, check := range []func() error{
		want(plain, "server", "", ""),
		want(lone, "server", "unknown", "does not include the issuer"),
		want(&testca.KeyPair{Cert: ca.Cert}, "trust", "", ""),
	} {
		if err := check(); err != nil {
			t.Error(err)
		}
	}

	pub.Revoke(gw.Cert, int(revocation.KeyCompromise))
	testwait.Eventually(t, 10*time.Second, want(gw, "server", "revoked", "keyCompromise"))
	conn, err := tls.Dial("tcp", e.node.ListenerAddr("public"), &tls.Config{ServerName: "gw.test", RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r, err := ocsp.ParseResponseForCert(conn.ConnectionState().OCSPResponse, gw.Cert, ca.Cert)
	if err != nil || r.Status != ocsp.Revoked {
		t.Errorf("the response stapled by the Listener: %v %+v, want the revoked one", err, r)
	}
}
