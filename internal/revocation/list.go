package revocation

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// clockSkew is how far in the future a CRL's thisUpdate (or an OCSP
// response's) may be: the CA's clock and ours differ a little.
const clockSkew = 5 * time.Minute

// Extensions of a CRL this package understands (RFC 5280 section 5.2).
var (
	oidAuthorityKeyID = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber      = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidDeltaCRL       = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidIssuingDP      = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidReasonCode     = asn1.ObjectIdentifier{2, 5, 29, 21}
)

// list is a CRL verified against its issuer, indexed by serial number.
// Immutable once built.
type list struct {
	location string
	// issuerKey is the issuer's RawSubjectPublicKeyInfo, as a string so
	// that it compares without allocating.
	issuerKey  string
	issuerName string
	thisUpdate time.Time
	// nextUpdate is when the list stops being current: the CRL's
	// nextUpdate, or for a CRL without one, a bound from the fetch.
	nextUpdate time.Time
	number     *big.Int
	revoked    map[string]entry
	scope      scope
	// staleWhy and otherIssuerWhy are Status.Why when the list is past
	// nextUpdate, and when it is another CA's list; built once here so
	// that a check does not format strings.
	staleWhy       string
	otherIssuerWhy string
	outOfScopeWhy  string
}

type entry struct {
	at     time.Time
	reason ReasonCode
}

// scope is which certificates a list covers, from its issuing
// distribution point extension: all of its issuer's by default.
type scope struct {
	onlyUser, onlyCA bool
	// points, when set, are the distribution point URIs the list is for:
	// it covers only certificates that name one of them.
	points []string
}

func (s scope) covers(cert *x509.Certificate) bool {
	if s.onlyUser && cert.IsCA || s.onlyCA && !cert.IsCA {
		return false
	}
	if len(s.points) == 0 {
		return true
	}
	for _, p := range s.points {
		for _, dp := range cert.CRLDistributionPoints {
			if p == dp {
				return true
			}
		}
	}
	return false
}

// decodeCRL reads a CRL in DER or PEM ("X509 CRL").
func decodeCRL(data []byte) (*x509.RevocationList, error) {
	if trimmed := bytes.TrimSpace(data); bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		block, _ := pem.Decode(trimmed)
		if block == nil {
			return nil, errors.New("PEM data does not decode")
		}
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("PEM block is %q, not \"X509 CRL\"", block.Type)
		}
		data = block.Bytes
	}
	crl, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("parsing CRL: %w", err)
	}
	return crl, nil
}

// issuedBy reports whether crl names issuer as its issuer.
func issuedBy(crl *x509.RevocationList, issuer *x509.Certificate) bool {
	return bytes.Equal(crl.RawIssuer, issuer.RawSubject)
}

// verifyCRL checks crl against issuer, whose name it bears, at now: key
// identifier and signature, that the issuer may sign CRLs, thisUpdate not
// in the future, and extensions this package can honour.
func verifyCRL(crl *x509.RevocationList, issuer *x509.Certificate, now time.Time) (scope, error) {
	if len(crl.AuthorityKeyId) > 0 && len(issuer.SubjectKeyId) > 0 && !bytes.Equal(crl.AuthorityKeyId, issuer.SubjectKeyId) {
		return scope{}, fmt.Errorf("CRL bears the name of CA %s but is signed by another key (its authority key identifier %x is not the CA's subject key identifier %x)", describe(issuer), crl.AuthorityKeyId, issuer.SubjectKeyId)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		var cv x509.ConstraintViolationError
		if errors.As(err, &cv) {
			return scope{}, fmt.Errorf("CA %s may not sign CRLs (it is not a CA, or its key usage lacks cRLSign)", describe(issuer))
		}
		return scope{}, fmt.Errorf("CRL signature does not verify against CA %s: %w", describe(issuer), err)
	}
	if crl.ThisUpdate.After(now.Add(clockSkew)) {
		return scope{}, fmt.Errorf("CRL thisUpdate %s is in the future: check the clocks of the CA and of this host", crl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if !crl.NextUpdate.IsZero() && crl.NextUpdate.Before(crl.ThisUpdate) {
		return scope{}, fmt.Errorf("CRL nextUpdate %s is before its thisUpdate", crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	var sc scope
	for _, ext := range crl.Extensions {
		switch {
		case ext.Id.Equal(oidDeltaCRL):
			return scope{}, errors.New("CRL is a delta CRL, which lists only changes since a base CRL: give the URL of the full CRL")
		case ext.Id.Equal(oidIssuingDP):
			s, err := parseIssuingDP(ext.Value)
			if err != nil {
				return scope{}, err
			}
			sc = s
		case ext.Id.Equal(oidAuthorityKeyID), ext.Id.Equal(oidCRLNumber):
		case ext.Critical:
			return scope{}, fmt.Errorf("CRL has critical extension %s, which this checker does not process", ext.Id)
		}
	}
	for i := range crl.RevokedCertificateEntries {
		for _, ext := range crl.RevokedCertificateEntries[i].Extensions {
			if ext.Critical && !ext.Id.Equal(oidReasonCode) {
				// certificateIssuer (2.5.29.29) marks an indirect CRL.
				return scope{}, fmt.Errorf("CRL entry %d has critical extension %s, which this checker does not process (indirect CRLs are not supported)", i, ext.Id)
			}
		}
	}
	return sc, nil
}

// parseIssuingDP reads an issuing distribution point extension (RFC 5280
// section 5.2.5), refusing the scopes a full, direct list does not have.
func parseIssuingDP(der []byte) (scope, error) {
	bad := errors.New("CRL issuing distribution point extension is malformed")
	input := cryptobyte.String(der)
	var seq cryptobyte.String
	if !input.ReadASN1(&seq, cbasn1.SEQUENCE) || !input.Empty() {
		return scope{}, bad
	}
	var sc scope
	var dp cryptobyte.String
	var hasDP bool
	if !seq.ReadOptionalASN1(&dp, &hasDP, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return scope{}, bad
	}
	if hasDP {
		var full cryptobyte.String
		var hasFull bool
		if !dp.ReadOptionalASN1(&full, &hasFull, cbasn1.Tag(0).Constructed().ContextSpecific()) {
			return scope{}, bad
		}
		if !hasFull {
			return scope{}, errors.New("CRL issuing distribution point is named relative to the issuer, which this checker cannot match to certificates")
		}
		for !full.Empty() {
			var name cryptobyte.String
			var tag cbasn1.Tag
			if !full.ReadAnyASN1(&name, &tag) {
				return scope{}, bad
			}
			if tag == cbasn1.Tag(6).ContextSpecific() { // uniformResourceIdentifier
				sc.points = append(sc.points, string(name))
			}
		}
		if len(sc.points) == 0 {
			return scope{}, errors.New("CRL issuing distribution point names no URI, so no certificate can be matched to it")
		}
	}
	flag := func(n uint8) (bool, bool) {
		var v cryptobyte.String
		var present bool
		if !seq.ReadOptionalASN1(&v, &present, cbasn1.Tag(n).ContextSpecific()) {
			return false, false
		}
		if !present {
			return false, true
		}
		return len(v) == 1 && v[0] != 0, len(v) == 1
	}
	var ok bool
	if sc.onlyUser, ok = flag(1); !ok {
		return scope{}, bad
	}
	if sc.onlyCA, ok = flag(2); !ok {
		return scope{}, bad
	}
	var reasons cryptobyte.String
	var someReasons bool
	if !seq.ReadOptionalASN1(&reasons, &someReasons, cbasn1.Tag(3).ContextSpecific()) {
		return scope{}, bad
	}
	if someReasons {
		return scope{}, errors.New("CRL covers only some revocation reasons (onlySomeReasons): give the URL of a CRL for all reasons")
	}
	indirect, ok := flag(4)
	if !ok {
		return scope{}, bad
	}
	if indirect {
		return scope{}, errors.New("CRL is an indirect CRL (it lists certificates of other CAs), which this checker does not support")
	}
	attrs, ok := flag(5)
	if !ok {
		return scope{}, bad
	}
	if attrs {
		return scope{}, errors.New("CRL covers only attribute certificates")
	}
	if !seq.Empty() {
		return scope{}, bad
	}
	return sc, nil
}

// newList indexes a verified crl from location. A CRL without nextUpdate
// is current until noNext.
func newList(location string, crl *x509.RevocationList, issuer *x509.Certificate, sc scope, noNext time.Time) *list {
	l := &list{
		location:   location,
		issuerKey:  string(issuer.RawSubjectPublicKeyInfo),
		issuerName: describe(issuer),
		thisUpdate: crl.ThisUpdate,
		nextUpdate: crl.NextUpdate,
		number:     crl.Number,
		revoked:    make(map[string]entry, len(crl.RevokedCertificateEntries)),
		scope:      sc,
	}
	if l.nextUpdate.IsZero() {
		l.nextUpdate = noNext
	}
	var buf [serialBuf]byte
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber == nil || ReasonCode(e.ReasonCode) == RemoveFromCRL {
			// removeFromCRL belongs to delta CRLs; in a full list it
			// revokes nothing.
			continue
		}
		l.revoked[string(serialKey(e.SerialNumber, buf[:]))] = entry{at: e.RevocationTime, reason: ReasonCode(e.ReasonCode)}
	}
	l.staleWhy = fmt.Sprintf("CRL %s of CA %s is stale: its nextUpdate %s has passed and no newer list could be fetched", location, l.issuerName, l.nextUpdate.UTC().Format(time.RFC3339))
	l.otherIssuerWhy = fmt.Sprintf("CRL %s is issued by CA %s, not by the certificate's issuer", location, l.issuerName)
	l.outOfScopeWhy = fmt.Sprintf("CRL %s does not cover this certificate (its issuing distribution point limits it to other certificates)", location)
	return l
}

// newer reports whether crl may replace l: a list is never replaced by an
// older one (a replayed or misconfigured mirror).
func (l *list) newer(crl *x509.RevocationList) error {
	if l == nil {
		return nil
	}
	if crl.ThisUpdate.Before(l.thisUpdate) {
		return fmt.Errorf("CRL thisUpdate %s is older than the list already held (%s): keeping the newer one", crl.ThisUpdate.UTC().Format(time.RFC3339), l.thisUpdate.UTC().Format(time.RFC3339))
	}
	if l.number != nil && crl.Number != nil && crl.Number.Cmp(l.number) < 0 {
		return fmt.Errorf("CRL number %s is lower than the list already held (%s): keeping the newer one", crl.Number, l.number)
	}
	return nil
}

// serialBuf holds the key of any serial number of at most 32 bytes
// (RFC 5280 allows 20): a sign byte, then the magnitude.
const serialBuf = 33

// serialKey is the map key of serial number n: a sign byte, then its
// big-endian magnitude without leading zeros. It is written into buf when
// it fits, so that a lookup does not allocate.
func serialKey(n *big.Int, buf []byte) []byte {
	size := (n.BitLen() + 7) / 8
	if size+1 > len(buf) {
		buf = make([]byte, size+1)
	}
	buf[0] = 0
	if n.Sign() < 0 {
		buf[0] = 1
	}
	n.FillBytes(buf[1 : 1+size])
	return buf[:1+size]
}

// describe names a certificate in messages: its subject.
func describe(cert *x509.Certificate) string {
	if cert.Subject.CommonName != "" {
		return fmt.Sprintf("%q", cert.Subject.CommonName)
	}
	return fmt.Sprintf("%q", cert.Subject.String())
}
