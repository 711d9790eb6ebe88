package forward

// streamStack is the stack, in bytes, that the forwarding of one request
// reaches (the route lookup, the client checks, the upstream round trip
// down to crypto/tls's record layer), rounded up.
const streamStack = 12 << 10

// growStack grows the calling goroutine's stack to hold streamStack more
// bytes, in one step, while the stack is still shallow.
//
// HTTP/2 runs every request's handler on a goroutine of its own, whose
// stack starts small (2 KiB, or the runtime's running average) and is
// grown by copying, doubling each time, as the request goes deeper: two or
// three copies per request, the last ones of a deep stack, each walking
// every frame to adjust its pointers. One growth from ServeHTTP's frame
// copies a handful of frames. HTTP/1.1's connection goroutine lives for
// many requests and keeps its grown stack, so it does not need this.
//
// The pad is only in the frame: the runtime grows the stack on entry for
// the whole frame, and since the branch is never taken the pad is never
// zeroed, so that a goroutine whose stack is already large pays a call.
//
//go:noinline
func growStack() {
	if padTaken {
		var pad [streamStack]byte
		touch(pad[:])
	}
}

// padTaken is never set; the compiler cannot know it, and keeps the pad.
var padTaken bool

// touch keeps pad's frame: the compiler cannot see that it does nothing.
//
//go:noinline
func touch(b []byte) {
	if len(b) == 0 {
		panic("forward: empty stack pad")
	}
}
