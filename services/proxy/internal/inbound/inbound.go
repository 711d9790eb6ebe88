// Package inbound serves a node's Listeners: one HTTPS server per Listener
// address (HTTP/1.1 and HTTP/2 by ALPN), all serving the node's proxy
// handler.
//
// Each accepted connection is handshaken in a goroutine of its own, bounded
// by ReadHeaderTimeout, then served in the same goroutine: by package h2
// when it negotiated h2, by package h1 otherwise (with no background
// read). Options.NetHTTP1 and NetHTTP2 hand either to net/http's server
// instead.
//
// Each server's tls.Config has only GetConfigForClient, which loads the
// Listener's current snapshot (one atomic load) and returns the prebuilt
// *tls.Config of the host the client's SNI names. A change to a Listener
// whose address stays builds a new snapshot and swaps it in: new handshakes
// get the new material, open connections keep theirs, nothing restarts. A
// new address is bound first; the old server drains afterwards.
//
// Sockets are bound with SO_REUSEPORT, so several nodes on one machine
// serve the same address.
package inbound

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/telemetry"
	"keyway.dev/proxy/internal/inbound/h1"
	"keyway.dev/proxy/internal/inbound/h2"
)

// DefaultMaxHeaderBytes is the request header limit of every inbound
// server when none is configured: 64 KiB, near Envoy's 60 KiB and far
// below net/http's own 1 MiB.
const DefaultMaxHeaderBytes = 64 << 10

// Options configure a [Manager].
type Options struct {
	// Handler serves every request on every Listener. Required.
	Handler http.Handler
	// ShutdownTimeout bounds the drain of a Listener that is removed or
	// moves to another address: its requests still in flight then are cut
	// off. Default 15s.
	ShutdownTimeout time.Duration
	// ReadHeaderTimeout bounds the TLS handshake and the request headers.
	// Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections. Default 2m.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header block, for HTTP/1.1 (431
	// beyond it) and HTTP/2 (advertised as SETTINGS_MAX_HEADER_LIST_SIZE;
	// a larger header list is answered 431). net/http allows 4 KiB of
	// slack over it. Default [DefaultMaxHeaderBytes].
	MaxHeaderBytes int
	// Handshakes counts every Listener's handshakes, by outcome; nil
	// counts nothing.
	Handshakes HandshakeObserver
	// ClientChains counts the client chain verifications, by whether a
	// verified chain was reused; nil counts nothing.
	ClientChains ChainObserver
	// Tracing, when on, records each connection's handshake
	// ([telemetry.SpanInboundHandshake]).
	Tracing telemetry.Tracing
	Logger  *slog.Logger
	// Revocation bounds the fetching of CRLs and OCSP responses for the
	// hosts that check client certificates for revocation: the manager
	// holds them in one cache, made when a host first needs it, and
	// shared with the node's Upstreams ([Manager.RevocationCache]).
	Revocation revocation.Options
	// RevocationChecks counts revocation checks; nil counts nothing.
	RevocationChecks RevocationObserver
	// RevocationWait bounds how long a handshake waits for the first
	// fetch of a CRL or OCSP response its client certificate needs.
	// Default [DefaultRevocationWait].
	RevocationWait time.Duration
	// NoStapling serves Listener certificates without their OCSP
	// response, even when they name a responder.
	NoStapling bool
	// NetHTTP1 serves HTTP/1.1 with net/http's server instead of
	// package h1's loop: the way back, should the loop misbehave.
	NetHTTP1 bool
	// NetHTTP2 serves HTTP/2 with net/http's server instead of package
	// h2's: the way back, should it misbehave.
	NetHTTP2 bool
}

// Manager serves the Listeners it is given. Apply, Close, Status and Addr
// are safe for concurrent use.
type Manager struct {
	opts Options
	log  *slog.Logger
	lc   net.ListenConfig
	// revocation holds the CRLs and OCSP responses of every host; nil
	// until a host checks revocation. Guarded by mu.
	revocation *revocation.Cache

	mu      sync.Mutex
	servers map[string]*server // serving, by Listener name
	// failed are the Listeners, by name, whose last Apply could not be
	// served as given; a server of the same name, if any, keeps serving
	// what it served before.
	failed map[string]refusal
	closed bool

	// drainCtx is the parent of every drain; Close cancels it when its ctx
	// ends.
	drainCtx    context.Context
	drainCancel context.CancelFunc
	drains      sync.WaitGroup
}

type refusal struct {
	listener *model.Listener
	err      error
}

// server is one bound address serving one Listener.
type server struct {
	name     string
	address  string // as configured
	log      *slog.Logger
	observer HandshakeObserver
	tracing  telemetry.Tracing
	ln       net.Listener
	// h1 serves HTTP/1.1 and h2 HTTP/2. srv is the configuration both
	// read (h2 reads it as net/http's HTTP/2 server does); with
	// Options.NetHTTP1 or NetHTTP2 it serves the connections handed to
	// it through h2ln.
	srv      *http.Server
	h2ln     *connListener
	h1       *h1.Server
	h2       *h2.Server
	netHTTP1 bool
	netHTTP2 bool
	// readHeaderTimeout bounds each handshake.
	readHeaderTimeout time.Duration
	// accepting is closed when the accept loop has returned.
	accepting chan struct{}
	// mu guards pending, settled and cut.
	mu sync.Mutex
	// pending are the connections accepted and not yet taken in by the
	// server of their protocol: handshaking, or handed over and not yet
	// tracked (h1) or registered (h2) there. A drain waits for them, so
	// that the Shutdown after it reaches every connection: h1 serves a
	// request already sent, h2 sends GOAWAY.
	pending map[*conn]struct{}
	// settled, once a drain waits, is closed when pending empties.
	settled chan struct{}
	// cut is set when a drain gave up waiting and closed what was
	// pending: those handshakes are not counted as failures.
	cut   bool
	since time.Time
	snap  atomic.Pointer[snapshot]
	done  chan struct{}
	err   atomic.Pointer[error] // why Serve stopped, if not by Shutdown
}

// New returns a manager serving no Listener yet.
func New(opts Options) *Manager {
	opts.ShutdownTimeout = cmp.Or(opts.ShutdownTimeout, 15*time.Second)
	opts.ReadHeaderTimeout = cmp.Or(opts.ReadHeaderTimeout, 10*time.Second)
	opts.IdleTimeout = cmp.Or(opts.IdleTimeout, 2*time.Minute)
	opts.MaxHeaderBytes = cmp.Or(opts.MaxHeaderBytes, DefaultMaxHeaderBytes)
	opts.RevocationWait = cmp.Or(opts.RevocationWait, DefaultRevocationWait)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		opts: opts, log: opts.Logger,
		lc:      net.ListenConfig{Control: reusePort},
		servers: make(map[string]*server),
		failed:  make(map[string]refusal),
	}
	if m.opts.Revocation.Logger == nil {
		m.opts.Revocation.Logger = opts.Logger
	}
	m.drainCtx, m.drainCancel = context.WithCancel(context.Background())
	return m
}

// Apply makes the Listeners served exactly those given, and returns, by
// Listener name, those it could not serve as given (their TLS does not
// build, their address cannot be bound or is another Listener's). The
// others are served regardless.
//
// A Listener whose address is unchanged gets its new snapshot swapped in
// (when the *model.Listener differs from the one served). A new Listener
// is bound and served. A Listener that moved is bound at its new address
// first, then its old server drains; when the new address cannot be bound,
// the old server keeps serving the previous configuration. Removed
// Listeners drain, in the background, for at most Options.ShutdownTimeout.
// A Listener refused by one Apply is tried again by the next.
//
// After Close, Apply does nothing.
func (m *Manager) Apply(listeners []*model.Listener) map[string]error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	want := make(map[string]*model.Listener, len(listeners))
	for _, l := range listeners {
		want[l.Name] = l
	}
	// Addresses go first to the servers that keep theirs, then by name.
	order := slices.Sorted(maps.Keys(want))
	slices.SortStableFunc(order, func(a, b string) int {
		return cmpBool(m.keeps(want[a]), m.keeps(want[b]))
	})
	claimed := make(map[string]string) // address → Listener name
	failed := make(map[string]refusal)
	var retire []*server
	for _, name := range order {
		l := want[name]
		fail := func(err error) {
			failed[name] = refusal{listener: l, err: err}
			if prev, ok := m.failed[name]; !ok || prev.listener != l || prev.err.Error() != err.Error() {
				m.log.Error("cannot serve listener; keeping what it served before, if anything", "listener", name, "address", l.Address, "error", err)
			}
		}
		if other, ok := claimed[l.Address]; ok {
			fail(fmt.Errorf("inbound: address %s is already listener %q's", l.Address, other))
			continue
		}
		claimed[l.Address] = name
		cur := m.servers[name]
		if cur != nil && cur.address == l.Address && cur.snap.Load().listener == l {
			continue // unchanged
		}
		staples := m.newStaple
		if m.opts.NoStapling {
			staples = nil
		}
		snap, err := buildSnapshot(l, m.newHostRevocation, staples, m.opts.ClientChains)
		if err != nil {
			fail(err)
			continue
		}
		snap.startStapling(m.revocation)
		if cur != nil && cur.address == l.Address {
			// Requests on open connections judge by the current
			// snapshot: the old one's checkers are no longer asked.
			cur.snap.Swap(snap).close()
			m.log.Info("listener updated", "listener", name, "address", l.Address, "hosts", len(l.Hosts))
			continue
		}
		s, err := m.start(name, l.Address, snap)
		if err != nil {
			snap.close()
			fail(err)
			continue
		}
		m.servers[name] = s
		if cur != nil {
			retire = append(retire, cur)
		}
	}
	for name, s := range m.servers {
		if want[name] == nil {
			delete(m.servers, name)
			retire = append(retire, s)
		}
	}
	m.failed = failed
	for _, s := range retire {
		m.log.Info("draining listener", "listener", s.name, "address", s.address)
		m.drain(s)
	}
	errs := make(map[string]error, len(failed))
	for name, f := range failed {
		errs[name] = f.err
	}
	return errs
}

// keeps reports whether l is served at its address already.
func (m *Manager) keeps(l *model.Listener) bool {
	s := m.servers[l.Name]
	return s != nil && s.address == l.Address
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

// start binds address and serves snap there.
func (m *Manager) start(name, address string, snap *snapshot) (*server, error) {
	ln, err := m.lc.Listen(context.Background(), "tcp", address)
	if err != nil {
		return nil, fmt.Errorf("inbound: listening on %s: %w", address, err)
	}
	s := &server{name: name, address: address, log: m.log, observer: m.opts.Handshakes, tracing: m.opts.Tracing, ln: ln, since: time.Now(), done: make(chan struct{}),
		netHTTP1: m.opts.NetHTTP1, netHTTP2: m.opts.NetHTTP2, readHeaderTimeout: m.opts.ReadHeaderTimeout, pending: make(map[*conn]struct{}), accepting: make(chan struct{})}
	s.snap.Store(snap)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	// Only the callback: the material is the snapshot's, chosen per
	// handshake. NextProtos is only there so that Serve sets up HTTP/2
	// (it does when the server's config names h2); each host's config
	// has its own.
	tlsConfig := &tls.Config{GetConfigForClient: s.configForClient, NextProtos: model.DefaultALPN()}
	errorLog := log.New(handshakeLog{m.log.With("listener", name)}, "", 0)
	s.srv = &http.Server{
		Handler:           m.opts.Handler,
		TLSConfig:         tlsConfig,
		Protocols:         protocols,
		ReadHeaderTimeout: m.opts.ReadHeaderTimeout,
		IdleTimeout:       m.opts.IdleTimeout,
		MaxHeaderBytes:    m.opts.MaxHeaderBytes,
		// The connection, for the handler's per-request client checks
		// (ClientOf).
		ConnContext: connContext,
		ConnState:   s.connState, // for what it serves through h2ln
		ErrorLog:    errorLog,
	}
	s.h1 = &h1.Server{
		Handler:           m.opts.Handler,
		ReadHeaderTimeout: m.opts.ReadHeaderTimeout,
		IdleTimeout:       m.opts.IdleTimeout,
		MaxHeaderBytes:    m.opts.MaxHeaderBytes,
		// Called once h1 tracks the connection.
		ConnContext: func(ctx context.Context, nc net.Conn) context.Context {
			if c := connOf(nc); c != nil {
				s.taken(c)
			}
			return connContext(ctx, nc)
		},
		ErrorLog: errorLog,
	}
	s.h2 = new(h2.Server)
	s.h2ln = newConnListener(ln.Addr())
	var serving sync.WaitGroup
	serving.Go(func() {
		// The connections handed over are handshaken already: Serve
		// finds their protocol and serves it.
		if err := s.srv.Serve(s.h2ln); !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("listener stopped serving HTTP/2", "listener", name, "address", address, "error", err)
		}
	})
	serving.Go(func() { s.accept(tlsConfig) })
	go func() {
		serving.Wait()
		close(s.done)
	}()
	m.log.Info("listener serving", "listener", name, "address", ln.Addr().String(), "hosts", len(snap.listener.Hosts))
	return s, nil
}

// accept accepts connections until the listener is closed, each pending
// and served in a goroutine of its own; temporary errors (too many open
// files) are retried after a pause, as net/http's server does.
func (s *server) accept(cfg *tls.Config) {
	defer close(s.accepting)
	var delay time.Duration
	for {
		raw, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Temporary() { //nolint:staticcheck // net/http's test for EMFILE and the like
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("inbound: accepting a connection; retrying", "listener", s.name, "error", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			err = fmt.Errorf("inbound: serving on %s: %w", s.address, err)
			s.err.Store(&err)
			s.log.Error("listener stopped serving", "listener", s.name, "address", s.address, "error", err)
			return
		}
		delay = 0
		c := &conn{Conn: raw, srv: s, start: time.Now()}
		if s.tracing.Tracer != nil {
			c.accepted = c.start
		}
		c.tls = tls.Server(c, cfg)
		s.mu.Lock()
		s.pending[c] = struct{}{}
		s.mu.Unlock()
		go s.serve(c)
	}
}

// serve handshakes c, counts the outcome, and serves the connection: h2
// by net/http's server, anything else by h1 (or net/http's server with
// Options.NetHTTP1). A drain under way does not stop it: c was accepted
// before the listener closed, and its client is owed an answer.
func (s *server) serve(c *conn) {
	err := s.handshake(c)
	s.mu.Lock()
	cut := s.cut
	c.handshook = true
	s.mu.Unlock()
	if err == nil {
		_ = c.SetDeadline(time.Time{})
	}
	if !cut {
		s.observe(c, err)
	}
	if err != nil {
		s.taken(c)
		_ = c.tls.Close()
		return
	}
	h2c := c.tls.ConnectionState().NegotiatedProtocol == "h2"
	switch {
	case h2c && !s.netHTTP2:
		// s.srv is the configuration (timeouts, header limit, error
		// log); its server context and the connection's local address
		// are set by ServeConn.
		s.h2.ServeConn(c.tls, &h2.ServeConnOpts{
			Context: connContext(context.Background(), c.tls), BaseConfig: s.srv, Handler: s.srv.Handler,
			Registered: func() { s.taken(c) },
		})
		s.taken(c) // when it never was
		return
	case h2c, s.netHTTP1:
		c.viaNetHTTP2 = h2c
		if !s.h2ln.hand(c.tls) {
			s.taken(c)
		}
		return
	}
	// The server's context key is for handlers that act differently
	// under a server (the forwarding path aborts a response it cannot
	// finish).
	ctx := context.WithValue(context.Background(), http.ServerContextKey, s.srv)
	_ = s.h1.ServeConn(ctx, c.tls)
	s.taken(c) // when ServeConn refused it
}

// handshake runs c's TLS handshake within ReadHeaderTimeout (as
// net/http's server bounds it), leaving the deadline set. A client that
// speaks plain HTTP gets net/http's 400.
func (s *server) handshake(c *conn) error {
	if d := s.readHeaderTimeout; d > 0 {
		_ = c.SetDeadline(time.Now().Add(d))
	}
	err := c.tls.Handshake()
	if err != nil {
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		return err
	}
	return nil
}

// looksLikeHTTP is net/http's test of a TLS record header that is the
// start of a plain HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// taken removes c from pending: its protocol's server has it, or it is
// closed.
func (s *server) taken(c *conn) {
	if c.taken.Swap(true) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, c)
	if len(s.pending) == 0 && s.settled != nil {
		close(s.settled)
		s.settled = nil
	}
}

// connState is net/http's ConnState hook: a connection it serves is taken
// in when net/http tracks it (StateNew), or, for h2, when its h2 server
// has registered it (its first StateActive, after the client's preface):
// only a registered connection gets the GOAWAY of a Shutdown.
func (s *server) connState(nc net.Conn, st http.ConnState) {
	c := connOf(nc)
	if c == nil || c.taken.Load() {
		return
	}
	if st == http.StateNew && c.viaNetHTTP2 {
		return
	}
	s.taken(c)
}

// handshakeGrace bounds, once a drain has begun, the handshake of a
// connection accepted before it, from its accept (within
// ReadHeaderTimeout): net/http's grace for a connection that has sent no
// request yet. A client that connects and sends nothing holds a drain no
// longer than that.
var handshakeGrace = 5 * time.Second

// settle waits, after the accept loop has returned, until every pending
// connection is taken in, or until ctx ends: then it closes those left.
// Handshakes under way get handshakeGrace from their accept.
func (s *server) settle(ctx context.Context) {
	select {
	case <-s.accepting:
	case <-ctx.Done():
	}
	s.mu.Lock()
	var settled chan struct{}
	if len(s.pending) > 0 {
		settled = make(chan struct{})
		s.settled = settled
	}
	for c := range s.pending {
		if !c.handshook && (s.readHeaderTimeout <= 0 || handshakeGrace < s.readHeaderTimeout) {
			_ = c.SetDeadline(c.start.Add(handshakeGrace))
		}
	}
	s.mu.Unlock()
	if settled == nil {
		return
	}
	select {
	case <-settled:
	case <-ctx.Done():
		s.mu.Lock()
		s.cut = true
		for c := range s.pending {
			c.Close()
		}
		s.mu.Unlock()
	}
}

// configForClient is the server's GetConfigForClient: one atomic load and
// at most two map lookups; it notes on the connection which host served it.
func (s *server) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	h := s.snap.Load().hostFor(hello.ServerName)
	if c, ok := hello.Conn.(*conn); ok {
		c.handshakeHost.Store(h)
	}
	return h.cfg, nil
}

// drain shuts s down in the background: for at most ShutdownTimeout, or
// until Close gives up.
func (m *Manager) drain(s *server) {
	m.drains.Go(func() {
		ctx, cancel := context.WithTimeout(m.drainCtx, m.opts.ShutdownTimeout)
		defer cancel()
		s.ln.Close()
		s.settle(ctx)
		var wg sync.WaitGroup
		var h1Err, h2Err, srvErr error
		wg.Go(func() { h1Err = s.h1.Shutdown(ctx) })
		wg.Go(func() { h2Err = s.h2.Shutdown(ctx) })
		wg.Go(func() { srvErr = s.srv.Shutdown(ctx) })
		wg.Wait()
		if err := cmp.Or(h1Err, h2Err, srvErr); err != nil {
			m.log.Warn("requests still in flight on a drained listener; cutting them off", "listener", s.name, "address", s.address, "error", err)
			_ = s.h1.Close()
			s.h2.Close()
			s.srv.Close()
		}
		<-s.done
		s.snap.Load().close()
	})
}

// Close drains every Listener and waits for the drains, including those of
// earlier Applies: for at most Options.ShutdownTimeout each, and no longer
// than ctx, after which the connections left are closed.
func (m *Manager) Close(ctx context.Context) {
	stop := context.AfterFunc(ctx, m.drainCancel)
	defer stop()
	m.mu.Lock()
	m.closed = true
	for name, s := range m.servers {
		delete(m.servers, name)
		m.drain(s)
	}
	m.mu.Unlock()
	m.drains.Wait()
	m.drainCancel()
	m.mu.Lock()
	if m.revocation != nil {
		m.revocation.Close()
	}
	m.mu.Unlock()
}

// Addr is the address a Listener is bound to (with the port chosen when
// the configured one is 0), or "" when it is not served.
func (m *Manager) Addr(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.servers[name]; s != nil {
		return s.ln.Addr().String()
	}
	return ""
}

// ListenerStatus is one Listener in a node's /status.
type ListenerStatus struct {
	Name string `json:"name"`
	// Address is the address served, as configured; Bound is the socket's
	// (they differ for port 0). Bound is empty when nothing is served.
	Address string `json:"address"`
	Bound   string `json:"bound,omitempty"`
	// Since is when the server was bound: a swapped snapshot keeps it.
	Since time.Time    `json:"since,omitzero"`
	Hosts []HostStatus `json:"hosts"`
	// Error says why the Listener as last applied is not served; Hosts
	// and Address are then what is served instead, if anything.
	Error string `json:"error,omitempty"`
}

// HostStatus is one host of a Listener as served.
type HostStatus struct {
	Hostnames []string `json:"hostnames"`
	Default   bool     `json:"default,omitempty"`
	// Certificate is the SHA-256 of the server certificate's DER.
	Certificate string    `json:"certificate"`
	NotAfter    time.Time `json:"notAfter"`
	ClientAuth  string    `json:"clientAuth"`
	// Revocation is the host's revocation mode (soft-fail, hard-fail);
	// empty when it does not check.
	Revocation string `json:"revocation,omitempty"`
	// Fingerprint identifies the host's whole TLS context.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Served is the Listener each server serves now (by name, in order): what
// the node presents, which a refused update has not replaced.
func (m *Manager) Served() []*model.Listener {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*model.Listener, 0, len(m.servers))
	for _, name := range slices.Sorted(maps.Keys(m.servers)) {
		out = append(out, m.servers[name].snap.Load().listener)
	}
	return out
}

// Status reports every Listener served or refused, by name.
func (m *Manager) Status() []ListenerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make(map[string]bool)
	for name := range m.servers {
		names[name] = true
	}
	for name := range m.failed {
		names[name] = true
	}
	out := make([]ListenerStatus, 0, len(names))
	for _, name := range slices.Sorted(maps.Keys(names)) {
		st := ListenerStatus{Name: name, Hosts: []HostStatus{}}
		var l *model.Listener
		if s := m.servers[name]; s != nil {
			l = s.snap.Load().listener
			st.Address, st.Bound, st.Since = s.address, s.ln.Addr().String(), s.since
			if err := s.err.Load(); err != nil {
				st.Error = (*err).Error()
			}
		}
		if f, ok := m.failed[name]; ok {
			st.Error = f.err.Error()
			if l == nil {
				l, st.Address = f.listener, f.listener.Address
			}
		}
		for i, h := range l.Hosts {
			hs := HostStatus{Hostnames: h.Hostnames, Default: i == l.Default, ClientAuth: model.ClientAuthName(h.ClientAuth), Fingerprint: h.Fingerprint}
			if h.Revocation.On() {
				hs.Revocation = string(h.Revocation.Mode)
			}
			if h.Certificate != nil && h.Certificate.Leaf != nil {
				hs.Certificate, hs.NotAfter = certs.Fingerprint(h.Certificate.Leaf), h.Certificate.Leaf.NotAfter
			}
			st.Hosts = append(st.Hosts, hs)
		}
		out = append(out, st)
	}
	return out
}

// maxDetail bounds the net/http error messages logged.
const maxDetail = 512

// handshakeLog is the servers' error log. Its "TLS handshake error from …"
// lines, if any, are dropped: observe logs each failed handshake once,
// with its reason.
type handshakeLog struct{ log *slog.Logger }

func (h handshakeLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if !strings.Contains(msg, "TLS handshake error") {
		// net/http's messages may quote what a client sent: bounded.
		if len(msg) > maxDetail {
			msg = msg[:maxDetail] + "…"
		}
		h.log.Warn("inbound server error", "detail", msg)
	}
	return len(p), nil
}
