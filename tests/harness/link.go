package harness

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Link is a fake network link, named as one: a TCP relay on a loopback
// port to a target address, which the test can cut (every connection
// through it is closed and new ones are closed as soon as they are
// accepted, as a partition leaves a client) and heal. It stands where a
// network namespace would: a process given the link's address instead of
// the target's is partitioned from the target while its other addresses
// (the one every proxy node shares, the admin port) stay reachable.
type Link struct {
	// Addr is the link's address, to give the process instead of Target.
	Addr, Target string

	ln    net.Listener
	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

// StartLink relays a free loopback port to target until the test ends.
func StartLink(tb testing.TB, target string) *Link {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	l := &Link{Addr: ln.Addr().String(), Target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go l.serve()
	tb.Cleanup(func() {
		ln.Close()
		l.Cut()
	})
	return l
}

func (l *Link) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.relay(c)
	}
}

func (l *Link) relay(c net.Conn) {
	if !l.track(c) {
		c.Close()
		return
	}
	defer l.untrack(c)
	t, err := net.Dial("tcp", l.Target)
	if err != nil {
		c.Close()
		return
	}
	if !l.track(t) {
		t.Close()
		c.Close()
		return
	}
	defer l.untrack(t)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(t, c)
	go pipe(c, t)
	<-done
	<-done
}

func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

// Cut closes every connection through the link and every new one.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for c := range l.conns {
		c.Close()
	}
	clear(l.conns)
}

// Heal lets connections through again.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = false
}
