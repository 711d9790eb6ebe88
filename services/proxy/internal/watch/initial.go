package watch

import (
	"runtime"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/model"
)

// initialReader decodes the values of a session's initial read on worker
// goroutines while the session's goroutine reads on, and applies them in
// the order read. Decoding (the stored record, then the model's checks) is
// half of a node's bootstrap at 10,000 Services and needs nothing of the
// watcher's state; applying (the store and its indexes) stays on the
// session's goroutine, in order, exactly as before.
//
// Values go to the workers in chunks, so that the hand-offs are a few
// hundred per bootstrap rather than two per value, and at most window
// chunks are in flight: the values read wait for their turn in a bounded
// window, not all at once (a binding's value holds its PEM, several KB).
type initialReader struct {
	w       *Watcher
	workers int
	work    chan *initialChunk
	wg      sync.WaitGroup
	ring    [window]initialChunk
	head, n int // chunks in flight, from ring[head]
	filling *initialChunk
}

const (
	chunkSize = 32
	window    = 16
)

// initialChunk is up to chunkSize values read in a row.
type initialChunk struct {
	values [chunkSize]initialValue
	len    int
	done   chan struct{} // one send per chunk decoded
}

// initialValue is one entry and, for a put, its decoding.
type initialValue struct {
	e   jetstream.KeyValueEntry
	obj model.Object
	msg string
	err error
}

// newInitialReader starts its workers: one per processor the runtime may
// use, none with one (the values are then decoded and applied as read).
func (w *Watcher) newInitialReader() *initialReader {
	r := &initialReader{w: w, workers: runtime.GOMAXPROCS(0)}
	if r.workers < 2 {
		r.workers = 0
		return r
	}
	r.work = make(chan *initialChunk, window)
	for i := range r.ring {
		r.ring[i].done = make(chan struct{}, 1)
	}
	r.wg.Add(r.workers)
	for range r.workers {
		go func() {
			defer r.wg.Done()
			for c := range r.work {
				for i := range c.values[:c.len] {
					v := &c.values[i]
					if v.e.Operation() == jetstream.KeyValuePut {
						v.obj, v.msg, v.err = w.decode(v.e.Key(), v.e.Value(), v.e.Revision())
					}
				}
				c.done <- struct{}{}
			}
		}()
	}
	return r
}

// add takes the next entry of the initial read.
func (r *initialReader) add(e jetstream.KeyValueEntry) {
	if r.workers == 0 {
		r.w.apply(e)
		return
	}
	if r.filling == nil {
		if r.n == window {
			r.applyOldest()
		}
		r.filling = &r.ring[(r.head+r.n)%window]
		r.n++
	}
	c := r.filling
	c.values[c.len].e = e
	c.len++
	if c.len == chunkSize {
		r.filling = nil
		r.work <- c
	}
}

// applyOldest waits for the oldest chunk in flight and applies it.
func (r *initialReader) applyOldest() {
	c := &r.ring[r.head]
	if c == r.filling {
		r.filling = nil
		r.work <- c
	}
	<-c.done
	for i := range c.values[:c.len] {
		v := &c.values[i]
		r.w.applyDecoded(v.e, v.obj, v.msg, v.err)
		*v = initialValue{}
	}
	c.len = 0
	r.head = (r.head + 1) % window
	r.n--
}

// flush applies every value taken so far.
func (r *initialReader) flush() {
	for r.n > 0 {
		r.applyOldest()
	}
}

// stop applies what was taken and stops the workers; later values are
// decoded and applied as taken. Only the first call stops.
func (r *initialReader) stop() {
	if r.workers == 0 {
		return
	}
	r.flush()
	close(r.work)
	r.wg.Wait()
	r.workers = 0
}
