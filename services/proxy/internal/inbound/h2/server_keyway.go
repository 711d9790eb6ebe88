// What Keyway adds to x/net's server (see the package doc): Shutdown,
// Close, and net/http's answer to "OPTIONS *".

package h2

import (
	"context"
	"io"
	"net/http"
	"sync"
)

// initState makes the server's connection registry, unless
// ConfigureServer did.
func (s *Server) initState() *serverInternalState {
	s.stateOnce.Do(func() {
		if s.state == nil {
			s.state = &serverInternalState{
				activeConns: make(map[*serverConn]struct{}),
				errChanPool: sync.Pool{New: func() any { return make(chan error, 1) }},
			}
		}
	})
	return s.state
}

// Shutdown sends GOAWAY on every connection the server serves, and on
// every connection it takes in afterwards: their streams in flight finish,
// new ones go elsewhere. It returns once every connection has ended, or
// ctx's error when ctx ends first (then [Server.Close] cuts the rest off).
func (s *Server) Shutdown(ctx context.Context) error {
	st := s.initState()
	st.mu.Lock()
	st.shuttingDown = true
	for sc := range st.activeConns {
		// keyway: in a goroutine of its own, as net/http runs its shutdown
		// hooks: a serve loop stuck in a flush (until writeStall, to a
		// client that reads nothing) takes no message while its channel
		// is full, and waiting for it here would hold Shutdown past ctx,
		// and st.mu, which Close and every connection's start and end
		// take.
		go sc.startGracefulShutdown()
	}
	if len(st.activeConns) == 0 {
		st.mu.Unlock()
		return nil
	}
	if st.drained == nil {
		st.drained = make(chan struct{})
	}
	drained := st.drained
	st.mu.Unlock()
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes every connection now, and those taken in afterwards once
// they are: their streams in flight end.
func (s *Server) Close() {
	st := s.initState()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.shuttingDown, st.closed = true, true
	for sc := range st.activeConns {
		sc.conn.Close()
	}
}

// globalOptions answers "OPTIONS *" itself, as net/http's server does
// for every protocol before its handler is asked (keyway: x/net's
// ServeConn leaves it to the handler, which would route "*").
type globalOptions struct{ h http.Handler }

func (g globalOptions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.RequestURI != "*" || r.Method != http.MethodOptions {
		g.h.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		_, _ = io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<10))
	}
}
