// Package h1 makes HTTP/1.1 round trips to an upstream in the calling
// goroutine, over a LIFO pool of connections per endpoint, where
// http.Transport uses two goroutines per connection and hands every
// request between three. It serves the requests [Eligible] accepts
// exactly as http.Transport would (the same bytes both ways, the same
// refusals, the same connection reuse and retries); the caller sends the
// others through http.Transport.
package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"
)

// Pool makes HTTP/1.1 round trips in the calling goroutine, over a LIFO
// pool of connections with buffered I/O. Safe for concurrent use: no read loop, write loop or timer
// goroutine per connection, and no hand-off between goroutines per
// request. http.Transport makes three hand-offs per request (the caller,
// its writeLoop and its readLoop) and a read that finds nothing (the
// readLoop's peek before the request is written).
//
// It serves only what it can serve exactly as http.Transport does, and the
// forwarding path gives everything else to the Transport ([Eligible]):
// the request is written by net/http's own Request.Write and the response
// read by net/http's own ReadResponse, as the Transport does, so both
// sides' bytes and the refusals of malformed responses are net/http's. The
// rest follows the Transport: the response header size limit, 1xx
// responses handed to Got1xxResponse (with the limit reset after each),
// when a connection is kept (not after a 1xx, a Connection: close, a body
// not read to its end), the response header timeout, the request
// context's cancellation, and the retry on another connection of a request
// that a reused connection failed before any byte of its answer, when the
// Transport retries it (nothing written and no body, or a replayable
// request).
type Pool struct {
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle       int
	idleTimeout   time.Duration
	headerTimeout time.Duration
	maxHeader     int64

	mu     sync.Mutex
	idle   map[string][]*pooledConn // by endpoint; the most recently used last
	closed bool
	// sweep closes connections idle for idleTimeout; armed while any is.
	sweep    *time.Timer
	sweeping bool
}

// NewPool returns a Pool whose connections are opened by dial (which
// returns a *tls.Conn, handshake done, for TLS). maxIdle bounds the idle
// connections kept per endpoint, idleTimeout closes those idle for that
// long; headerTimeout, if positive, bounds the wait for response headers
// after the request is written; maxHeader bounds the response headers'
// size. They mean what http.Transport's MaxIdleConnsPerHost,
// IdleConnTimeout, ResponseHeaderTimeout and MaxResponseHeaderBytes mean.
func NewPool(dial func(ctx context.Context, network, addr string) (net.Conn, error), maxIdle int, idleTimeout, headerTimeout time.Duration, maxHeader int64) *Pool {
	return &Pool{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout, headerTimeout: headerTimeout, maxHeader: maxHeader, idle: make(map[string][]*pooledConn)}
}

// MaxBody is the largest request body Pool sends. It writes the
// whole request before it reads the answer, where the Transport writes the
// body from another goroutine and may return an answer the upstream sent
// before reading it all (a 413, a 401): a body this small is taken whole by
// the sockets' buffers, so the answer is read either way. Larger bodies go
// through the Transport.
const MaxBody = 64 << 10

// Eligible reports whether in, an inbound request, is one Pool serves:
// no body or one of known length up to MaxBody, no Expect
// (100-continue), not CONNECT. Upgrades never get here. Bodies of unknown
// length (chunked uploads) go through the Transport.
func Eligible(in *http.Request) bool {
	// A server's request has no body exactly when its length is 0, and a
	// chunked one has length -1.
	return in.ContentLength >= 0 && in.ContentLength <= MaxBody && len(in.TransferEncoding) == 0 &&
		in.Header["Expect"] == nil && in.Method != "CONNECT"
}

// replayable is net/http's Request.isReplayable: a request that may be
// sent again after it was (maybe) received, because it has no body and its
// method (or an Idempotency-Key) says that sending it twice does no harm.
func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "":
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	_, xok := req.Header["X-Idempotency-Key"]
	return ok || xok
}

// pooledConn is one pooled connection.
type pooledConn struct {
	pool *Pool
	addr string
	conn net.Conn
	tls  *tls.ConnectionState
	br   *bufio.Reader
	bw   *bufio.Writer
	// limit is what the response headers may still take; math.MaxInt64
	// while a body is read.
	limit int64
	// sawEOF is set when the connection's reader hit its end, timedOut
	// when it hit the read deadline.
	sawEOF, timedOut bool
	reused           bool
	idleAt           time.Time
	// nwrite counts the bytes written to conn: a request that failed with
	// none written may be sent again (net/http's nothingWrittenError).
	nwrite int64
	// readPast is set while the read deadline is in the past (left there
	// by unsolicited, for roundTrip to replace).
	readPast bool
	// canceled is set, before the deadline is moved to the past, by the
	// request context's AfterFunc (cancel, made once per connection).
	canceled atomic.Bool
	cancel   func()
	// body tracks the request body's reads, to tell its errors from the
	// connection's.
	body trackedBody
	peek idlePeek
}

// Write implements io.Writer for bw, counting what reached conn.
func (c *pooledConn) Write(p []byte) (int, error) {
	n, err := c.conn.Write(p)
	c.nwrite += int64(n)
	return n, err
}

// oneFlush is a bufio.Writer that Request.Write does not recognise as one:
// it writes the header and the body into it and leaves the flush to the
// caller. One pointer, so that making the interface value allocates
// nothing.
type oneFlush struct{ *bufio.Writer }

// trackedBody is a request body whose read error is kept: Request.Write
// returns it wrapped in a type of its own, and the Transport returns it as
// the request's error.
type trackedBody struct {
	rc  io.ReadCloser
	err error
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (b *trackedBody) Close() error { return b.rc.Close() }

// Read implements io.Reader for br: the header limit and the end of the
// connection are seen here.
func (c *pooledConn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, fmt.Errorf("net/http: server response headers exceeded %d bytes; aborted", c.pool.maxHeader)
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.conn.Read(p)
	if errors.Is(err, io.EOF) {
		c.sawEOF = true
	} else if err != nil && isTimeout(err) {
		c.timedOut = true
	}
	c.limit -= int64(n)
	return n, err
}

// aLongTimeAgo is a deadline in the past: it fails pending I/O at once.
var aLongTimeAgo = time.Unix(1, 0)

// errHeaderTimeout is the Transport's error for ResponseHeaderTimeout.
var errHeaderTimeout error = &timeoutError{"net/http: timeout awaiting response headers"}

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// RoundTrip sends req (see [Eligible]) to req.URL.Host and returns the
// response, whose Body returns the connection to the pool once read to its
// end (closed before, it closes the connection). trace's Got1xxResponse, if
// set, receives the 1xx responses, and its GetConn and GotConn hear of each
// connection sought and got, as the Transport tells them (a traced
// request's span records them). Errors are those http.Transport returns
// for the same failure. req's Body is read but not closed.
func (p *Pool) RoundTrip(req *http.Request, trace *httptrace.ClientTrace) (*http.Response, error) {
	ctx := req.Context()
	addr := req.URL.Host
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if trace != nil && trace.GetConn != nil {
			trace.GetConn(addr)
		}
		// Bounded: after a few stale connections, a new one.
		c, err := p.get(ctx, addr, attempt >= maxStaleRetries, replayable(req))
		if err != nil {
			return nil, err
		}
		if trace != nil && trace.GotConn != nil {
			// A pooled connection was used before and idle since.
			info := httptrace.GotConnInfo{Conn: c.conn, Reused: c.reused, WasIdle: c.reused}
			if c.reused {
				info.IdleTime = time.Since(c.idleAt)
			}
			trace.GotConn(info)
		}
		resp, retry, err := c.roundTrip(ctx, req, trace)
		if err == nil {
			return resp, nil
		}
		c.close()
		if !retry {
			return nil, err
		}
		// A reused connection the server had closed: again, on
		// another (at worst a new one, whose failure is final).
	}
}

// maxStaleRetries is how many reused connections one request tries
// before it dials.
const maxStaleRetries = 4

// peekAfter is how long a connection stays idle before a replayable
// request peeks at its socket ([pooledConn.unsolicited]): under load a
// connection is taken again within a millisecond or two, and that peek was
// one system call per request that found nothing. A server that closed the
// connection meanwhile fails the request before any byte of its answer,
// and a replayable request is sent again on another connection, as
// http.Transport sends it when its read loop has not yet seen the close.
// Servers answer unsolicited (a 408 before closing) after an idle timeout
// of seconds, long after this.
const peekAfter = 10 * time.Millisecond

// get pops the most recently used idle connection to addr, or dials one
// (always with fresh). replay says whether the request may be sent again
// on another connection: then a connection idle for less than peekAfter is
// not peeked at.
func (p *Pool) get(ctx context.Context, addr string, fresh, replay bool) (*pooledConn, error) {
	now := time.Now()
	p.mu.Lock()
	for !fresh {
		list := p.idle[addr]
		if len(list) == 0 {
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[addr] = list[:len(list)-1]
		p.mu.Unlock()
		idle := now.Sub(c.idleAt)
		if idle < p.idleTimeout && !c.unsolicited(!replay || idle >= peekAfter) {
			return c, nil
		}
		c.conn.Close()
		p.mu.Lock()
	}
	p.mu.Unlock()
	conn, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &pooledConn{pool: p, addr: addr, conn: conn, limit: math.MaxInt64}
	if tc, ok := conn.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		c.tls = &cs
	}
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.bw = bufio.NewWriterSize(c, 4<<10)
	c.cancel = c.cancelNow
	c.peek.init(conn)
	return c, nil
}

// put returns c to the pool, or closes it when the pool is full or closed.
func (p *Pool) put(c *pooledConn) {
	c.reused = true
	c.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[c.addr]) >= p.maxIdle {
		p.mu.Unlock()
		c.conn.Close()
		return
	}
	p.idle[c.addr] = append(p.idle[c.addr], c)
	if !p.sweeping {
		p.sweeping = true
		if p.sweep == nil {
			p.sweep = time.AfterFunc(p.idleTimeout, p.sweepIdle)
		} else {
			p.sweep.Reset(p.idleTimeout)
		}
	}
	p.mu.Unlock()
}

// sweepIdle closes the connections idle for idleTimeout, and runs again
// when the oldest left would be.
func (p *Pool) sweepIdle() {
	now := time.Now()
	var expired []*pooledConn
	next := time.Duration(-1)
	p.mu.Lock()
	for addr, list := range p.idle {
		keep := list[:0]
		for _, c := range list {
			if age := now.Sub(c.idleAt); age >= p.idleTimeout {
				expired = append(expired, c)
			} else {
				keep = append(keep, c)
				if left := p.idleTimeout - age; next < 0 || left < next {
					next = left
				}
			}
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(p.idle, addr)
		} else {
			p.idle[addr] = keep
		}
	}
	p.sweeping = next >= 0 && !p.closed
	if p.sweeping {
		p.sweep.Reset(next)
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.conn.Close()
	}
}

// CloseIdle closes the idle connections; the Pool keeps taking requests.
func (p *Pool) CloseIdle() { p.closeIdle(false) }

// Close closes the idle connections, and those in use once their request
// ends: the Pool keeps none from then on (its Upstream is drained).
func (p *Pool) Close() { p.closeIdle(true) }

func (p *Pool) closeIdle(final bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle = make(map[string][]*pooledConn)
	if final {
		p.closed = true
	}
	p.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.conn.Close()
		}
	}
}

func (c *pooledConn) close() { c.conn.Close() }

// cancelNow fails c's pending and future I/O: the request's context ended.
func (c *pooledConn) cancelNow() {
	c.canceled.Store(true)
	_ = c.conn.SetDeadline(aLongTimeAgo)
}

// recancel follows a change of c's read deadline: the cancellation's
// deadline in the past may have come before it, and is set again. (The
// AfterFunc sets canceled before the deadline, so either this sees
// canceled or the AfterFunc's deadline comes after the change.)
func (c *pooledConn) recancel() {
	if c.canceled.Load() {
		_ = c.conn.SetDeadline(aLongTimeAgo)
	}
}

// unsolicited reports whether the idle c has received something since its
// last response: bytes no request asked for, which the Transport refuses
// ("Unsolicited response received on idle HTTP channel") by closing the
// connection, or the server's close. Bytes already read into c's buffers
// are found without a system call; the socket's with one peek, when peek is
// set. It leaves the read deadline in the past, for roundTrip to set.
func (c *pooledConn) unsolicited(peek bool) bool {
	if c.br.Buffered() > 0 || peek && c.peek.idleReadable() {
		return true
	}
	// A deadline in the past: what the TLS layer holds is returned, the
	// socket is not read (and a timeout leaves a tls.Conn usable). The
	// socket's peek comes first: it fails past the deadline.
	_ = c.conn.SetReadDeadline(aLongTimeAgo)
	c.readPast = true
	_, err := c.br.Peek(1)
	return err == nil || !isTimeout(err)
}

// roundTrip writes req on c and reads the response head. retry is set on
// an error after which the Transport sends the request again on another
// connection (Transport.shouldRetryRequest): on a reused connection,
// nothing written and no body, or a replayable request (see replayable)
// whose connection failed before any byte of the answer.
func (c *pooledConn) roundTrip(ctx context.Context, req *http.Request, trace *httptrace.ClientTrace) (resp *http.Response, retry bool, err error) {
	stop := context.AfterFunc(ctx, c.cancel)
	start := c.nwrite
	hasBody := req.Body != nil && req.Body != http.NoBody
	// fail ends the request with err. firstByte is set once the answer
	// began, readFailed when reading it failed before.
	fail := func(err error, firstByte, readFailed bool) (*http.Response, bool, error) {
		stop()
		if c.canceled.Load() {
			return nil, false, context.Cause(ctx)
		}
		written := c.nwrite != start
		if written && !firstByte && !readFailed {
			// As the Transport words a write that failed half way.
			err = fmt.Errorf("net/http: HTTP/1.x transport connection broken: %w", err)
		}
		switch {
		case !c.reused || firstByte || errors.Is(err, errHeaderTimeout):
			return nil, false, err
		case !written:
			return nil, !hasBody, err
		}
		return nil, readFailed && replayable(req), err
	}
	var werr error
	if hasBody {
		// The Transport returns a failed read of the client's body as
		// it is, not as the connection's failure.
		c.body = trackedBody{rc: req.Body}
		req.Body = &c.body
		// Not a *bufio.Writer, so that Request.Write does not flush
		// the header before the body: one write for both when the
		// body fits the buffer (the Transport makes two).
		werr = req.Write(oneFlush{c.bw})
		req.Body = c.body.rc
		if werr != nil && c.body.err != nil {
			werr = c.body.err
			stop()
			if c.canceled.Load() {
				werr = context.Cause(ctx)
			}
			c.body = trackedBody{}
			return nil, false, werr
		}
		c.body = trackedBody{}
	} else {
		werr = req.Write(c.bw)
	}
	if werr == nil {
		werr = c.bw.Flush()
	}
	if werr != nil {
		return fail(werr, false, false)
	}
	switch {
	case c.pool.headerTimeout > 0:
		_ = c.conn.SetReadDeadline(time.Now().Add(c.pool.headerTimeout))
		c.recancel()
	case c.readPast:
		_ = c.conn.SetReadDeadline(time.Time{})
		c.recancel()
	}
	c.readPast = false
	c.limit = c.pool.maxHeader
	c.timedOut = false
	if _, err := c.br.Peek(1); err != nil {
		// The read error itself, as the Transport returns it.
		if c.timedOut && !c.canceled.Load() {
			err = errHeaderTimeout
		}
		return fail(err, false, true)
	}
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			if c.timedOut && !c.canceled.Load() {
				// Whatever ReadResponse made of what came before
				// the deadline, the Transport's timer answers.
				return fail(errHeaderTimeout, true, false)
			}
			if c.limit <= 0 {
				err = fmt.Errorf("net/http: server response headers exceeded %d bytes; aborted", c.pool.maxHeader)
			}
			// As the Transport words a failure on a connection it
			// closes.
			return fail(fmt.Errorf("net/http: HTTP/1.x transport connection broken: %w", err), true, false)
		}
		code := resp.StatusCode
		if 100 <= code && code <= 199 && code != http.StatusSwitchingProtocols {
			if trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
					return fail(err, true, false)
				}
				c.limit = c.pool.maxHeader
			}
			continue
		}
		break
	}
	c.limit = math.MaxInt64
	if c.pool.headerTimeout > 0 {
		_ = c.conn.SetReadDeadline(time.Time{})
		c.recancel()
	}
	resp.TLS = c.tls
	alive := !resp.Close && !req.Close && resp.StatusCode > 199
	if req.Method == "HEAD" || resp.ContentLength == 0 {
		// No body to read (ReadResponse gave NoBody, or a HEAD answer
		// whose length describes no bytes here).
		c.done(stop, alive)
		return resp, false, nil
	}
	resp.Body = &respBody{c: c, body: resp.Body, ctx: ctx, stop: stop, alive: alive}
	return resp, false, nil
}

// done ends a request on c: back to the pool when alive and nothing
// cancelled it, closed otherwise.
func (c *pooledConn) done(stop func() bool, alive bool) {
	if !stop() || c.canceled.Load() || !alive || c.sawEOF {
		c.close()
		return
	}
	c.pool.put(c)
}

// respBody is a response body read from a pooled connection: read to its
// end, it gives the connection back; closed before, it closes it (the
// Transport's bodyEOFSignal).
type respBody struct {
	c     *pooledConn
	body  io.ReadCloser
	ctx   context.Context
	stop  func() bool
	alive bool
	// err is the first error (io.EOF at the end) Read returned; once
	// set, the connection is released.
	err error
}

func (b *respBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.body.Read(p)
	if err == nil {
		return n, nil
	}
	if !errors.Is(err, io.EOF) && b.c.canceled.Load() {
		err = context.Cause(b.ctx)
	}
	b.err = err
	b.c.done(b.stop, b.alive && errors.Is(err, io.EOF))
	return n, err
}

func (b *respBody) Close() error {
	if b.err == nil {
		b.err = errors.New("http: read on closed response body")
		b.c.done(b.stop, false)
	}
	return nil
}

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}
