package testca

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"

	"keyway.dev/internal/devca"
)

// CRLOptions shape a CRL; see [devca.CRLOptions].
type CRLOptions = devca.CRLOptions

// CRL signs a CRL (DER) with the CA's key.
func (ca *CA) CRL(opts CRLOptions) []byte {
	ca.tb.Helper()
	der, err := ca.CA.CRL(opts)
	if err != nil {
		ca.tb.Fatalf("testca: %v", err)
	}
	return der
}

// OCSPResponder mints a certificate for a delegated OCSP responder: the
// OCSP signing extended key usage, issued by this CA.
func (ca *CA) OCSPResponder(commonName string) *KeyPair {
	ca.tb.Helper()
	return ca.Issue(Options{CommonName: commonName, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}})
}

// Publisher is a CA's revocation service run by a test on 127.0.0.1: it
// serves the CA's current CRL at [Publisher.CRLURL] and answers OCSP
// requests at [Publisher.OCSPURL] from the same record of revocations.
// Safe for concurrent use.
type Publisher struct {
	ca  *CA
	srv *httptest.Server

	mu      sync.Mutex
	revoked []x509.RevocationListEntry
	unknown map[string]bool
	number  int64
	crl     []byte
	version int // changes with crl, for its ETag
	status  int // when not 0, every answer is this HTTP status
	// signer answers OCSP: the CA itself unless set.
	signerCert *x509.Certificate
	signerKey  crypto.Signer
	embed      bool
	nextUpdate time.Duration
	fetches    int
	served     chan struct{}
}

// Publisher starts the CA's revocation service, with an empty CRL valid
// for a day; it stops when the test ends.
func (ca *CA) Publisher() *Publisher {
	ca.tb.Helper()
	p := &Publisher{ca: ca, unknown: make(map[string]bool), nextUpdate: 24 * time.Hour, served: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /crl", p.serveCRL)
	mux.HandleFunc("POST /ocsp", p.serveOCSP)
	p.srv = httptest.NewServer(mux) // 127.0.0.1
	ca.tb.Cleanup(p.srv.Close)
	p.Publish()
	return p
}

// CRLURL is where the CRL is served.
func (p *Publisher) CRLURL() string { return p.srv.URL + "/crl" }

// OCSPURL is where OCSP requests are answered.
func (p *Publisher) OCSPURL() string { return p.srv.URL + "/ocsp" }

// Close stops the server: its URLs refuse connections from now on.
func (p *Publisher) Close() { p.srv.Close() }

// Revoke adds cert to the revoked certificates, revoked now for reason
// (a CRL reason code), and publishes a new CRL.
func (p *Publisher) Revoke(cert *x509.Certificate, reason int) {
	p.mu.Lock()
	p.revoked = append(p.revoked, x509.RevocationListEntry{SerialNumber: cert.SerialNumber, RevocationTime: time.Now().Add(-time.Second).UTC(), ReasonCode: reason})
	p.mu.Unlock()
	p.Publish()
}

// Publish signs and serves a new CRL of the revoked certificates, with
// the next CRL number, valid from now for the validity set by
// [Publisher.SetValidity] (a day by default).
func (p *Publisher) Publish() {
	p.ca.tb.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.number++
	now := time.Now()
	p.crl = p.ca.CRL(CRLOptions{Revoked: p.revoked, ThisUpdate: now, NextUpdate: now.Add(p.nextUpdate), Number: p.number})
	p.version++
}

// SetValidity sets the time from thisUpdate to nextUpdate of the CRLs and
// OCSP responses published from now on.
func (p *Publisher) SetValidity(d time.Duration) {
	p.mu.Lock()
	p.nextUpdate = d
	p.mu.Unlock()
}

// Serve serves der at the CRL URL instead of the CA's CRL, until the next
// Publish: a list signed by another CA, a stale one, garbage.
func (p *Publisher) Serve(der []byte) {
	p.mu.Lock()
	p.crl = der
	p.version++
	p.mu.Unlock()
}

// Fail makes every answer an HTTP status (503: the service is down); 0
// serves again.
func (p *Publisher) Fail(status int) {
	p.mu.Lock()
	p.status = status
	p.mu.Unlock()
}

// Unknown makes the OCSP responder answer "unknown" for cert.
func (p *Publisher) Unknown(cert *x509.Certificate) {
	p.mu.Lock()
	p.unknown[cert.SerialNumber.String()] = true
	p.mu.Unlock()
}

// SignOCSPWith makes a delegated responder (or any certificate, for a
// test of a bad one) sign the OCSP responses, which carry its certificate.
func (p *Publisher) SignOCSPWith(kp *KeyPair) {
	p.mu.Lock()
	p.signerCert, p.signerKey, p.embed = kp.Cert, kp.Key, true
	p.mu.Unlock()
}

// SignOCSPWithKey makes key sign the OCSP responses, which carry no
// certificate: as if the CA signed them, with another key.
func (p *Publisher) SignOCSPWithKey(key crypto.Signer) {
	p.mu.Lock()
	p.signerCert, p.signerKey, p.embed = p.ca.Cert, key, false
	p.mu.Unlock()
}

// Fetches is how many times the CRL was served.
func (p *Publisher) Fetches() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fetches
}

// Served returns a channel closed the next time the CRL is served.
func (p *Publisher) Served() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served
}

func (p *Publisher) serveCRL(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	status, body, etag := p.status, p.crl, fmt.Sprintf(`"%d"`, p.version)
	if status == 0 {
		p.fetches++
		close(p.served)
		p.served = make(chan struct{})
	}
	p.mu.Unlock()
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(body)
}

func (p *Publisher) serveOCSP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	status := p.status
	p.mu.Unlock()
	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := ocsp.ParseRequest(body)
	if err != nil {
		_, _ = w.Write(ocsp.MalformedRequestErrorResponse)
		return
	}
	now := time.Now()
	p.mu.Lock()
	tmpl := ocsp.Response{Status: ocsp.Good, SerialNumber: req.SerialNumber, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(p.nextUpdate)}
	for _, e := range p.revoked {
		if e.SerialNumber.Cmp(req.SerialNumber) == 0 {
			tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, e.RevocationTime, e.ReasonCode
		}
	}
	if p.unknown[req.SerialNumber.String()] {
		tmpl.Status = ocsp.Unknown
	}
	signerCert, signerKey := p.ca.Cert, p.ca.Key
	if p.signerCert != nil {
		signerCert, signerKey = p.signerCert, p.signerKey
	}
	if p.embed {
		tmpl.Certificate = signerCert
	}
	p.mu.Unlock()
	der, err := ocsp.CreateResponse(p.ca.Cert, signerCert, tmpl, signerKey)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	_, _ = w.Write(der)
}
