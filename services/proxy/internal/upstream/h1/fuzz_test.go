package h1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzH1MatchesTransport gives the same upstream answer, resp, to one
// request (a GET, a HEAD or a POST with a body, by method) made by Pool
// and by http.Transport, each on a connection of its own that the upstream
// closes after answering: both must give the same status, header, body,
// trailers and errors. The connections are in-memory pipes, so that a run
// opens no socket. TestDirectH1MatchesTransport (package upstream)
// compares the same through a node over TCP and TLS; the seeds are taken
// from its corpus.
func FuzzH1MatchesTransport(f *testing.F) {
	for i, resp := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 42\r\nX-Undeclared: b\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
		"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
		"HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nok",
		"\x16\x03\x01\x00\x05hello",
	} {
		f.Add(uint8(i%3), resp)
	}
	f.Fuzz(func(t *testing.T, method uint8, resp string) {
		if len(resp) > 64<<10 {
			return
		}
		direct := pipeRoundTrip(t, method, resp, true)
		transport := pipeRoundTrip(t, method, resp, false)
		if direct != transport {
			t.Errorf("Pool and http.Transport differ for %q:\n--- Pool\n%s\n--- http.Transport\n%s", resp, direct, transport)
		}
	})
}

// pipeRoundTrip makes one request through Pool (direct) or
// http.Transport to an upstream that answers resp and closes, and
// describes what came back.
func pipeRoundTrip(t *testing.T, method uint8, resp string, direct bool) string {
	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		node, up := net.Pipe()
		mu.Lock()
		conns = append(conns, node, up)
		mu.Unlock()
		go func() {
			defer up.Close()
			req, err := http.ReadRequest(bufio.NewReader(up))
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(up, resp)
		}()
		return node, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var req *http.Request
	switch method % 3 {
	case 0:
		req, _ = http.NewRequestWithContext(ctx, "GET", "http://up.test/x", nil)
	case 1:
		req, _ = http.NewRequestWithContext(ctx, "HEAD", "http://up.test/x", nil)
	default:
		req, _ = http.NewRequestWithContext(ctx, "POST", "http://up.test/x", io.NopCloser(strings.NewReader("hello")))
		req.ContentLength = 5
	}
	var res *http.Response
	var err error
	if direct {
		p := NewPool(dial, 4, time.Minute, 0, 1<<20)
		defer p.Close()
		res, err = p.RoundTrip(req, nil)
	} else {
		var protos http.Protocols
		protos.SetHTTP1(true)
		tr := &http.Transport{DialContext: dial, DisableCompression: true, MaxResponseHeaderBytes: 1 << 20, Protocols: &protos}
		defer tr.CloseIdleConnections()
		res, err = tr.RoundTrip(req)
	}
	if ctx.Err() != nil {
		t.Fatalf("direct %t: no answer in 10 s", direct)
	}
	if err != nil {
		return "error"
	}
	body, berr := io.ReadAll(res.Body)
	res.Body.Close()
	return fmt.Sprintf("%d %s length %d close %t\nheader %v\nbody %q (error %t)\ntrailer %v",
		res.StatusCode, res.Proto, res.ContentLength, res.Close, res.Header, body, berr != nil, res.Trailer)
}
