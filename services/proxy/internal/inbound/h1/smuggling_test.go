package h1

import (
	"net/http"
	"strings"
	"testing"
)

// smuggling are requests that HTTP request smuggling and desync attacks
// are made of, each followed on the same connection by a GET of /after:
// an answer to /after shows that the server kept the connection and
// where it took the next request to start. want is the first status line
// net/http's server answers with: some are refusals, others requests
// net/http takes (Transfer-Encoding wins over Content-Length, whose body
// is then read as chunked; obs-fold is unfolded), and Server must take
// them the same way.
var smuggling = []struct {
	name, raw, want string
}{
	{"CL.TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED", "HTTP/1.1 200 OK"},
	{"TE.CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"duplicate CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "HTTP/1.1 200 OK"},
	{"conflicting CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "HTTP/1.1 400 Bad Request"},
	{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", "HTTP/1.1 400 Bad Request"},
	{"CL list conflicting", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", "HTTP/1.1 400 Bad Request"},
	{"CL negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"CL plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", "HTTP/1.1 400 Bad Request"},
	{"CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", "HTTP/1.1 400 Bad Request"},
	{"CL spaces inside", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 1\r\n\r\nhello world", "HTTP/1.1 400 Bad Request"},
	{"CL padded", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  5 \r\n\r\nhello", "HTTP/1.1 200 OK"},
	{"CL huge", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", "HTTP/1.1 200 OK"},
	{"obs-fold TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"obs-fold first line", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"bare CR line end", "GET / HTTP/1.1\rHost: a\r\r", "HTTP/1.1 400 Bad Request"},
	{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", "HTTP/1.1 200 OK"},
	{"bare LF chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", "HTTP/1.1 200 OK"},
	{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", "HTTP/1.1 400 Bad Request: missing required Host header"},
	{"space before colon TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request: invalid header name"},
	{"invalid name", "GET / HTTP/1.1\r\nHost: a\r\nX@Y: 1\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"chunk size invalid", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"chunk size negative", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"chunk size overflow", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"chunk size 0x", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"chunk extension", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"chunk size space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"chunk data overrun", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"chunk unread overrun", "POST /noread HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"TE chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 501 Not Implemented"},
	{"TE two headers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 501 Not Implemented"},
	{"TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 501 Not Implemented"},
	{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello", "HTTP/1.1 501 Not Implemented"},
	{"TE case", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 501 Not Implemented"},
	{"TE tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK"},
	{"TE empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", "HTTP/1.1 501 Not Implemented"},
	{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.0 200 OK"},
	{"TE vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \vchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"header too large", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", testMaxHeaderBytes+4096) + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
	{"many headers", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-M: m\r\n", 1000) + "\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
	{"request line too long", "GET /" + strings.Repeat("l", testMaxHeaderBytes+4096) + " HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
	{"no Host", "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request: missing required Host header"},
	{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"two Hosts absolute", "GET http://c/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "HTTP/1.1 400 Bad Request: malformed Host header"},
	{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", "HTTP/1.1 400 Bad Request: malformed Host header"},
	{"Host control", "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"Host bracket", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", "HTTP/1.1 200 OK"},
	{"Host malformed absolute", "GET http://c/ HTTP/1.1\r\nHost: a b\r\n\r\n", "HTTP/1.1 400 Bad Request: malformed Host header"},
	{"Host empty absolute", "GET http://c/ HTTP/1.1\r\nHost:\r\n\r\n", "HTTP/1.1 200 OK"},
	{"CONNECT bad Host", "CONNECT c:443 HTTP/1.1\r\nHost: a b\r\n\r\n", "HTTP/1.1 400 Bad Request: malformed Host header"},
	{"HTTP/1.0 no Host", "GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 200 OK"},
	{"version 9.9", "GET / HTTP/9.9\r\nHost: a\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version"},
	{"version 0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version"},
	{"version 2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", "HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version"},
	{"version 1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", "HTTP/1.1 200 OK"},
	{"version lowercase", "GET / http/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"trailing junk", "GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"bad method", "G(ET / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"bad URI", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"URI not a path", "GET a HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400 Bad Request"},
	{"trailer smuggles a header", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\nhello", "HTTP/1.1 200 OK"},
	{"trailer obs-fold", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n", "HTTP/1.1 200 OK"},
}

// TestSmugglingRefusedAsNetHTTP holds Server to net/http's answer for
// each request of the corpus: the same bytes back (status line, header,
// body), and the connection kept or closed the same way (the /after that
// follows is answered by both or by neither).
func TestSmugglingRefusedAsNetHTTP(t *testing.T) {
	t.Parallel()
	s := startServers(t, http.HandlerFunc(echo))
	for _, tc := range smuggling {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			std := s.same(t, tc.raw+get1("/after"))
			first, _, _ := strings.Cut(std, "\r\n")
			if first != tc.want {
				t.Errorf("net/http answered %q, the corpus says %q (whole answer %q)", first, tc.want, std)
			}
		})
	}
}
