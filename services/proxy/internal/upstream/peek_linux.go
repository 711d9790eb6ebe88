package upstream

import (
	"crypto/tls"
	"net"
	"syscall"
)

// idleReadable reports whether conn, idle in the pool, has something to
// read in its socket: bytes nobody asked for, or the server's close. The
// Transport finds both with the read it keeps pending on every idle
// connection; this is one non-blocking peek when the connection is taken.
func idleReadable(conn net.Conn) bool {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	readable := false
	var b [1]byte
	if err := rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		readable = n > 0 || err == nil || (err != syscall.EAGAIN && err != syscall.EINTR)
		return true
	}); err != nil {
		return true
	}
	return readable
}
