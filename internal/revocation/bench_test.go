package revocation_test

import (
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
)

// BenchmarkCheck measures a check against a CRL of 10,000 entries: what a
// handshake or a request pays. Run with
//
//	go test -run '^$' -bench Check -benchmem ./revocation/
func BenchmarkCheck(b *testing.B) {
	ca := testca.New(b, "bench-ca")
	pub := ca.Publisher()
	good := ca.Issue(testca.Options{CommonName: "good", CRLDistributionPoints: []string{pub.CRLURL()}, OCSPServer: []string{pub.OCSPURL()}})
	revoked := ca.Issue(testca.Options{CommonName: "revoked", CRLDistributionPoints: []string{pub.CRLURL()}})
	entries := make([]x509.RevocationListEntry, 0, 10000)
	now := time.Now()
	for i := range 9999 {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(int64(i) + 1), RevocationTime: now})
	}
	entries = append(entries, x509.RevocationListEntry{SerialNumber: revoked.Cert.SerialNumber, RevocationTime: now})
	pub.Serve(ca.CRL(testca.CRLOptions{Revoked: entries}))

	c := revocation.NewCache(revocation.Options{})
	b.Cleanup(c.Close)
	policies := map[string]revocation.Policy{
		"crl":                {Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, Issuers: []*x509.Certificate{ca.Cert}},
		"distribution-point": {Mode: revocation.HardFail, DistributionPoints: true},
		"ocsp":               {Mode: revocation.HardFail, OCSP: true},
		"crl+ocsp":           {Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}, OCSP: true, Issuers: []*x509.Certificate{ca.Cert}},
	}
	for _, name := range []string{"crl", "distribution-point", "ocsp", "crl+ocsp"} {
		ch, err := c.Checker(policies[name])
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(ch.Close)
		if s := await(b, ch, good.Cert, ca.Cert); s.Result != revocation.Good {
			b.Fatalf("%s: %+v", name, s)
		}
		b.Run(name+"/good", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ch.Check(good.Cert, ca.Cert).Result != revocation.Good {
					b.Fatal("not good")
				}
			}
		})
		b.Run(name+"/good-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if ch.Check(good.Cert, ca.Cert).Result != revocation.Good {
						b.Error("not good")
						return
					}
				}
			})
		})
	}
	ch, err := c.Checker(policies["crl"])
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ch.Close)
	b.Run("crl/revoked", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if ch.Check(revoked.Cert, ca.Cert).Result != revocation.Revoked {
				b.Fatal("not revoked")
			}
		}
	})
}
