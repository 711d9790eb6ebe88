//go:build !unix

package h2

import "syscall"

// rcvBufControl does nothing here: dial sets the buffer once connected.
func rcvBufControl(int) func(network, address string, c syscall.RawConn) error { return nil }
