package h1

import (
	"net/http"
	"testing"
)

// FuzzServeMatchesNetHTTP sends the same fuzzed bytes to net/http's
// server and to Server, on connections of their own over Unix sockets, each
// serving the echo handler: both must answer the same bytes (but for
// Date) and end the connection the same way. The seeds are the
// differential and smuggling corpora.
func FuzzServeMatchesNetHTTP(f *testing.F) {
	for _, tc := range smuggling {
		f.Add(tc.raw + get1("/after"))
	}
	for _, p := range []string{"/", "/flush", "/big", "/trailer", "/1xx", "/204", "/304", "/close", "/identity", "/noread", "/halfread", "/hijack", "/panic"} {
		f.Add(get1(p) + "HEAD " + p + " HTTP/1.1\r\nHost: a\r\n\r\n" + "POST " + p + " HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc")
		f.Add("POST " + p + " HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: t\r\n\r\n" + get1("/"))
	}
	s := startServers(f, http.HandlerFunc(echo))
	f.Fuzz(func(t *testing.T, raw string) {
		if len(raw) > 64<<10 {
			return
		}
		s.same(t, raw)
	})
}
