//go:build unix

package h2

import "syscall"

// rcvBufControl sets a socket's receive buffer before it connects, so
// that the window it advertises is small from the start.
func rcvBufControl(n int) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
		}); cerr != nil {
			return cerr
		}
		return err
	}
}
