//go:build !linux

package upstream

import "net"

// idleReadable is only known on Linux; elsewhere an idle connection the
// server closed is found when it is used (and the request retried).
func idleReadable(net.Conn) bool { return false }
