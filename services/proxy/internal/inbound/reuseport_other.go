//go:build !unix

package inbound

import "syscall"

// reusePort is a no-op where SO_REUSEPORT does not exist: one node per
// address there.
func reusePort(network, address string, c syscall.RawConn) error { return nil }
