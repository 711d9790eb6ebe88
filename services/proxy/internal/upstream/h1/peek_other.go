//go:build !linux

package h1

import "net"

// idlePeek is only done on Linux; elsewhere an idle connection the server
// closed is found when it is used (and the request retried when net/http
// would retry it).
type idlePeek struct{}

func (*idlePeek) init(net.Conn)      {}
func (*idlePeek) idleReadable() bool { return false }
