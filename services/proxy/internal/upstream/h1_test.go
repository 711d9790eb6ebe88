package upstream_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/proxy/internal/upstream"
)

// The HTTP/1.1 round trip in the calling goroutine (the default for an
// HTTP/1.1 upstream) against http.Transport (Options.DisableDirectH1): the
// same client requests through a node's forwarding path, to the same
// scripted upstream, must give identical bytes at the upstream (and on
// the same upstream connections) and identical bytes at the client,
// whatever the upstream answers: well-formed responses of every shape,
// and malformed ones (the response-smuggling corpus), which must be
// refused exactly as net/http refuses them.

// exchange is one client request and what the upstream answers to the
// request it leads to (if one gets there).
type exchange struct {
	// req is the client's request as sent on the wire; "" is a plain GET.
	req string
	// resp is written back for the request; "" writes nothing.
	resp string
	// then, if set, is written after a pause (a second TCP segment).
	then string
	// close closes the upstream connection after the answer.
	close bool
	// hang waits for the client to go away before anything else.
	hang bool
	// resent is the previous request sent again by the node, if it
	// retries it: no client sends a request of its own for it.
	resent bool
}

const plainGET = "GET /x?q=1 HTTP/1.1\r\nHost: gw.test\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"

func get200(body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

type diffCase struct {
	name string
	ex   []exchange
	// headerTimeout, if set, is the Upstream's ResponseHeaderTimeout.
	headerTimeout time.Duration
	// mixed: some requests go through http.Transport either way (a body,
	// a method that may not be sent twice), on the Transport's own
	// connections, so which upstream connection a request arrives on is
	// not compared.
	mixed bool
	// upstreamIdle, if set, has the upstream close a connection idle
	// that long: an answer read until the close ends then.
	upstreamIdle time.Duration
}

var wellFormed = []diffCase{
	{"content-length", []exchange{{resp: get200("hello")}, {resp: get200("again")}}, 0, false, 0},
	{"chunked with trailers", []exchange{
		{resp: "HTTP/1.1 200 OK\r\nTrailer: X-Sum, X-Other\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\nX-Other: a\r\nX-Undeclared: b\r\n\r\n"},
		{resp: get200("reused")}}, 0, false, 0},
	{"chunked with extensions", []exchange{{resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n"}, {resp: get200("b")}}, 0, false, 0},
	{"head", []exchange{
		{req: "HEAD /h HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n", resp: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\n"},
		{resp: get200("after head")}}, 0, false, 0},
	{"204 and 304", []exchange{
		{resp: "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"},
		{resp: "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 99\r\n\r\n"},
		{resp: get200("after 304")}}, 0, false, 0},
	{"1xx", []exchange{
		{resp: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </b.js>\r\n\r\n" + get200("final")},
		{resp: get200("next")}}, 0, false, 0},
	{"unsolicited 101", []exchange{{resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"}, {resp: get200("fresh")}}, 0, false, 0},
	{"http/1.0 until close", []exchange{{resp: "HTTP/1.0 200 OK\r\n\r\nold style body", close: true}, {resp: get200("b")}}, 0, false, 0},
	{"http/1.1 without length", []exchange{{resp: "HTTP/1.1 200 OK\r\n\r\nuntil close", close: true}, {resp: get200("b")}}, 0, false, 0},
	{"connection close", []exchange{{resp: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"}, {resp: get200("new conn")}}, 0, false, 0},
	{"hop-by-hop both ways", []exchange{{
		req:  "GET /hop HTTP/1.1\r\nHost: gw.test\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nTE: trailers\r\nKeep-Alive: 5\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=x\r\n\r\n",
		resp: "HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\nk"}}, 0, false, 0},
	{"options and idempotency key", []exchange{
		{req: "OPTIONS * HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n", resp: get200("opt")},
		{req: "POST /p HTTP/1.1\r\nHost: gw.test\r\nIdempotency-Key: k1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", resp: get200("post")},
		{req: "DELETE /d HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n", resp: get200("del")}}, 0, true, 0},
	{"request with a body", []exchange{
		{req: "POST /b HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", resp: get200("got")},
		{req: "POST /c HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n", resp: get200("got")}}, 0, true, 0},
	{"server closed the idle connection", []exchange{{resp: get200("one"), close: true}, {resp: get200("two")}}, 0, false, 0},
	{"request bodies of known length", []exchange{
		{req: "POST /b HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", resp: get200("post")},
		{req: "PUT /b HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nabc", resp: get200("put")},
		{req: "DELETE /d HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n", resp: get200("del")},
		{req: "POST /e HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", resp: get200("empty")},
		{req: "PATCH /f HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 65536\r\nConnection: close\r\n\r\n" + strings.Repeat("x", 65536), resp: get200("64k")}}, 0, false, 0},
	{"early answer to a request with a body", []exchange{
		{req: "POST /b HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", resp: "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", close: true},
		{resp: get200("next")}}, 0, false, 0},
	// The stray response comes just after the 204, not in the same segment:
	// with both in one segment, whether http.Transport sees it before it
	// reuses the connection depends on scheduling (on a loaded machine it
	// takes "smuggled" as the next answer; the direct round trip never does).
	{"unsolicited bytes after a response", []exchange{{resp: "HTTP/1.1 204 No Content\r\n\r\n", then: get200("smuggled")}, {resp: get200("real")}}, 0, false, 0},
	{"unsolicited bytes later", []exchange{{resp: get200("first"), then: get200("late")}, {resp: get200("real")}}, 0, false, 0},
	{"no answer on a fresh connection", []exchange{{close: true}, {resp: get200("next")}}, 0, false, 0},
	{"truncated body", []exchange{{resp: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", close: true}, {resp: get200("next")}}, 0, false, 0},
	{"truncated chunked body", []exchange{{resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", close: true}, {resp: get200("next")}}, 0, false, 0},
	{"header timeout", []exchange{{hang: true}, {resp: get200("next")}}, 300 * time.Millisecond, false, 0},
	{"headers over the limit", []exchange{{resp: "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 1<<20+10) + "\r\nContent-Length: 0\r\n\r\n"}, {resp: get200("next")}}, 0, false, 0},
	{"1xx over the limit", []exchange{{resp: "HTTP/1.1 103 Early Hints\r\nX-Big: " + strings.Repeat("a", 1<<19) + "\r\n\r\nHTTP/1.1 103 Early Hints\r\nX-Big: " + strings.Repeat("a", 1<<19) + "\r\n\r\n" + get200("final")}}, 0, false, 0},
}

// A reused connection that the upstream closes after reading the request,
// without a byte of answer: sent again on a new connection when net/http
// would (a replayable request: no body, and GET, HEAD, OPTIONS, TRACE or an
// Idempotency-Key), answered 502 otherwise.
var retries = func() []diffCase {
	var out []diffCase
	for _, r := range []struct{ name, req string }{
		{"GET", plainGET},
		{"HEAD", "HEAD /h HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"},
		{"DELETE", "DELETE /d HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"},
		{"POST with a body", "POST /p HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"},
		{"POST with an Idempotency-Key", "POST /p HTTP/1.1\r\nHost: gw.test\r\nIdempotency-Key: k\r\nConnection: close\r\n\r\n"},
		{"POST with an Idempotency-Key and a body", "POST /p HTTP/1.1\r\nHost: gw.test\r\nIdempotency-Key: k\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"},
	} {
		out = append(out, diffCase{name: "reused connection closed without an answer: " + r.name,
			ex: []exchange{{resp: get200("first")}, {req: r.req, close: true}, {resp: get200("retried"), resent: true}}})
	}
	return out
}()

// The response-smuggling corpus: each answer is malformed or ambiguous;
// the next request shows whether the connection was kept.
var smuggling = func() []diffCase {
	var out []diffCase
	for _, r := range []struct{ name, resp string }{
		{"CL.TE", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"TE.CL", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"duplicate CL equal", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"},
		{"duplicate CL conflicting", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"},
		{"CL list", "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"},
		{"CL plus sign", "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok"},
		{"CL negative", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok"},
		{"CL hex", "HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok"},
		{"CL space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"},
		{"CL huge", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nok"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nok"},
		{"obs-fold CL", "HTTP/1.1 200 OK\r\nContent-Length:\r\n 2\r\n\r\nok"},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"},
		{"bare CR in value", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok"},
		{"bare CR line end", "HTTP/1.1 200 OK\rContent-Length: 2\r\n\r\nok"},
		{"NUL in value", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok"},
		{"space in name", "HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\nok"},
		{"invalid chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"},
		{"negative chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"},
		{"chunk size overflow", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n"},
		{"chunk size with space", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"},
		{"chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n"},
		{"chunk bare LF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"},
		{"TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"TE chunked, identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"TE identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok"},
		{"TE xchunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"TE Chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"TE twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"TE with tab", "HTTP/1.1 200 OK\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"TE in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"status 2000", "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"status 99", "HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nok"},
		{"status without reason", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"},
		{"HTTP/2.0 status line", "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"not HTTP", "ICY 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"garbage", "\x16\x03\x01\x00\x05hello"},
	} {
		// A header timeout ends the answers that never end.
		out = append(out, diffCase{name: r.name, ex: []exchange{{resp: r.resp}, {resp: get200("next")}}, headerTimeout: time.Second, upstreamIdle: 3 * time.Second})
	}
	// Bytes after the end of a response. Whether http.Transport sees them
	// before it reuses the connection depends on when its readLoop runs
	// (with them in the same segment as the response, a loaded machine
	// reuses the connection first and parses them as the next response), so
	// they come late enough for it to see them: it then closes the
	// connection, as the direct round trip does.
	for _, r := range []struct{ name, resp, then string }{
		{"204 with body", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "hello"},
		{"body longer than CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad"},
	} {
		out = append(out, diffCase{name: r.name, ex: []exchange{{resp: r.resp, then: r.then}, {resp: get200("next")}}, headerTimeout: time.Second, upstreamIdle: 3 * time.Second})
	}
	// Requests the node's server refuses or reshapes before forwarding.
	for _, r := range []struct{ name, req string }{
		{"request CL.TE", "GET /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"},
		{"request duplicate CL", "GET /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab"},
		{"request obs-fold", "GET /s HTTP/1.1\r\nHost: gw.test\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n"},
		{"request bare LF", "GET /s HTTP/1.1\nHost: gw.test\nConnection: close\n\n"},
		{"request TE identity", "GET /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: identity\r\nConnection: close\r\n\r\n"},
		{"request invalid chunk", "POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"},
		{"request TE.CL", "POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"request duplicate CL equal", "POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab"},
		{"request CL list", "POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2, 2\r\nConnection: close\r\n\r\nab"},
		{"request CL plus sign", "POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: +2\r\nConnection: close\r\n\r\nab"},
		{"request CL negative", "POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: -1\r\nConnection: close\r\n\r\nab"},
		{"request CL space before colon", "POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length : 2\r\nConnection: close\r\n\r\nab"},
		{"request body longer than CL", "POST /s HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nabGET /smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n"},
		{"request TE chunked, identity", "POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"request TE gzip, chunked", "POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"request TE xchunked", "POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: xchunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"request TE twice", "POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"request TE in HTTP/1.0", "POST /s HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"request chunk size overflow", "POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n"},
		{"request chunk without CRLF", "POST /s HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabcX0\r\n\r\n"},
		{"request bare CR in value", "GET /s HTTP/1.1\r\nHost: gw.test\r\nX-A: a\rb\r\nConnection: close\r\n\r\n"},
		{"request NUL in value", "GET /s HTTP/1.1\r\nHost: gw.test\r\nX-A: a\x00b\r\nConnection: close\r\n\r\n"},
		{"request space in name", "GET /s HTTP/1.1\r\nHost: gw.test\r\nX A: b\r\nConnection: close\r\n\r\n"},
		{"request two hosts", "GET /s HTTP/1.1\r\nHost: gw.test\r\nHost: other.test\r\nConnection: close\r\n\r\n"},
		{"request absolute URI", "GET http://other.test/s HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"},
		{"request expect 100-continue", "POST /s HTTP/1.1\r\nHost: gw.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab"},
	} {
		// Bodies of unknown length go through http.Transport either
		// way, on its own connections.
		mixed := strings.Contains(strings.ToLower(r.req), "transfer-encoding") || strings.Contains(r.req, "Expect")
		out = append(out, diffCase{name: r.name, ex: []exchange{{req: r.req, resp: get200("r")}, {resp: get200("next")}}, mixed: mixed})
	}
	return out
}()

func TestDirectH1MatchesTransport(t *testing.T) {
	t.Parallel()
	for _, c := range slices.Concat(wellFormed, retries, smuggling) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, tlsOn := range []bool{false, true} {
				direct := runDiff(t, c, tlsOn, false)
				transport := runDiff(t, c, tlsOn, true)
				if direct.String() != transport.String() {
					t.Errorf("tls %t: direct round trip and http.Transport differ:\n--- direct\n%s\n--- transport\n%s", tlsOn, direct, transport)
				}
			}
		})
	}
}

// Connections are kept and taken most recently used first, and a drained
// Upstream keeps none.
func TestDirectH1ReusesConnections(t *testing.T) {
	t.Parallel()
	c := diffCase{name: "reuse"}
	for range 20 {
		c.ex = append(c.ex, exchange{resp: get200("x")})
	}
	out := runDiff(t, c, true, false)
	if !strings.Contains(out.String(), "upstream conn 0 ") || strings.Contains(out.String(), "upstream conn 1 ") {
		t.Errorf("20 sequential requests did not share one upstream connection:\n%s", out)
	}
}

// A pooled connection idle for IdleConnTimeout is closed, and a drained
// Upstream closes its idle connections at once.
func TestDirectH1ClosesIdleConnections(t *testing.T) {
	t.Parallel()
	for _, idle := range []time.Duration{100 * time.Millisecond, time.Hour} {
		p := newPKI(t)
		up := newScripted(t, []exchange{{resp: get200("a")}}, true, p, 0)
		u, err := upstream.New(&model.Service{Name: "idle", Endpoints: []string{up.addr()}, Protocol: model.ProtocolHTTP1},
			outbound(p, &p.client.TLS, func(o *model.OutboundTLS) { o.ALPN = []string{"http/1.1"} }),
			upstream.Options{IdleConnTimeout: idle})
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		u.Forward(w, httptest.NewRequest("GET", "/x", nil))
		if w.Code != 200 || w.Body.String() != "a" {
			t.Fatalf("got %d %q", w.Code, w.Body)
		}
		if idle == time.Hour {
			u.Drain(context.Background())
		}
		select {
		case id := <-up.closed:
			if id != 0 {
				t.Errorf("connection %d closed, want 0", id)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("idle timeout %v: the pooled connection is still open after 10 s", idle)
		}
		u.Drain(context.Background())
	}
}

var dateLine = regexp.MustCompile("(?m)^Date: .*\r\n")

// runDiff sends c's requests through an Upstream (over TLS when tlsOn;
// through http.Transport with viaTransport) and returns, in order, what the
// upstream read on which of its connections and what each client read.
func runDiff(t *testing.T, c diffCase, tlsOn, viaTransport bool) *bytes.Buffer {
	t.Helper()
	var p pki
	if tlsOn {
		p = newPKI(t)
	}
	up := newScripted(t, c.ex, tlsOn, p, c.upstreamIdle)
	var tlsCtx *model.OutboundTLS
	if tlsOn {
		tlsCtx = outbound(p, &p.client.TLS, func(o *model.OutboundTLS) { o.ALPN = []string{"http/1.1"} })
	}
	opts := upstream.Options{
		DisableDirectH1: viaTransport, ResponseHeaderTimeout: c.headerTimeout,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, u *upstream.Upstream, err *upstream.Error) int {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprintf(w, "%s: %s", err.Reason, err.Detail)
			return http.StatusBadGateway
		},
		Recorder: func(string) upstream.Recorder { return &up.rec },
	}
	u, err := upstream.New(&model.Service{Name: "diff", Endpoints: []string{up.addr()}, Protocol: model.ProtocolHTTP1}, tlsCtx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Drain(context.Background()) })
	node := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !u.Forward(w, r) {
			t.Error("Forward refused the request")
		}
	}))
	// A handler that panics (but for http.ErrAbortHandler, which ends a
	// truncated answer) is logged here.
	var serverLog syncBuffer
	node.Config.ErrorLog = log.New(&serverLog, "", 0)
	node.Start()
	t.Cleanup(func() {
		node.Close()
		if s := serverLog.String(); strings.Contains(s, "panic") {
			t.Errorf("the node's handler panicked:\n%s", s)
		}
	})

	out := &bytes.Buffer{}
	for i, ex := range c.ex {
		if ex.resent {
			up.waitIdle(i)
			continue
		}
		req := ex.req
		if req == "" {
			req = plainGET
		}
		conn, err := net.Dial("tcp", node.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(conn)
		conn.Close()

		up.waitIdle(i)
		fmt.Fprintf(out, "client %d read:\n%s\n", i, dateLine.ReplaceAll(got, []byte("Date: -\r\n")))
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for _, r := range up.reads {
		conn := fmt.Sprint(r.conn)
		if c.mixed {
			conn = "?"
		}
		fmt.Fprintf(out, "upstream conn %s read:\n%s\n", conn, r.head)
	}
	fmt.Fprintf(out, "recorded: %s\n", up.rec.String())
	// The upstreams of two runs listen on different ports.
	return bytes.NewBuffer(bytes.ReplaceAll(out.Bytes(), []byte(up.addr()), []byte("UPSTREAM")))
}

// scripted is an upstream that answers the n-th request head it reads
// (on whichever connection) with the n-th exchange's response.
type scripted struct {
	t     *testing.T
	ln    net.Listener
	ex    []exchange
	mu    sync.Mutex
	reads []read
	n     int
	// served counts the exchanges whose answer is fully written.
	served chan int
	rec    recorder
	idle   time.Duration
	// closed receives the id of each connection once it ended.
	closed chan int
}

type read struct {
	conn int
	head string
}

func newScripted(t *testing.T, ex []exchange, tlsOn bool, p pki, idle time.Duration) *scripted {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsOn {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{p.server.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.clients.Pool(), NextProtos: []string{"http/1.1"}})
	}
	s := &scripted{t: t, ln: ln, ex: ex, idle: idle, served: make(chan int, len(ex)+1), closed: make(chan int, 100)}
	t.Cleanup(func() { ln.Close() })
	go s.accept()
	return s
}

func (s *scripted) addr() string { return s.ln.Addr().String() }

func (s *scripted) accept() {
	for id := 0; ; id++ {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.serve(id, conn)
	}
}

func (s *scripted) serve(id int, conn net.Conn) {
	defer func() {
		conn.Close()
		s.closed <- id
	}()
	br := bufio.NewReader(conn)
	for {
		if s.idle > 0 {
			conn.SetReadDeadline(time.Now().Add(s.idle))
		}
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			head.WriteString(line)
			if err != nil {
				return
			}
			if line == "\r\n" || line == "\n" {
				break
			}
		}
		// A request whose body does not arrive whole is not counted:
		// how much of it got here before the node gave up is timing.
		if cl := regexp.MustCompile(`(?i)\ncontent-length: *(\d+)`).FindStringSubmatch(head.String()); cl != nil {
			var n int
			fmt.Sscan(cl[1], &n)
			body := make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			head.Write(body)
		} else if strings.Contains(strings.ToLower(head.String()), "transfer-encoding: chunked") {
			for {
				line, err := br.ReadString('\n')
				head.WriteString(line)
				if err != nil {
					return
				}
				if line == "0\r\n" {
					break
				}
			}
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
		}
		s.mu.Lock()
		i := s.n
		s.n++
		s.reads = append(s.reads, read{conn: id, head: head.String()})
		s.mu.Unlock()
		if i >= len(s.ex) {
			s.t.Errorf("upstream: request %d beyond the script", i)
			return
		}
		ex := s.ex[i]
		if ex.hang {
			// Until the node gives up (the header timeout): it closes.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			br.ReadByte()
			s.served <- i
			return
		}
		io.WriteString(conn, ex.resp)
		if ex.then != "" {
			time.Sleep(50 * time.Millisecond)
			io.WriteString(conn, ex.then)
		}
		s.served <- i
		if ex.close {
			return
		}
	}
}

// waitIdle waits until the upstream has finished answering exchange i, if
// it got it: the next request finds the connection as the answer left it.
func (s *scripted) waitIdle(i int) {
	s.mu.Lock()
	got := s.n > i
	s.mu.Unlock()
	if !got {
		return
	}
	select {
	case <-s.served:
	case <-time.After(10 * time.Second):
		s.t.Errorf("upstream: exchange %d not finished after 10 s", i)
	}
	if s.ex[i].then != "" {
		time.Sleep(250 * time.Millisecond) // the late bytes have arrived, and http.Transport's readLoop has seen them
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// recorder keeps what an Upstream reported, in order.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) Request(code int, reason failure.Reason, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf("%d %s", code, reason))
}

func (r *recorder) Release() {}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.got, ", ")
}

// A response with a stray one in the same segment behind it: the direct
// round trip never takes the stray one as the next answer (http.Transport
// may, when it reuses the connection before its readLoop has looked).
func TestDirectH1RefusesStrayBytesInTheSameSegment(t *testing.T) {
	t.Parallel()
	c := diffCase{name: "stray in one segment", ex: []exchange{{resp: "HTTP/1.1 204 No Content\r\n\r\n" + get200("smuggled")}, {resp: get200("real")}}}
	for _, tlsOn := range []bool{false, true} {
		got := runDiff(t, c, tlsOn, false).String()
		if strings.Contains(got, "smuggled") || !strings.Contains(got, "real") {
			t.Errorf("tls %t: the direct round trip answered with the stray response:\n%s", tlsOn, got)
		}
	}
}
