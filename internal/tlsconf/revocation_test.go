package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/tlsconf"
)

// serveChain serves cert with its chain (the intermediates after it).
func serveChain(t *testing.T, kp *testca.KeyPair, chain ...*x509.Certificate) string {
	t.Helper()
	c := kp.TLS
	for _, ca := range chain {
		c.Certificate = append(c.Certificate, ca.Raw)
	}
	return testca.ServeTLS(t, &testca.KeyPair{TLS: c})
}

// TestOutboundRevocationCheck: the check the node supplies is asked about
// the verified leaf and its issuer in the verified chain, after the names
// are checked; its refusal fails the handshake with its reason.
func TestOutboundRevocationCheck(t *testing.T) {
	t.Parallel()
	root := testca.New(t, "root CA")
	inter := root.Intermediate("intermediate CA")
	leaf := inter.Server("orders.internal")
	cnOnly := root.CNOnly("legacy.internal")
	chainAddr := serveChain(t, leaf, inter.Cert)
	legacyAddr := testca.ServeTLS(t, cnOnly)

	type call struct{ leaf, issuer *x509.Certificate }
	for _, tt := range []struct {
		name   string
		addr   string
		mod    func(*model.OutboundTLS)
		refuse error
		want   failure.Reason
		asked  *call // nil: the check is not asked
	}{
		{name: "good", addr: chainAddr, asked: &call{leaf.Cert, inter.Cert}},
		{name: "revoked", addr: chainAddr, refuse: failure.WithReason(failure.Revoked, errors.New("certificate is revoked")), want: failure.Revoked, asked: &call{leaf.Cert, inter.Cert}},
		{name: "unknown", addr: chainAddr, refuse: failure.WithReason(failure.RevocationUnknown, errors.New("no current CRL")), want: failure.RevocationUnknown, asked: &call{leaf.Cert, inter.Cert}},
		{name: "names first", addr: chainAddr, mod: func(o *model.OutboundTLS) { o.SubjectAltNames = []string{"billing.internal"} }, refuse: errors.New("not asked"), want: failure.SANMismatch},
		{name: "legacy common name", addr: legacyAddr, mod: func(o *model.OutboundTLS) { o.LegacyCommonName, o.SNI = true, "legacy.internal" }, asked: &call{cnOnly.Cert, root.Cert}},
		{name: "skip validation", addr: chainAddr, mod: func(o *model.OutboundTLS) { o.SkipValidation = true }, refuse: errors.New("not asked")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := &model.OutboundTLS{TrustedCAs: []*x509.Certificate{root.Cert}, SNI: "orders.internal", MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
			if tt.mod != nil {
				tt.mod(o)
			}
			base, err := tlsconf.Outbound("orders", o, model.ProtocolHTTP1)
			if err != nil {
				t.Fatal(err)
			}
			var asked *call
			reason, detail := handshakeChecked(t, base, o, tt.addr, func(leaf, issuer *x509.Certificate) error {
				asked = &call{leaf, issuer}
				return tt.refuse
			})
			if reason != tt.want {
				t.Errorf("reason %q (%s), want %q", reason, detail, tt.want)
			}
			if tt.refuse != nil && tt.want != "" && tt.want != failure.SANMismatch && !strings.Contains(detail, tt.refuse.Error()) {
				t.Errorf("detail %q does not carry the check's error", detail)
			}
			switch {
			case tt.asked == nil && asked != nil:
				t.Errorf("the check was asked about %s", asked.leaf.Subject)
			case tt.asked != nil && asked == nil:
				t.Error("the check was not asked")
			case tt.asked != nil && (!asked.leaf.Equal(tt.asked.leaf) || !asked.issuer.Equal(tt.asked.issuer)):
				t.Errorf("the check was asked about %s issued by %s, want %s issued by %s", asked.leaf.Subject, asked.issuer.Subject, tt.asked.leaf.Subject, tt.asked.issuer.Subject)
			}
		})
	}
}
