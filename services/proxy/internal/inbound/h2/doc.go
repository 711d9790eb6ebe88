// Package h2 serves HTTP/2 connections for package inbound. It is the
// server side of golang.org/x/net/http2 at v0.61.0 (with the internal
// packages it needs, httpcommon and httpsfv), changed where a proxy pays
// for it on every response. Every change is marked "keyway:" in the code;
// the rest is upstream's, line for line, so that upstream's fixes apply.
//
// What changed:
//
//   - A handler that returns with its whole response buffered (up to the
//     4 KiB response buffer: the common case behind a proxy) hands its
//     HEADERS and DATA frames to the connection's serve loop in one
//     message, and does not wait for them to be written: the response
//     state goes back to its pool once they are. net/http's server sends
//     the two separately and waits for each, and the loop usually
//     flushes between them: two hand-offs and two socket writes where
//     this takes one and one.
//   - The serve loop writes its flushes itself (at most the 4 KiB write
//     buffer), and HEADERS frames that fit that buffer, instead of in a
//     goroutine per write (upstream writes every HEADERS frame so). Each
//     write to the connection has a deadline 15 to 30 s ahead: a client
//     that takes longer to accept one loses its connection (NGINX's
//     send_timeout, 60 s, bounds the same). Larger DATA frames are still
//     written by a goroutine of their own.
//   - Server.Shutdown and Server.Close act on the server's connections
//     (x/net's server needs net/http's Shutdown for that), including one
//     taken in after Shutdown began, which sends GOAWAY as soon as it
//     serves; ServeConnOpts.Registered tells the caller when a connection
//     is the server's.
//   - SETTINGS_NO_RFC7540_PRIORITIES is not sent, and the write scheduler
//     is round-robin: as net/http's server in Go 1.26, so that the frames
//     are its frames.
//
// TestServeMatchesNetHTTP sends the same frames to net/http's HTTP/2
// server and to this one, serving the same handler, for every response
// shape a handler makes and the malformed requests net/http refuses, and
// requires the same frames back (Date aside, and what is timing rather
// than behaviour: where flow control cut DATA, how WINDOW_UPDATEs were
// batched).
package h2
