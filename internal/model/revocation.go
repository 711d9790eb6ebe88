package model

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/internal/revocation"
)

// Revocation setting fields, spelled as in the API, on a Listener host and
// in a tls-inbound or tls-outbound binding's config.
const (
	fieldRevocation         = "revocation"
	fieldRevocationMode     = "mode"
	fieldCRL                = "crl"
	fieldDistributionPoints = "distributionPoints"
	fieldOCSP               = "ocsp"
	fieldOCSPResponder      = "ocspResponder"
)

var revocationFields = []string{fieldRevocationMode, fieldCRL, fieldDistributionPoints, fieldOCSP, fieldOCSPResponder}

// MaxCRLs bounds the CRLs one revocation setting names.
const MaxCRLs = 16

// Revocation is how a Listener host checks client certificates, or a
// tls-outbound context the upstream's certificate, for revocation. The zero
// value checks nothing.
type Revocation struct {
	// Mode is off (or empty), soft-fail or hard-fail.
	Mode revocation.Mode
	// CRLs are http(s) URLs and absolute file paths, as
	// [revocation.ParseLocation] writes them.
	CRLs []string
	// DistributionPoints consults the CRLs certificates name.
	DistributionPoints bool
	OCSP               bool
	OCSPResponder      string
}

// On reports whether certificates are checked.
func (r Revocation) On() bool { return r.Mode == revocation.SoftFail || r.Mode == revocation.HardFail }

// revocationSpec is a revocation setting as read, from the proto or from a
// binding's config.
type revocationSpec struct {
	at        fieldPath
	mode      textSetting
	crls      listSetting
	dp        bool
	dpState   presence
	ocsp      bool
	responder textSetting
}

// listenerRevocation reads a Listener host's revocation.
func (c *checker) listenerRevocation(at fieldPath, r *policyv1.Revocation, clientAuth tls.ClientAuthType, clientAuthKnown bool) Revocation {
	if r == nil {
		return Revocation{}
	}
	s := revocationSpec{at: at, mode: textOf(r.GetMode()), crls: itemsOf(r.GetCrl()), ocsp: r.GetOcsp(), responder: textOf(r.GetOcspResponder())}
	if r.DistributionPoints != nil {
		s.dp, s.dpState = r.GetDistributionPoints(), present
	}
	return c.revocation(s, clientPeer, clientAuth, clientAuthKnown)
}

// The certificates a revocation setting checks, as its messages name them.
const (
	clientPeer   = "client certificate"
	upstreamPeer = "upstream certificate"
)

// withArticle is peer with its indefinite article.
func withArticle(peer string) string {
	if strings.IndexAny(peer[:1], "aeiou") == 0 {
		return "an " + peer
	}
	return "a " + peer
}

// configRevocation reads the revocation object of a binding's config,
// which checks the certificates of peer (clientPeer, on a host whose
// client auth mode is clientAuth; or upstreamPeer).
func (c *checker) configRevocation(o configObject, peer string, clientAuth tls.ClientAuthType) Revocation {
	r, state := o.object(fieldRevocation)
	if state != present {
		return Revocation{}
	}
	r.unknownKeys(revocationFields, "revocation")
	s := revocationSpec{at: r.at}
	mode, modeState := r.str(fieldRevocationMode)
	s.mode = textSetting{text: mode, state: modeState}
	s.crls = listOf(r.stringList(fieldCRL))
	s.dp, s.dpState = r.boolean(fieldDistributionPoints)
	s.ocsp, _ = r.boolean(fieldOCSP)
	responder, respState := r.str(fieldOCSPResponder)
	s.responder = textSetting{text: responder, state: respState}
	if modeState == invalid {
		return Revocation{}
	}
	return c.revocation(s, peer, clientAuth, peer == clientPeer)
}

// revocation checks a revocation setting of the certificates of peer; for
// client certificates, on a host whose client auth mode is clientAuth
// (when clientAuthKnown).
func (c *checker) revocation(s revocationSpec, peer string, clientAuth tls.ClientAuthType, clientAuthKnown bool) Revocation {
	var out Revocation
	modeAt := s.at.Child(fieldRevocationMode)
	switch s.mode.state {
	case absent:
		c.errorf(modeAt, "revocation.mode is required: off, soft-fail (%s whose revocation status is unknown is allowed, and counted) or hard-fail (it is refused); a revoked certificate is refused in both", withArticle(peer))
		return Revocation{}
	case present:
		m, err := revocation.ParseMode(s.mode.text)
		if err != nil || s.mode.text == "" {
			names := []string{string(revocation.Off), string(revocation.SoftFail), string(revocation.HardFail)}
			msg := fmt.Sprintf("revocation.mode %q is not supported; use one of %s", s.mode.text, quoteList(names))
			if d := DidYouMean(s.mode.text, names); d != "" {
				msg += fmt.Sprintf(": did you mean %q?", d)
			}
			c.errorf(modeAt, "%s", msg)
			return Revocation{}
		}
		out.Mode = m
	default:
		return Revocation{}
	}

	crlAt := s.at.Child(fieldCRL)
	if len(s.crls.items) > MaxCRLs {
		c.errorf(crlAt, "revocation.crl lists %d CRLs; at most %d: give the CRL of each CA that issues %ss once", len(s.crls.items), MaxCRLs, peer)
	}
	seen := make(map[string]int)
	for _, it := range s.crls.items {
		loc, err := revocation.ParseLocation(it.value)
		if err != nil {
			c.errorf(crlAt.Index(it.index), "%s", strings.TrimPrefix(err.Error(), "revocation: "))
			continue
		}
		if first, dup := seen[loc]; dup {
			c.errorf(crlAt.Index(it.index), "the CRL %q is also crl[%d]: list it once", it.value, first)
			continue
		}
		seen[loc] = it.index
		out.CRLs = append(out.CRLs, loc)
	}
	out.DistributionPoints = s.dp || s.dpState == absent
	out.OCSP = s.ocsp
	if s.responder.state == present {
		respAt := s.at.Child(fieldOCSPResponder)
		u, err := url.Parse(s.responder.text)
		switch {
		case len(s.responder.text) > 2048:
			c.errorf(respAt, "ocspResponder is %d bytes long; at most 2048", len(s.responder.text))
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			c.errorf(respAt, "ocspResponder %q is not an http:// or https:// URL; give the URL of the OCSP responder, e.g. http://ocsp.example.com", s.responder.text)
		case !s.ocsp:
			c.errorf(respAt, "ocspResponder is asked only with ocsp: true: add ocsp: true, or remove ocspResponder")
		default:
			out.OCSPResponder = s.responder.text
		}
	}

	if !out.On() {
		if len(s.crls.items) > 0 || s.ocsp || s.dpState == present || s.responder.state == present {
			c.warnf(s.at, "revocation.mode is off, so the other revocation fields are ignored; set mode: soft-fail or hard-fail to check %ss", peer)
		}
		return Revocation{Mode: revocation.Off}
	}
	if clientAuthKnown && clientAuth != tls.VerifyClientCertIfGiven && clientAuth != tls.RequireAndVerifyClientCert {
		c.errorf(modeAt, "revocation checks verified client certificates, and clientAuth: %s does not verify them; use clientAuth: verify-if-given or require-and-verify with the CAs that issue them, or remove revocation", ClientAuthName(clientAuth))
	}
	if len(s.crls.items) == 0 && !out.DistributionPoints && !out.OCSP {
		c.errorf(s.at, "revocation has nothing to check against: give crl (URLs or absolute files of the CAs' CRLs), leave distributionPoints on (the CRLs certificates name), or set ocsp: true")
	}
	if out.Mode == revocation.HardFail && len(s.crls.items) == 0 && !out.OCSP && out.DistributionPoints {
		c.warnf(modeAt, "with hard-fail and only distributionPoints, %s that names no CRL distribution point is refused (revocation_unknown); give crl as well if some certificates name none", withArticle(peer))
	}
	return out
}

// fingerprint adds r to a host's fingerprint; nothing when it is off, so
// that hosts without revocation keep their fingerprints.
func (r Revocation) fingerprint(w fingerprintWriter) {
	if !r.On() {
		return
	}
	w.put("revocation", []byte(r.Mode))
	for _, l := range r.CRLs {
		w.put("crl", []byte(l))
	}
	w.flag("distributionPoints", r.DistributionPoints)
	w.flag("ocsp", r.OCSP)
	w.put("ocspResponder", []byte(r.OCSPResponder))
}
