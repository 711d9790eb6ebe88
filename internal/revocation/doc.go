// Package revocation tells whether a certificate has been revoked by its
// CA, from certificate revocation lists (CRLs, RFC 5280) and OCSP responses
// (RFC 6960), without touching the network when asked.
//
// A [Cache] holds the lists and responses. It fetches each CRL in the
// background, from an HTTP(S) URL or a file, bounded in size and time;
// verifies it against the CA that issued it (signature, issuer name,
// thisUpdate, critical extensions); and refreshes it at its nextUpdate, or
// sooner on a configured bound, with jitter so that a fleet does not fetch
// in step. When a refresh fails, the last good list is kept: its revoked
// serials still count, and it is current until its nextUpdate. OCSP
// responses are fetched the same way, per (issuer, serial), when a
// certificate is first checked, and refreshed before they expire while the
// certificate is still being checked.
//
// A [Checker] is one policy over a Cache: which CRLs apply (given
// explicitly, and those the certificate names in its CRL distribution
// points), whether OCSP is asked, and what an unknown status means
// ([Mode]: off, soft-fail or hard-fail). [Checker.Check] is a few map
// lookups with no allocation and no I/O, meant for every handshake and
// every request:
//
//	cache := revocation.NewCache(revocation.Options{})
//	defer cache.Close()
//	checker, err := cache.Checker(revocation.Policy{
//		Mode:    revocation.HardFail,
//		CRLs:    []string{"https://ca.example.com/ca.crl"},
//		Issuers: []*x509.Certificate{caCert},
//	})
//	...
//	if err := checker.Verify(leaf, issuer); err != nil {
//		// revoked, or unknown in hard-fail mode
//	}
//
// A status is one of good (a current list or response covers the
// certificate and does not list it), revoked, or unknown (nothing current
// covers it; [Status.Why] says why: no list yet, a stale list, a list whose
// signature does not verify, a responder that cannot be reached). A list
// that lists the serial makes it revoked even when the list is stale:
// revocation does not expire.
//
// Only the certificate given is checked, usually a leaf; a chain is
// checked by calling Check for each certificate and its issuer. Delta CRLs
// and indirect CRLs are refused (their scope is not the whole CA); a list
// with an issuing distribution point applies only to the certificates it
// names.
package revocation
