// Parts of this file are adapted from Go's net/http (server.go,
// transfer.go): Copyright 2009 The Go Authors, under the BSD-style license
// in LICENSE.go-authors beside this file.

// Package h1 serves HTTP/1.x connections with one goroutine per
// connection and no background read: the handler runs in the connection's
// goroutine, the next request is read once the response is written, and a
// response's bytes go out in one write when the handler returns (or when
// it flushes).
//
// net/http's server serves the same bytes (this package's differential
// tests and fuzz target hold it to that), but it reads in the background
// while a handler runs, to notice a client that goes away: per request a
// goroutine, a read that finds nothing (EAGAIN), a poller registration and
// a hand-off back. Here a client that disconnects while its handler runs
// is noticed only when its response is written (or its request body read):
// until then the handler's own bounds apply (for the proxy, the upstream's
// timeouts).
//
// Requests are parsed by net/http's own [http.ReadRequest], with the
// checks net/http's server adds on top (Host required, single and valid;
// header names and values valid; the HTTP version), and refused with the
// same answers: 400, 431 beyond the header limit, 501 for an unknown
// Transfer-Encoding, 417 for an unknown Expect. Responses are framed as
// net/http frames them: Content-Length computed for a body that fits the
// first 2 KiB buffer, chunked otherwise (for HTTP/1.1), Content-Type
// sniffed, 1xx, trailers, HEAD, 204 and 304 without a body, the unread
// request body drained (up to 256 KiB) for the connection's reuse,
// Expect: 100-continue, Hijack (for Upgrade), Flush and deadlines through
// http.ResponseController. Not kept: the deprecated http.CloseNotifier
// (it needs the background read), ReadTimeout and WriteTimeout (the node
// sets neither), and the ConnState hook (the node counts handshakes
// where it makes them).
package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/textproto"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Server serves HTTP/1.x connections ([Server.ServeConn]). Its fields are
// set before the first ServeConn and not changed afterwards; ServeConn,
// Shutdown and Close are safe for concurrent use.
type Server struct {
	// Handler serves every request. Required. As with net/http, an
	// "OPTIONS *" request is answered by the server itself.
	Handler http.Handler
	// ReadHeaderTimeout bounds the reading of each request's header, from
	// its first byte (or, for a connection's first request, from
	// ServeConn). Zero means no bound.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection. Zero means no bound (net/http would fall back to its
	// ReadTimeout, which Server does not have).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header block (with net/http's
	// 4 KiB of slack): beyond it the answer is 431. Zero means
	// http.DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// ConnContext, if set, returns the context of a connection's requests,
	// derived from ctx (which holds http.LocalAddrContextKey). It is
	// called once the connection is the server's: a Shutdown from then
	// on waits for it.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// ErrorLog receives what net/http's server would log: handler panics,
	// superfluous WriteHeader calls. Nil logs nothing.
	ErrorLog *log.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	lns      map[net.Listener]struct{}
	shutdown atomic.Bool
	// drained is closed when Shutdown waits and the last connection is
	// gone.
	drained chan struct{}
	// watching is set while watchLoop runs; watchTick counts its ticks.
	watching  atomic.Bool
	watchTick atomic.Uint64
	// watchHook, if set (tests), hears of each watch's read: "reading"
	// before it, "read" with the bytes it got after.
	watchHook func(event string, n int)
}

// rstAvoidanceDelay is how long a connection closed with request bytes
// left unread keeps its read side open after sending its answer and FIN
// (net/http's value): the client reads the answer before the reset that
// closing with unread data sends.
var rstAvoidanceDelay = 500 * time.Millisecond

// maxPostHandlerReadBytes is how much of a request body left unread by
// the handler is read (and discarded) to keep the connection, as in
// net/http.
const maxPostHandlerReadBytes = 256 << 10

// bufferBeforeChunking is the response buffer: a body that fits, written
// by a handler that returns without flushing, gets a Content-Length;
// a longer one is chunked. net/http's value.
const bufferBeforeChunking = 2048

func (s *Server) logf(format string, args ...any) {
	if s.ErrorLog != nil {
		s.ErrorLog.Printf(format, args...)
	}
}

func (s *Server) maxHeaderBytes() int64 {
	if s.MaxHeaderBytes > 0 {
		return int64(s.MaxHeaderBytes)
	}
	return http.DefaultMaxHeaderBytes
}

// initialReadLimit is net/http's: the header limit plus bufio slop.
func (s *Server) initialReadLimit() int64 { return s.maxHeaderBytes() + 4096 }

// doKeepAlives is false once Shutdown has begun: responses then close
// their connection.
func (s *Server) doKeepAlives() bool { return !s.shutdown.Load() }

// track adds or removes c; it reports false when adding after Shutdown.
func (s *Server) track(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutdown.Load() {
			return false
		}
		if s.conns == nil {
			s.conns = make(map[*conn]struct{})
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	if len(s.conns) == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
	return true
}

// connState is where a connection is in its life, as Shutdown sees it.
type connState uint8

const (
	// stateNew: no byte of the first request read yet.
	stateNew connState = iota
	// stateActive: reading or serving a request.
	stateActive
	// stateIdle: kept alive, waiting for the next request.
	stateIdle
)

// newConnGrace is how long Shutdown lets a connection that has not sent
// its first request yet take to send it (net/http's 5 s for StateNew):
// a client that has just connected gets its request served, one that
// sends nothing does not hold the drain longer than that.
var newConnGrace = 5 * time.Second

// setState records c's state; it reports false when c is to stop because
// Shutdown has begun and c is idle.
func (s *Server) setState(c *conn, st connState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.state = st
	return !(st == stateIdle && s.shutdown.Load())
}

// Shutdown stops the serving of new requests: idle connections (those
// waiting for a kept-alive connection's next request) are closed now, the
// others once their response is written. A connection that has not sent
// its first request yet gets it served, with Connection: close, if it
// sends it within newConnGrace of its start (and ReadHeaderTimeout).
// Shutdown returns when every connection is closed (hijacked ones are no
// longer the server's), or ctx's error when ctx ends first (then
// [Server.Close] cuts the rest off).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown.Store(true)
	for ln := range s.lns {
		ln.Close()
	}
	grace := newConnGrace
	if d := s.ReadHeaderTimeout; d > 0 && d < grace {
		grace = d
	}
	for c := range s.conns {
		switch c.state {
		case stateIdle:
			c.rwc.Close()
		case stateNew:
			_ = c.rwc.SetReadDeadline(c.started.Add(grace))
		}
	}
	if len(s.conns) == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	drained := s.drained
	s.mu.Unlock()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the listeners and every connection now, serving or not,
// and cancels the contexts of the requests in flight (which a closed
// connection alone does not: nothing reads it while a handler runs).
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdown.Store(true)
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.rwc.Close()
		c.cancelCtx()
	}
	return nil
}

// conn is one connection being served.
type conn struct {
	srv        *Server
	rwc        net.Conn
	remoteAddr string
	tlsState   *tls.ConnectionState
	cancelCtx  context.CancelFunc
	r          connReader
	br         *bufio.Reader
	bw         *bufio.Writer
	// rw is the response's buffer, reused from one request to the next.
	rw *bufio.Writer
	// werr is the first error writing to rwc.
	werr       error
	lastMethod string
	hijacked   bool
	// state is guarded by srv.mu.
	state connState
	// started is when ServeConn took the connection in.
	started time.Time
	// writeDeadline is set when a handler set a write deadline: it is
	// cleared after the response.
	writeDeadline bool
	// record holds the bytes read while a request's header is read, for
	// the rare requests whose Host header http.ReadRequest does not show
	// (see hostHeader).
	record []byte
	// watch reads the connection while a long request without a body
	// runs, for the client's close.
	watch watch
}

// connReader is the connection's reader: it stops at the header limit
// while a header is read (as net/http's does) and cancels the
// connection's context when a read fails.
type connReader struct {
	c         *conn
	remain    int64
	recording bool
	// pending is a byte the watch read, returned first; failed is the
	// error its read ended with, returned instead of reading.
	pending []byte
	failed  error
}

func (cr *connReader) Read(p []byte) (int, error) {
	if cr.remain <= 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > cr.remain {
		p = p[:cr.remain]
	}
	var n int
	var err error
	switch {
	case len(cr.pending) > 0:
		n = copy(p, cr.pending)
		cr.pending = cr.pending[:0]
	case cr.failed != nil:
		err = cr.failed
	default:
		n, err = cr.c.rwc.Read(p)
	}
	if err != nil {
		cr.c.cancelCtx()
	}
	cr.remain -= int64(n)
	if cr.recording {
		cr.c.record = append(cr.c.record, p[:n]...)
	}
	return n, err
}

func (cr *connReader) hitReadLimit() bool { return cr.remain <= 0 }

// errWriter writes to the connection and notes its first error.
type errWriter struct{ c *conn }

func (w errWriter) Write(p []byte) (int, error) {
	n, err := w.c.rwc.Write(p)
	if err != nil && w.c.werr == nil {
		w.c.werr = err
		w.c.cancelCtx()
	}
	return n, err
}

// Serve accepts connections on ln and serves each in a goroutine of its
// own, with the context of its requests derived from ctx; temporary
// accept errors (too many open files) are retried after a pause, as
// net/http's server does. It returns http.ErrServerClosed after Shutdown
// or Close (which close ln), or the error that stopped accepting.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	if s.lns == nil {
		s.lns = make(map[net.Listener]struct{})
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return http.ErrServerClosed
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Temporary() { //nolint:staticcheck // net/http's test for EMFILE and the like
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logf("http: Accept error: %v; retrying in %v", err, delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		go func() { _ = s.ServeConn(ctx, rwc) }()
	}
}

// ServeConn serves rwc (a *tls.Conn whose handshake is done, or a plain
// connection) in the calling goroutine until the connection closes, is
// hijacked, or the server shuts down. ctx is the parent of the requests'
// contexts.
func (s *Server) ServeConn(ctx context.Context, rwc net.Conn) error {
	c := &conn{srv: s, rwc: rwc}
	if ra := rwc.RemoteAddr(); ra != nil {
		c.remoteAddr = ra.String()
	}
	if tc, ok := rwc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		c.tlsState = new(tls.ConnectionState)
		*c.tlsState = tc.ConnectionState()
	}
	c.started = time.Now()
	if !s.track(c, true) {
		rwc.Close()
		return http.ErrServerClosed
	}
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, rwc.LocalAddr())
	if s.ConnContext != nil {
		ctx = s.ConnContext(ctx, rwc)
	}
	ctx, c.cancelCtx = context.WithCancel(ctx)
	defer c.cancelCtx()
	c.r = connReader{c: c}
	c.br = bufio.NewReaderSize(&c.r, 4<<10)
	c.bw = bufio.NewWriterSize(errWriter{c}, 4<<10)
	c.rw = bufio.NewWriterSize(nil, bufferBeforeChunking)
	c.serve(ctx)
	return nil
}

func (c *conn) serve(ctx context.Context) {
	s := c.srv
	var inFlight *response
	defer func() {
		if err := recover(); err != nil && err != http.ErrAbortHandler { //nolint:errorlint // a panic value, compared as net/http compares it
			const size = 64 << 10
			buf := make([]byte, size)
			buf = buf[:runtime.Stack(buf, false)]
			s.logf("http: panic serving %v: %v\n%s", c.remoteAddr, err, buf)
		}
		if inFlight != nil {
			c.stopWatch()
			inFlight.cancelCtx()
			inFlight.disableWriteContinue()
		}
		if !c.hijacked {
			if inFlight != nil {
				_ = inFlight.reqBody.Close()
			}
			c.close()
			s.track(c, false)
		}
	}()

	if d := s.ReadHeaderTimeout; d > 0 {
		_ = c.rwc.SetReadDeadline(time.Now().Add(d))
	}
	if !s.setState(c, stateNew) {
		return
	}
	for {
		w, err := c.readRequest(ctx)
		if c.r.remain != s.initialReadLimit() {
			// Bytes were read, or a request (which lifts the limit):
			// serving, so Shutdown lets the response finish.
			s.setState(c, stateActive)
		}
		if err != nil {
			if !s.shutdown.Load() {
				c.refuse(err)
			}
			return
		}
		// A request read whole is served even when Shutdown has begun
		// meanwhile (net/http drops it): its response closes the
		// connection.

		req := w.req
		if hasToken(get(req.Header, "Expect"), "100-continue") {
			if req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
				w.reqBody.expect = true
				w.canWriteContinue.Store(true)
			}
		} else if get(req.Header, "Expect") != "" {
			w.sendExpectationFailed()
			return
		}

		inFlight = w
		if req.RequestURI == "*" && req.Method == "OPTIONS" {
			globalOptions(w, req)
		} else {
			if c.watchable(req) {
				c.armWatch()
			}
			s.Handler.ServeHTTP(w, req)
			c.stopWatch()
		}
		inFlight = nil
		w.cancelCtx()
		if c.hijacked {
			return
		}
		w.finishRequest()
		if c.writeDeadline {
			_ = c.rwc.SetWriteDeadline(time.Time{})
			c.writeDeadline = false
		}
		if !w.shouldReuseConnection() {
			if w.requestBodyLimitHit || w.reqBody.earlyClose {
				c.closeWriteAndWait()
			}
			return
		}
		if !s.setState(c, stateIdle) || !s.doKeepAlives() {
			return
		}
		if d := s.IdleTimeout; d > 0 {
			_ = c.rwc.SetReadDeadline(time.Now().Add(d))
		} else {
			_ = c.rwc.SetReadDeadline(time.Time{})
		}
		// The next request's header timeout starts at its first bytes;
		// when they hold the whole header, nothing is left for it to
		// bound (the read of a body is not bounded: see readRequest).
		if _, err := c.br.Peek(4); err != nil {
			return
		}
		if !c.headerBuffered() {
			if d := s.ReadHeaderTimeout; d > 0 {
				_ = c.rwc.SetReadDeadline(time.Now().Add(d))
			} else {
				_ = c.rwc.SetReadDeadline(time.Time{})
			}
		}
	}
}

// headerBuffered reports whether the reader holds a whole request header
// (up to its empty line; a bare LF ends a line for net/textproto too).
func (c *conn) headerBuffered() bool {
	b := peekBuffered(c.br)
	if c.lastMethod == "POST" {
		b = b[numLeadingCRorLF(b[:min(4, len(b))]):]
	}
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n"))
}

// errorHeaders ends the status line of a refusal, as net/http's does.
const errorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// refuse answers a request that could not be read, as net/http's server
// does; the connection is closed afterwards.
func (c *conn) refuse(err error) {
	var se statusError
	switch {
	case errors.Is(err, errTooLarge):
		const publicErr = "431 Request Header Fields Too Large"
		_, _ = io.WriteString(c.rwc, "HTTP/1.1 "+publicErr+errorHeaders+publicErr)
		c.closeWriteAndWait()
	case isUnsupportedTE(err):
		// The encoding is not echoed back, as net/http does not.
		_, _ = io.WriteString(c.rwc, "HTTP/1.1 501 Not Implemented"+errorHeaders+"Unsupported transfer encoding")
	case isCommonNetReadError(err):
		// No answer: the client went away or timed out.
	case errors.As(err, &se):
		text := strconv.Itoa(se.code) + " " + http.StatusText(se.code) + ": " + se.text
		_, _ = io.WriteString(c.rwc, "HTTP/1.1 "+text+errorHeaders+text)
	default:
		const publicErr = "400 Bad Request"
		_, _ = io.WriteString(c.rwc, "HTTP/1.1 "+publicErr+errorHeaders+publicErr)
	}
}

// isUnsupportedTE reports whether err is net/http's unsupportedTEError
// (an unexported type; its messages are these).
func isUnsupportedTE(err error) bool {
	msg := err.Error()
	return strings.HasPrefix(msg, "unsupported transfer encoding: ") || strings.HasPrefix(msg, "too many transfer encodings: ")
}

// isCommonNetReadError is net/http's: the client went away or timed out.
func isCommonNetReadError(err error) bool {
	// Compared and asserted exactly, as net/http does: a wrapped error is
	// not one of these, and gets net/http's answer to a bad request.
	if err == io.EOF { //nolint:errorlint // see above
		return true
	}
	if neterr, ok := err.(net.Error); ok && neterr.Timeout() { //nolint:errorlint // see above
		return true
	}
	if oe, ok := err.(*net.OpError); ok && oe.Op == "read" { //nolint:errorlint // see above
		return true
	}
	return false
}

func (c *conn) close() {
	_ = c.bw.Flush()
	c.rwc.Close()
}

// closeWriteAndWait sends what is buffered and a FIN, then waits
// rstAvoidanceDelay before the connection is closed (net/http's).
func (c *conn) closeWriteAndWait() {
	_ = c.bw.Flush()
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	time.Sleep(rstAvoidanceDelay)
}

var errTooLarge = errors.New("http: request too large")

// statusError is a refusal with its own status and text.
type statusError struct {
	code int
	text string
}

func (e statusError) Error() string { return http.StatusText(e.code) + ": " + e.text }

func badRequestError(text string) error { return statusError{http.StatusBadRequest, text} }

// readRequest reads the next request and checks it as net/http's server
// does.
func (c *conn) readRequest(ctx context.Context) (*response, error) {
	s := c.srv
	c.r.remain = s.initialReadLimit()
	if c.lastMethod == "POST" {
		// RFC 7230 section 3 tolerance for old buggy clients.
		peek, _ := c.br.Peek(4) // ReadRequest gets the error below
		_, _ = c.br.Discard(numLeadingCRorLF(peek))
	}
	c.record = append(c.record[:0], peekBuffered(c.br)...)
	c.r.recording = true
	req, err := http.ReadRequest(c.br)
	c.r.recording = false
	if err != nil {
		if c.r.hitReadLimit() {
			return nil, errTooLarge
		}
		return nil, err
	}
	if !http1ServerSupportsRequest(req) {
		return nil, statusError{http.StatusHTTPVersionNotSupported, "unsupported protocol version"}
	}
	c.lastMethod = req.Method
	c.r.remain = 1<<63 - 1

	host, hosts, err := c.hostHeader(req)
	if err != nil {
		return nil, err
	}
	isH2Upgrade := req.Method == "PRI" && len(req.Header) == 0 && hosts == 0 && req.URL.Path == "*" && req.Proto == "HTTP/2.0"
	if req.ProtoAtLeast(1, 1) && hosts == 0 && !isH2Upgrade && req.Method != "CONNECT" {
		return nil, badRequestError("missing required Host header")
	}
	if hosts == 1 && !httpguts.ValidHostHeader(host) {
		return nil, badRequestError("malformed Host header")
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, badRequestError("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, badRequestError("invalid header value")
			}
		}
	}

	if req.Body != http.NoBody && s.ReadHeaderTimeout > 0 {
		// The header's deadline does not bound the body (net/http's
		// ReadTimeout, which would, is not set). Without a body nothing
		// reads the connection before the idle deadline is set.
		_ = c.rwc.SetReadDeadline(time.Time{})
	}
	rctx, cancel := context.WithCancel(ctx)
	*req = *req.WithContext(rctx)
	req.RemoteAddr = c.remoteAddr
	req.TLS = c.tlsState
	w := &response{
		conn:          c,
		req:           req,
		cancelCtx:     cancel,
		handlerHeader: make(http.Header),
		contentLength: -1,
		// Read before the handler may change the request's header.
		wants10KeepAlive: req.ProtoMajor == 1 && req.ProtoMinor == 0 && hasToken(get(req.Header, "Connection"), "keep-alive"),
		wantsClose:       req.Close || hasToken(get(req.Header, "Connection"), "close"),
	}
	w.body = body{rc: req.Body, w: w, remain: -1}
	w.reqBody = &w.body
	if req.Body == http.NoBody {
		w.reqBody.sawEOF = true
	} else {
		req.Body = w.reqBody
		if len(req.TransferEncoding) == 0 {
			w.reqBody.remain = req.ContentLength
			// Connection: close on a body of known length: net/http
			// does not read what is left of it.
			w.reqBody.closing = req.Close
		}
	}
	if isH2Upgrade {
		w.closeAfterReply = true
	}
	w.cw.res = w
	c.rw.Reset(&w.cw)
	w.w = c.rw
	return w, nil
}

// peekBuffered is what br holds unread.
func peekBuffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// hostHeader is the request's first Host header value and how many there
// are, which http.ReadRequest deletes. For a request in origin form with a
// non-empty Host (nearly all), it is req.Host: ReadRequest refuses more
// than one Host header and takes req.Host from it. Otherwise (absolute
// form, an empty or missing Host, PRI) the header block read is parsed
// again, by net/textproto.
func (c *conn) hostHeader(req *http.Request) (string, int, error) {
	if req.URL.Host == "" && req.Host != "" && req.Method != "PRI" {
		return req.Host, 1, nil
	}
	consumed := len(c.record) - c.br.Buffered()
	if consumed < 0 || consumed > len(c.record) {
		return "", 0, badRequestError("missing required Host header")
	}
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(c.record[:consumed])))
	if _, err := tp.ReadLine(); err != nil {
		return "", 0, err
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return "", 0, err
	}
	hosts := h["Host"]
	if len(hosts) == 0 {
		return "", 0, nil
	}
	return hosts[0], len(hosts), nil
}

// http1ServerSupportsRequest is net/http's: HTTP/1.x, and the HTTP/2
// preface as a request.
func http1ServerSupportsRequest(req *http.Request) bool {
	if req.ProtoMajor == 1 {
		return true
	}
	return req.ProtoMajor == 2 && req.ProtoMinor == 0 && req.Method == "PRI" && req.RequestURI == "*"
}

func numLeadingCRorLF(v []byte) (n int) {
	for _, b := range v {
		if b == '\r' || b == '\n' {
			n++
			continue
		}
		break
	}
	return n
}

// globalOptions answers "OPTIONS *" as net/http's server does.
func globalOptions(w *response, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		// Up to 4 KiB of body is read; more closes the connection.
		const limit = 4 << 10
		n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, limit+1))
		if n > limit {
			w.requestTooLarge()
		}
	}
}

// get is Header.get: the first value of key, already canonical.
func get(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func has(h http.Header, key string) bool {
	_, ok := h[key]
	return ok
}

// hasToken is net/http's: whether token is one of v's comma- or
// space-separated elements, ignoring case.
func hasToken(v, token string) bool {
	if len(token) > len(v) || token == "" {
		return false
	}
	if v == token {
		return true
	}
	for sp := 0; sp <= len(v)-len(token); sp++ {
		if b := v[sp]; b != token[0] && b|0x20 != token[0] {
			continue
		}
		if sp > 0 && !isTokenBoundary(v[sp-1]) {
			continue
		}
		if endPos := sp + len(token); endPos != len(v) && !isTokenBoundary(v[endPos]) {
			continue
		}
		if strings.EqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}

func isTokenBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

// formatHex is the chunk-size line of n bytes.
func formatHex(buf []byte, n int) []byte {
	return append(strconv.AppendInt(buf[:0], int64(n), 16), '\r', '\n')
}
