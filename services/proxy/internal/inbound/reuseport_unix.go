//go:build unix

package inbound

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort sets SO_REUSEPORT (and SO_REUSEADDR) on a listening socket
// before it binds, so that several proxy nodes on one machine bind the
// same address and the kernel spreads connections among them.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return &os.SyscallError{Syscall: "setsockopt SO_REUSEPORT", Err: serr}
	}
	return nil
}
