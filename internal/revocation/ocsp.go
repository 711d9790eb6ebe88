package revocation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// ocspEntry is the OCSP status of one certificate, kept while checks need
// it.
type ocspEntry struct {
	cert, issuer *x509.Certificate
	responder    string
	// source is Status.Source for its answers: "ocsp <responder>".
	source string
	// used is when a check last needed it (Unix seconds).
	used atomic.Int64
	// answer is what checks read.
	answer atomic.Pointer[ocspAnswer]

	// Guarded by Cache.mu.
	refreshAt time.Time
	failures  int
	inflight  bool
	last      *ocspAnswer // last verified answer, kept when a refresh fails
}

// ocspAnswer is one verified response, or why there is none. Immutable.
type ocspAnswer struct {
	tried bool
	// verified is set when a response verified; then result, reason,
	// revokedAt and until (when it stops being current) describe it.
	verified  bool
	result    Result
	reason    ReasonCode
	revokedAt time.Time
	until     time.Time
	// why is Status.Why when the answer is unknown, and whyStale when it
	// is past until.
	why, whyStale string
	// raw is the response as the responder sent it (DER), for stapling;
	// set when verified.
	raw []byte
}

// responderFor is where cert's OCSP status is asked: the configured
// responder, else the first http(s) responder its AIA names; "" when none.
func (ch *Checker) responderFor(cert *x509.Certificate) string {
	if ch.responder != "" {
		return ch.responder
	}
	for _, u := range cert.OCSPServer {
		if fetchable(u) {
			return u
		}
	}
	return ""
}

// Staple is the OCSP response the cache holds for cert, issued by issuer,
// as the responder sent it (DER), for a server to staple to its
// certificate (tls.Certificate.OCSPStaple): nil unless a response verified
// (signature, responder, thisUpdate) and is current now. Its status is
// returned too, Check's. As Check, it asks the responder in the background
// when nothing is held yet, and keeps the response refreshed while it is
// asked for. The checker must have OCSP on.
func (ch *Checker) Staple(cert, issuer *x509.Certificate, now time.Time) ([]byte, Status) {
	st := ch.cache.state.Load()
	s := ch.check(st, cert, issuer, now)
	if !ch.ocsp || cert == nil || issuer == nil || cert.SerialNumber == nil {
		return nil, s
	}
	var buf [serialBuf]byte
	e := st.ocsp[string(issuer.RawSubjectPublicKeyInfo)][string(serialKey(cert.SerialNumber, buf[:]))]
	if e == nil {
		return nil, s
	}
	if a := e.answer.Load(); a.verified && now.Before(a.until) {
		return a.raw, s
	}
	return nil, s
}

// askOCSP asks the control goroutine for cert's OCSP status; never blocks.
func (c *Cache) askOCSP(cert, issuer *x509.Certificate, responder string) {
	c.send(request{kind: askOCSP, cert: cert, issuer: issuer, responder: responder})
}

// addOCSPLocked makes an entry for the request; nil when there is one
// already or the bound is reached.
func (c *Cache) addOCSPLocked(r request, now time.Time) *ocspEntry {
	ikey := string(r.issuer.RawSubjectPublicKeyInfo)
	var buf [serialBuf]byte
	skey := string(serialKey(r.cert.SerialNumber, buf[:]))
	if _, ok := c.ocsp[ikey][skey]; ok || c.nOCSP >= c.opts.MaxOCSP {
		return nil
	}
	e := &ocspEntry{cert: r.cert, issuer: r.issuer, responder: r.responder, source: "ocsp " + r.responder, refreshAt: now}
	e.used.Store(now.Unix())
	e.answer.Store(&ocspAnswer{why: fmt.Sprintf("the OCSP responder %s has not been asked yet", r.responder)})
	if c.ocsp[ikey] == nil {
		c.ocsp[ikey] = make(map[string]*ocspEntry)
	}
	c.ocsp[ikey][skey] = e
	c.nOCSP++
	return e
}

// publishOCSPLocked publishes a copy of the OCSP index. The inner maps are
// copied too: the published ones are never written again.
func (c *Cache) publishOCSPLocked() {
	index := make(map[string]map[string]*ocspEntry, len(c.ocsp))
	for k, m := range c.ocsp {
		index[k] = maps.Clone(m)
	}
	c.publishLocked(func(st *state) { st.ocsp = index })
}

// dispatchLocked hands e to a worker; when all are busy and the queue is
// full, it is tried again at the next housekeeping.
func (c *Cache) dispatchLocked(e *ocspEntry) {
	if e.inflight {
		return
	}
	select {
	case c.ocspWork <- e:
		e.inflight = true
	default:
	}
}

// housekeepOCSPLocked forgets the entries no check needed since idle (Unix
// seconds) and refreshes those that are due.
func (c *Cache) housekeepOCSPLocked(now time.Time, idle int64) {
	removed := false
	for ikey, m := range c.ocsp {
		for skey, e := range m {
			if e.used.Load() < idle && !e.inflight {
				delete(m, skey)
				c.nOCSP--
				removed = true
				continue
			}
			if !now.Before(e.refreshAt) {
				c.dispatchLocked(e)
			}
		}
		if len(m) == 0 {
			delete(c.ocsp, ikey)
		}
	}
	if removed {
		c.publishOCSPLocked()
	}
}

func (c *Cache) ocspWorker() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case e := <-c.ocspWork:
			c.refreshOCSP(e)
		}
	}
}

// refreshOCSP asks e's responder once and publishes the answer.
func (c *Cache) refreshOCSP(e *ocspEntry) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.FetchTimeout)
	resp, err := queryOCSP(ctx, c.opts.HTTPClient, e.responder, e.cert, e.issuer)
	cancel()
	if c.ctx.Err() != nil {
		return
	}
	now := time.Now()
	if err == nil {
		err = checkOCSP(resp, e.issuer, now)
	}

	c.mu.Lock()
	e.inflight = false
	a := &ocspAnswer{tried: true}
	if err == nil {
		e.failures = 0
		a.verified = true
		a.raw = resp.Raw
		a.until = resp.NextUpdate
		if a.until.IsZero() {
			// "Newer information is always available": bounded here.
			a.until = now.Add(c.opts.MaxRefresh)
		}
		a.whyStale = fmt.Sprintf("the OCSP response of %s is stale: its nextUpdate %s has passed and no newer one could be fetched", e.responder, a.until.UTC().Format(time.RFC3339))
		switch resp.Status {
		case ocsp.Good:
			a.result = Good
		case ocsp.Revoked:
			a.result, a.reason, a.revokedAt = Revoked, ReasonCode(resp.RevocationReason), resp.RevokedAt
		default:
			a.result = Unknown
			a.why = fmt.Sprintf("the OCSP responder %s does not know this certificate (status unknown)", e.responder)
		}
		e.last = a
	} else {
		e.failures++
		if last := e.last; last != nil {
			// Keep the last verified answer; say why it was not renewed
			// once it goes stale.
			kept := *last
			kept.whyStale = last.whyStale + "; last request: " + err.Error()
			a = &kept
		} else {
			a.why = fmt.Sprintf("OCSP responder %s: %v", e.responder, err)
		}
	}
	var until time.Time
	if e.last != nil {
		until = e.last.until
	}
	e.refreshAt = now.Add(c.nextFetch(until, e.failures, now))
	e.answer.Store(a)
	c.publishLocked(nil) // wake whoever awaits this answer
	c.mu.Unlock()

	if c.opts.OnFetch != nil {
		c.opts.OnFetch(FetchEvent{Kind: "ocsp", Location: e.responder, Err: err, Duration: time.Since(start)})
	}
	if err != nil {
		c.log.Warn("revocation: OCSP request failed", "responder", e.responder, "serial", e.cert.SerialNumber.Text(16), "error", err.Error())
	}
}

// queryOCSP posts an OCSP request for cert to responder and parses the
// response, checking that it is about cert. The signature is checked by
// checkOCSP.
func queryOCSP(ctx context.Context, client *http.Client, responder string, cert, issuer *x509.Certificate) (*ocsp.Response, error) {
	body, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		return nil, fmt.Errorf("making OCSP request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, responder, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("making request: %w", err)
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	req.Header.Set("Accept", "application/ocsp-response")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("responder answered %s", resp.Status)
	}
	data, err := readLimited(resp.Body, defaultMaxOCSPBytes)
	if err != nil {
		return nil, err
	}
	// The issuer is not given here: x/crypto/ocsp would refuse a response
	// that embeds the issuer itself, and does not check a delegated
	// responder's key usage. checkOCSP does both.
	r, err := ocsp.ParseResponseForCert(data, cert, nil)
	if err != nil {
		return nil, fmt.Errorf("parsing OCSP response: %w", err)
	}
	return r, nil
}

// checkOCSP verifies that issuer signed r, itself or through a responder
// it delegated to (a certificate it issued with the OCSP signing extended
// key usage, valid now), and that r is current.
func checkOCSP(r *ocsp.Response, issuer *x509.Certificate, now time.Time) error {
	signer := issuer
	if d := r.Certificate; d != nil && !bytes.Equal(d.Raw, issuer.Raw) {
		if err := d.CheckSignatureFrom(issuer); err != nil {
			return fmt.Errorf("OCSP response is signed by %s, which the certificate's issuer %s did not issue: %w", describe(d), describe(issuer), err)
		}
		if !slices.Contains(d.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
			return fmt.Errorf("OCSP response is signed by %s, which lacks the OCSP signing extended key usage, so it may not answer for %s", describe(d), describe(issuer))
		}
		if now.Before(d.NotBefore) || now.After(d.NotAfter) {
			return fmt.Errorf("OCSP responder certificate %s is not valid now (valid %s to %s)", describe(d), d.NotBefore.UTC().Format(time.RFC3339), d.NotAfter.UTC().Format(time.RFC3339))
		}
		signer = d
	}
	if err := r.CheckSignatureFrom(signer); err != nil {
		return fmt.Errorf("OCSP response signature does not verify against %s: %w", describe(signer), err)
	}
	if r.ThisUpdate.After(now.Add(clockSkew)) {
		return fmt.Errorf("OCSP response thisUpdate %s is in the future: check the clocks of the responder and of this host", r.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if !r.NextUpdate.IsZero() && !now.Before(r.NextUpdate) {
		return fmt.Errorf("OCSP response is stale: its nextUpdate %s has passed", r.NextUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}
