package revocation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of [Options].
const (
	DefaultMaxRefresh     = 10 * time.Minute
	DefaultMinRefresh     = 10 * time.Second
	DefaultFetchTimeout   = 10 * time.Second
	DefaultMaxCRLBytes    = 10 << 20
	DefaultMaxSources     = 256
	DefaultMaxIssuers     = 1024
	DefaultMaxOCSP        = 10000
	DefaultIdle           = time.Hour
	DefaultOCSPWorkers    = 4
	defaultMaxOCSPBytes   = 64 << 10
	requestQueue          = 256
	maxBackoffDoublings   = 16
	refreshBeforeFraction = 0.9
)

// Options bound what a [Cache] fetches and holds. The zero value uses the
// defaults.
type Options struct {
	// MaxRefresh is the longest time between two fetches of the same CRL
	// or OCSP response, however far its nextUpdate is: how long a
	// revocation may go unseen. Default 10 minutes.
	MaxRefresh time.Duration
	// MinRefresh is the shortest time between two fetches of the same
	// source, and the first retry delay after a failure (doubled at each
	// failure, up to MaxRefresh). Default 10 seconds.
	MinRefresh time.Duration
	// FetchTimeout bounds one fetch: connection, request and body.
	// Default 10 seconds.
	FetchTimeout time.Duration
	// MaxCRLBytes bounds the size of a CRL. Default 10 MiB.
	MaxCRLBytes int64
	// MaxSources bounds the CRLs held (given and discovered); MaxIssuers
	// the CA certificates known; MaxOCSP the OCSP responses held. Beyond
	// them, a certificate that needs one more has an unknown status.
	MaxSources, MaxIssuers, MaxOCSP int
	// Idle is how long a CRL discovered from a distribution point, or an
	// OCSP response, is kept and refreshed after the last check that
	// needed it. Default an hour.
	Idle time.Duration
	// HTTPClient fetches CRLs and OCSP responses; by default a client of
	// its own that follows at most 3 redirects and uses the environment's
	// proxy settings.
	HTTPClient *http.Client
	// Logger receives one line per failed fetch, and per recovery.
	Logger *slog.Logger
	// OnFetch, when set, is called after every fetch, from the goroutine
	// that fetched; it must be quick and safe for concurrent use.
	OnFetch func(FetchEvent)
}

// FetchEvent describes one fetch of a CRL or an OCSP response.
type FetchEvent struct {
	// Kind is "crl" or "ocsp".
	Kind string
	// Location is the CRL's URL or file, or the OCSP responder's URL.
	Location string
	// Err is nil when the fetch gave a verified list or response (or the
	// server said the list is unchanged).
	Err      error
	Duration time.Duration
}

func (o Options) withDefaults() Options {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxRefresh, DefaultMaxRefresh)
	def(&o.MinRefresh, DefaultMinRefresh)
	def(&o.FetchTimeout, DefaultFetchTimeout)
	def(&o.Idle, DefaultIdle)
	o.MinRefresh = min(o.MinRefresh, o.MaxRefresh)
	if o.MaxCRLBytes <= 0 {
		o.MaxCRLBytes = DefaultMaxCRLBytes
	}
	if o.MaxSources <= 0 {
		o.MaxSources = DefaultMaxSources
	}
	if o.MaxIssuers <= 0 {
		o.MaxIssuers = DefaultMaxIssuers
	}
	if o.MaxOCSP <= 0 {
		o.MaxOCSP = DefaultMaxOCSP
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			CheckRedirect: func(_ *http.Request, via []*http.Request) error {
				if len(via) >= 3 {
					return errors.New("stopped after 3 redirects")
				}
				return nil
			},
		}
	}
	return o
}

// Cache fetches, verifies and holds CRLs and OCSP responses for the
// [Checker]s made from it, so that checkers naming the same CRL share one
// copy and one fetch. Its methods are safe for concurrent use.
type Cache struct {
	opts   Options
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// state is what checks read: replaced whole, never modified.
	state atomic.Pointer[state]
	// requests carry what checks found missing (a distribution point, an
	// issuer, an OCSP response) to the control goroutine; a check never
	// blocks on it.
	requests chan request
	ocspWork chan *ocspEntry

	mu      sync.Mutex
	closed  bool
	sources map[string]*source
	issuers map[string]*x509.Certificate
	ocsp    map[string]map[string]*ocspEntry
	nOCSP   int
}

// state is one immutable generation of what the cache holds.
type state struct {
	lists map[string]*view
	// issuers holds the keys of the CAs known, to tell a check that a new
	// one must be learnt.
	issuers map[string]struct{}
	// ocsp holds the responses by issuer key, then serial key.
	ocsp map[string]map[string]*ocspEntry
	// changed is closed when a newer state replaces this one.
	changed chan struct{}
	// generation counts the states, from 1.
	generation uint64
}

// view is one CRL source as checks see it. Immutable.
type view struct {
	location string
	// tried is set once a fetch has completed, successfully or not.
	tried bool
	// list is the last list that verified; nil when none did.
	list *list
	// why is Status.Why when there is no list, and whyStale when the list
	// is stale (the staleness and the last failure).
	why, whyStale string
	// src is set for sources discovered from distribution points, which
	// are kept while checks use them.
	src *source
}

// source is one CRL location being fetched by a goroutine of its own.
type source struct {
	location string
	kick     chan struct{}
	stop     chan struct{}
	// used is when a check last needed it (Unix seconds), for discovered
	// sources.
	used atomic.Int64

	// Guarded by Cache.mu.
	refs       int  // checkers that name it
	discovered bool // a certificate names it as a distribution point
	tried      bool
	list       *list
	pending    pendingCRL // fetched, issued by a CA not known yet
	failures   int
	lastErr    error

	// Only its goroutine.
	validators validators
}

type pendingCRL struct {
	crl *x509.RevocationList
	at  time.Time
}

type requestKind uint8

const (
	learnIssuer requestKind = iota
	discoverPoint
	askOCSP
)

type request struct {
	kind      requestKind
	location  string
	cert      *x509.Certificate
	issuer    *x509.Certificate
	responder string
}

// NewCache starts a cache. Close stops its goroutines.
func NewCache(opts Options) *Cache {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		opts:     opts,
		log:      opts.Logger,
		ctx:      ctx,
		cancel:   cancel,
		requests: make(chan request, requestQueue),
		ocspWork: make(chan *ocspEntry, requestQueue),
		sources:  make(map[string]*source),
		issuers:  make(map[string]*x509.Certificate),
		ocsp:     make(map[string]map[string]*ocspEntry),
	}
	c.state.Store(&state{changed: make(chan struct{}), generation: 1})
	c.wg.Add(1 + DefaultOCSPWorkers)
	go c.control()
	for range DefaultOCSPWorkers {
		go c.ocspWorker()
	}
	return c
}

// Close stops every fetch and waits for the goroutines to end. Checks keep
// answering from what is held, and nothing is refreshed any more.
func (c *Cache) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// Refresh asks for every CRL to be fetched again now, without waiting for
// it (a fetch in progress is not repeated).
func (c *Cache) Refresh() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.sources {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Changed returns a channel closed when what the cache holds next changes:
// a fetch completed, a source was added or removed.
func (c *Cache) Changed() <-chan struct{} { return c.state.Load().changed }

// Generation identifies what the cache holds now; it changes whenever
// Changed's channel is closed. A status found at one generation stays
// true while the generation is the same, except that a good one expires
// at its [Status.Until]: a caller may keep it that long.
func (c *Cache) Generation() uint64 { return c.state.Load().generation }

// ListStatus describes one CRL source, for status pages and metrics.
type ListStatus struct {
	Location string
	// Discovered is set for a distribution point named by a certificate;
	// otherwise a checker names the location.
	Discovered bool
	// Fetched is set once a fetch has completed, successfully or not.
	Fetched bool
	// Issuer, ThisUpdate, NextUpdate and Revoked describe the last list
	// that verified; zero when none did.
	Issuer                 string
	ThisUpdate, NextUpdate time.Time
	Revoked                int
	// Err is why the last fetch failed; empty when it succeeded.
	Err string
}

// Current reports whether the list is verified and not past nextUpdate.
func (s ListStatus) Current(now time.Time) bool {
	return !s.NextUpdate.IsZero() && now.Before(s.NextUpdate)
}

// Lists describes every CRL source held.
func (c *Cache) Lists() []ListStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ListStatus, 0, len(c.sources))
	for _, s := range c.sources {
		ls := ListStatus{Location: s.location, Discovered: s.discovered && s.refs == 0, Fetched: s.tried}
		if s.lastErr != nil {
			ls.Err = s.lastErr.Error()
		}
		if l := s.list; l != nil {
			ls.Issuer, ls.ThisUpdate, ls.NextUpdate, ls.Revoked = l.issuerName, l.thisUpdate, l.nextUpdate, len(l.revoked)
		}
		out = append(out, ls)
	}
	return out
}

// OCSPResponses is the number of OCSP responses held (or being asked for).
func (c *Cache) OCSPResponses() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nOCSP
}

// publishLocked replaces the state with a copy that mod changes, and
// wakes whoever waits for a change. c.mu must be held.
func (c *Cache) publishLocked(mod func(*state)) {
	old := c.state.Load()
	next := &state{lists: old.lists, issuers: old.issuers, ocsp: old.ocsp, changed: make(chan struct{}), generation: old.generation + 1}
	if mod != nil {
		mod(next)
	}
	c.state.Store(next)
	close(old.changed)
}

// setViewLocked publishes s's view as it is now.
func (c *Cache) setViewLocked(s *source) {
	v := viewOf(s)
	c.publishLocked(func(st *state) { st.lists = withView(st.lists, v) })
}

// viewOf is s as checks see it. c.mu is held.
func viewOf(s *source) *view {
	v := &view{location: s.location, tried: s.tried, list: s.list}
	if s.discovered {
		v.src = s
	}
	switch {
	case !s.tried:
		v.why = fmt.Sprintf("CRL %s has not been fetched yet", s.location)
	case s.lastErr != nil:
		v.why = fmt.Sprintf("CRL %s: %v", s.location, s.lastErr)
	}
	if s.list != nil {
		v.whyStale = s.list.staleWhy
		if s.lastErr != nil {
			v.whyStale += "; last fetch: " + s.lastErr.Error()
		}
	}
	return v
}

// sameView reports whether two views of a source tell checks the same.
func sameView(a, b *view) bool {
	return a != nil && b != nil && a.tried == b.tried && a.list == b.list && a.why == b.why && a.whyStale == b.whyStale && a.src == b.src
}

// withView is a copy of lists with vs set.
func withView(lists map[string]*view, vs ...*view) map[string]*view {
	out := make(map[string]*view, len(lists)+len(vs))
	maps.Copy(out, lists)
	for _, v := range vs {
		out[v.location] = v
	}
	return out
}

// addSourceLocked starts fetching location; nil when the bound is
// reached. c.mu must be held.
func (c *Cache) addSourceLocked(location string) *source {
	if s := c.sources[location]; s != nil {
		return s
	}
	if len(c.sources) >= c.opts.MaxSources || c.closed {
		return nil
	}
	s := &source{location: location, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	c.sources[location] = s
	c.setViewLocked(s)
	c.wg.Add(1)
	go c.run(s)
	return s
}

// removeSourceLocked stops fetching s and forgets its list.
func (c *Cache) removeSourceLocked(s *source) {
	delete(c.sources, s.location)
	close(s.stop)
	c.publishLocked(func(st *state) {
		st.lists = maps.Clone(st.lists)
		delete(st.lists, s.location)
	})
}

// addIssuerLocked makes issuer known, and verifies the CRLs that were
// waiting for it; both are published together, so that a check never sees
// the issuer known and its list still waiting. It reports whether anything
// changed.
func (c *Cache) addIssuerLocked(issuer *x509.Certificate) bool {
	key := string(issuer.RawSubjectPublicKeyInfo)
	if _, ok := c.issuers[key]; ok || len(c.issuers) >= c.opts.MaxIssuers {
		return false
	}
	c.issuers[key] = issuer
	var views []*view
	for _, s := range c.sources {
		if s.pending.crl != nil && issuedBy(s.pending.crl, issuer) {
			s.lastErr = c.installLocked(s, s.pending.crl, s.pending.at)
			if s.lastErr == nil {
				s.failures = 0
			}
			views = append(views, viewOf(s))
		}
	}
	c.publishLocked(func(st *state) {
		st.issuers = maps.Clone(st.issuers)
		if st.issuers == nil {
			st.issuers = make(map[string]struct{})
		}
		st.issuers[key] = struct{}{}
		if len(views) > 0 {
			st.lists = withView(st.lists, views...)
		}
	})
	return true
}

// run fetches s until it is removed or the cache closes.
func (c *Cache) run(s *source) {
	defer c.wg.Done()
	for {
		wait := c.fetch(s)
		t := time.NewTimer(wait)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-s.stop:
			t.Stop()
			return
		case <-s.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// fetch reads s once and installs what it read; it returns how long to
// wait before the next fetch.
func (c *Cache) fetch(s *source) time.Duration {
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.FetchTimeout)
	data, v, err := fetchCRL(ctx, c.opts.HTTPClient, s.location, c.opts.MaxCRLBytes, s.validators)
	cancel()
	if c.ctx.Err() != nil {
		return time.Hour // closing: the caller returns
	}
	notModified := errors.Is(err, errNotModified)
	var crl *x509.RevocationList
	if err == nil {
		crl, err = decodeCRL(data)
	}
	now := time.Now()

	c.mu.Lock()
	if c.sources[s.location] != s {
		// Removed while it was being fetched: its stop channel ends run.
		c.mu.Unlock()
		return time.Hour
	}
	hadErr := s.lastErr != nil
	switch {
	case notModified:
		err = nil
	case err == nil:
		err = c.installLocked(s, crl, now)
	}
	if err == nil {
		s.validators, s.failures = v, 0
	} else {
		s.validators = validators{}
		s.failures++
	}
	s.tried, s.lastErr = true, err
	if v := viewOf(s); !sameView(c.state.Load().lists[s.location], v) {
		// Unchanged (a 304, the same failure again): no new generation,
		// so that what checks cached stays valid.
		c.publishLocked(func(st *state) { st.lists = withView(st.lists, v) })
	}
	var until time.Time
	if s.list != nil {
		until = s.list.nextUpdate
	}
	wait := c.nextFetch(until, s.failures, now)
	c.mu.Unlock()

	if c.opts.OnFetch != nil {
		c.opts.OnFetch(FetchEvent{Kind: "crl", Location: s.location, Err: err, Duration: time.Since(start)})
	}
	switch {
	case err != nil:
		c.log.Warn("revocation: fetching CRL failed", "crl", s.location, "error", err.Error(), "retry_in", wait.Round(time.Second).String())
	case hadErr:
		c.log.Info("revocation: CRL fetched again", "crl", s.location)
	}
	return wait
}

// installLocked verifies crl against a known CA that it names as issuer
// and makes it s's list. A CRL whose issuer is not known yet is kept
// pending until a check names that CA.
func (c *Cache) installLocked(s *source, crl *x509.RevocationList, now time.Time) error {
	s.pending = pendingCRL{}
	var firstErr error
	for _, issuer := range c.issuers {
		if !issuedBy(crl, issuer) {
			continue
		}
		sc, err := verifyCRL(crl, issuer, now)
		if err == nil && s.list != nil && s.list.issuerKey == string(issuer.RawSubjectPublicKeyInfo) {
			err = s.list.newer(crl)
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		s.list = newList(s.location, crl, issuer, sc, now.Add(c.opts.MaxRefresh))
		return nil
	}
	if firstErr != nil {
		return firstErr
	}
	s.pending = pendingCRL{crl: crl, at: now}
	return fmt.Errorf("CRL is issued by %q, which is none of the CAs this checker knows: add that CA to the trusted CAs, or give the CRL of a trusted CA", crl.Issuer.String())
}

// nextFetch is the wait before fetching a source again: before until,
// when the list or response held stops being current (at most
// MaxRefresh), or after a failure, or with nothing current held, a backoff
// from MinRefresh. Jittered so that nodes drift apart.
func (c *Cache) nextFetch(until time.Time, failures int, now time.Time) time.Duration {
	var wait time.Duration
	if failures > 0 || !now.Before(until) {
		n := min(max(failures, 1), maxBackoffDoublings)
		wait = min(c.opts.MinRefresh<<(n-1), c.opts.MaxRefresh)
	} else {
		wait = min(time.Duration(float64(until.Sub(now))*refreshBeforeFraction), c.opts.MaxRefresh)
	}
	wait -= time.Duration(rand.Int64N(int64(wait)/10 + 1))
	return max(wait, c.opts.MinRefresh)
}

// learn asks the control goroutine to make issuer known; never blocks.
func (c *Cache) learn(issuer *x509.Certificate) {
	c.send(request{kind: learnIssuer, issuer: issuer})
}

// discover asks for location to be fetched as a CRL of issuer's; never
// blocks.
func (c *Cache) discover(location string, issuer *x509.Certificate) {
	c.send(request{kind: discoverPoint, location: location, issuer: issuer})
}

func (c *Cache) send(r request) {
	select {
	case c.requests <- r:
	default:
		// Full: the check that needs it asks again.
	}
}

// control serves requests from checks, and every MinRefresh schedules
// OCSP refreshes and forgets what is idle.
func (c *Cache) control() {
	defer c.wg.Done()
	tick := time.NewTicker(c.opts.MinRefresh)
	defer tick.Stop()
	batch := make([]request, 0, requestQueue)
	for {
		select {
		case <-c.ctx.Done():
			return
		case r := <-c.requests:
			batch = append(batch[:0], r)
		drain:
			for len(batch) < cap(batch) {
				select {
				case r := <-c.requests:
					batch = append(batch, r)
				default:
					break drain
				}
			}
			c.serve(batch)
			clear(batch)
		case now := <-tick.C:
			c.housekeep(now)
		}
	}
}

func (c *Cache) serve(batch []request) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	var added []*ocspEntry
	for _, r := range batch {
		switch r.kind {
		case learnIssuer:
			c.addIssuerLocked(r.issuer)
		case discoverPoint:
			c.addIssuerLocked(r.issuer)
			if s := c.addSourceLocked(r.location); s != nil {
				s.used.Store(now.Unix())
				if !s.discovered {
					s.discovered = true
					c.setViewLocked(s)
				}
			}
		case askOCSP:
			if e := c.addOCSPLocked(r, now); e != nil {
				added = append(added, e)
			}
		}
	}
	if len(added) > 0 {
		c.publishOCSPLocked()
		for _, e := range added {
			c.dispatchLocked(e)
		}
	}
}

// housekeep forgets discovered CRLs and OCSP responses that no check has
// needed for Idle, and starts the OCSP refreshes that are due.
func (c *Cache) housekeep(now time.Time) {
	idle := now.Add(-c.opts.Idle).Unix()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	for _, s := range c.sources {
		if s.discovered && s.refs == 0 && s.used.Load() < idle {
			c.removeSourceLocked(s)
		}
	}
	c.housekeepOCSPLocked(now, idle)
}
