package h1

import (
	"crypto/tls"
	"net"
	"syscall"
)

// idlePeek finds out whether a connection idle in the pool has something to
// read in its socket: bytes nobody asked for, or the server's close. The
// Transport finds both with the read it keeps pending on every idle
// connection; this is one non-blocking peek when the connection is taken.
// The raw connection and the callback are made once per connection, so
// that a peek allocates nothing.
type idlePeek struct {
	rc       syscall.RawConn // nil: not a socket
	fn       func(fd uintptr) bool
	readable bool
	b        [1]byte
}

// init prepares p for conn; p must not move afterwards (fn points into it).
func (p *idlePeek) init(conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	p.rc, p.fn = rc, p.peek
}

func (p *idlePeek) peek(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), p.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	p.readable = n > 0 || err == nil || (err != syscall.EAGAIN && err != syscall.EINTR)
	return true
}

// idleReadable reports whether the socket has something to read (or is
// gone).
func (p *idlePeek) idleReadable() bool {
	if p.rc == nil {
		return false
	}
	if err := p.rc.Read(p.fn); err != nil {
		return true
	}
	return p.readable
}
