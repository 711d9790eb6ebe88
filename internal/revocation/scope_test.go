package revocation_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
)

var (
	oidIssuingDP = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidDeltaCRL  = asn1.ObjectIdentifier{2, 5, 29, 27}
)

// issuingDP encodes an issuing distribution point extension.
func issuingDP(uris []string, onlyCA, indirect bool) pkix.Extension {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if len(uris) > 0 {
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					for _, u := range uris {
						b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
					}
				})
			})
		}
		if onlyCA {
			b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddUint8(0xff) })
		}
		if indirect {
			b.AddASN1(cbasn1.Tag(4).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddUint8(0xff) })
		}
	})
	return pkix.Extension{Id: oidIssuingDP, Critical: true, Value: b.BytesOrPanic()}
}

// crlWith signs a CRL revoking serial that carries ext.
func crlWith(t *testing.T, ca *testca.CA, serial *big.Int, ext pkix.Extension) []byte {
	t.Helper()
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: serial, RevocationTime: now}},
		ExtraExtensions:           []pkix.Extension{ext},
	}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestCRLScope(t *testing.T) {
	t.Parallel()
	const point = "http://127.0.0.1:1/part1.crl"
	tests := []struct {
		name string
		ext  pkix.Extension
		// dp is the distribution point the certificate names.
		dp     string
		want   revocation.Result
		whyHas string
	}{
		{"partition names the certificate's point", issuingDP([]string{point}, false, false), point, revocation.Revoked, ""},
		{"partition of another point", issuingDP([]string{point}, false, false), "http://127.0.0.1:1/part2.crl", revocation.Unknown, "does not cover"},
		{"CA certificates only", issuingDP(nil, true, false), "", revocation.Unknown, "does not cover"},
		{"indirect CRL", issuingDP(nil, false, true), "", revocation.Unknown, "indirect"},
		{"delta CRL", pkix.Extension{Id: oidDeltaCRL, Critical: true, Value: []byte{2, 1, 1}}, "", revocation.Unknown, "delta CRL"},
		{"unknown critical extension", pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}, "", revocation.Unknown, "critical extension 1.2.3.4"},
		{"unknown extension, not critical", pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: []byte{5, 0}}, "", revocation.Revoked, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca := testca.New(t, "scope-ca")
			pub := ca.Publisher()
			opts := testca.Options{CommonName: "client"}
			if tc.dp != "" {
				opts.CRLDistributionPoints = []string{tc.dp}
			}
			leaf := ca.Issue(opts)
			pub.Serve(crlWith(t, ca, leaf.Cert.SerialNumber, tc.ext))
			c := newCache(t, revocation.Options{})
			ch := newChecker(t, c, revocation.Policy{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{ca.Cert}})
			ready(t, ch)
			s := ch.Check(leaf.Cert, ca.Cert)
			if s.Result != tc.want || !strings.Contains(s.Why, tc.whyHas) {
				t.Fatalf("status %+v, want %s with why containing %q", s, tc.want, tc.whyHas)
			}
		})
	}
}
