package h1

import (
	"errors"
	"net/http"
	"os"
	"sync"
	"time"
)

// watchDelay is about how long a request without a body runs before its
// connection is read for the client's close (from half of it to all of
// it: the server looks every half). net/http's server reads every
// connection while its handler runs (a goroutine and a read that finds
// nothing, per request); a request that ends within the delay costs two
// uncontended locks here, and one that runs longer (a long poll, a slow
// upstream) has its context canceled within about the delay of the client
// going away, as net/http cancels it at once. A timer per request was
// tried, and cost about 2 µs per request (docs/performance.md).
const watchDelay = 100 * time.Millisecond

// aLongTimeAgo is a deadline in the past: it cuts a pending read short.
var aLongTimeAgo = time.Unix(1, 0)

type watchState uint8

const (
	watchIdle    watchState = iota
	watchArmed              // the handler runs; the server starts the read when it is due
	watchReading            // a read of the connection is pending
)

// watch reads a connection while its handler runs, once the request has
// run for watchDelay, to cancel the request when the client closes the
// connection. Only requests without a body are watched: the handler may
// read a body, and nothing else may read the connection meanwhile.
type watch struct {
	mu      sync.Mutex
	state   watchState
	since   uint64        // the server's watch tick when armed
	done    chan struct{} // closed when the pending read returns
	aborted bool          // the read was cut short by stop
	b       [1]byte
	n       int
	err     error
}

// watchable reports whether c may be read while req's handler runs: no
// body to read, no byte of a next request already read, no upgrade to
// hand the connection to.
func (c *conn) watchable(req *http.Request) bool {
	return req.Body == http.NoBody && c.br.Buffered() == 0 && get(req.Header, "Upgrade") == ""
}

// armWatch starts c's watch: the server's watch loop starts its read
// when it is due.
func (c *conn) armWatch() {
	s := c.srv
	wt := &c.watch
	wt.mu.Lock()
	wt.state, wt.since = watchArmed, s.watchTick.Load()
	wt.mu.Unlock()
	if !s.watching.Load() {
		s.mu.Lock()
		if !s.watching.Load() {
			s.watching.Store(true)
			go s.watchLoop()
		}
		s.mu.Unlock()
	}
}

// watchLoop starts the reads of the connections whose handlers have run
// for a whole tick, every half watchDelay, until the server has no
// connection left.
func (s *Server) watchLoop() {
	t := time.NewTicker(watchDelay / 2)
	defer t.Stop()
	for range t.C {
		now := s.watchTick.Add(1)
		s.mu.Lock()
		if len(s.conns) == 0 {
			s.watching.Store(false)
			s.mu.Unlock()
			return
		}
		for c := range s.conns {
			c.watchDue(now)
		}
		s.mu.Unlock()
	}
}

// watchDue starts c's read if its watch was armed two ticks ago or more.
func (c *conn) watchDue(now uint64) {
	wt := &c.watch
	wt.mu.Lock()
	defer wt.mu.Unlock()
	if wt.state != watchArmed || now-wt.since < 2 {
		return
	}
	wt.state, wt.done = watchReading, make(chan struct{})
	go c.watchRead()
}

// watchRead reads one byte, and cancels the connection's requests when the
// read fails other than by stopWatch (the client closed the connection,
// or it broke).
func (c *conn) watchRead() {
	wt := &c.watch
	if h := c.srv.watchHook; h != nil {
		h("reading", 0)
	}
	n, err := c.rwc.Read(wt.b[:])
	if h := c.srv.watchHook; h != nil {
		h("read", n)
	}
	wt.mu.Lock()
	wt.n, wt.err = n, err
	aborted := wt.aborted
	wt.mu.Unlock()
	if n == 0 && err != nil && !aborted {
		c.cancelCtx()
	}
	close(wt.done)
}

// stopWatch ends c's watch, if any, before anything else reads c or the
// handler gives the connection up (Hijack). A pending read is cut short
// and waited for; a byte it read (the next request's first) is kept for
// the next read, and a failure (the client's close) is returned by it.
func (c *conn) stopWatch() {
	wt := &c.watch
	wt.mu.Lock()
	switch wt.state {
	case watchIdle:
		wt.mu.Unlock()
		return
	case watchArmed:
		wt.state = watchIdle
		wt.mu.Unlock()
		return
	}
	wt.aborted = true
	done := wt.done
	wt.mu.Unlock()
	_ = c.rwc.SetReadDeadline(aLongTimeAgo)
	<-done
	wt.mu.Lock()
	defer wt.mu.Unlock()
	wt.state, wt.aborted = watchIdle, false
	switch {
	case wt.n > 0:
		c.r.pending = append(c.r.pending[:0], wt.b[0])
	case wt.err != nil && !errors.Is(wt.err, os.ErrDeadlineExceeded):
		c.r.failed = wt.err
	}
	// The caller sets the deadline of what comes next (the idle or
	// header timeout, or none once hijacked).
	_ = c.rwc.SetReadDeadline(time.Time{})
}
