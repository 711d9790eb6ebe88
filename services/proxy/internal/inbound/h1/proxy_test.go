package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// upstream answers the proxied requests: one path per upstream answer
// the proxy relays.
func upstream(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	switch strings.TrimPrefix(r.URL.Path, "/up") {
	case "/trailer":
		h.Set("Trailer", "X-Sum")
		// One write, so one chunk: with a flush between two, whether the
		// proxy reads them as one or two depends on their arrival, and
		// so would the chunks it relays, through either server.
		io.WriteString(w, "part one,part two")
		h.Set("X-Sum", "17")
	case "/103":
		h.Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		h.Del("Link")
		io.WriteString(w, "after hints")
	case "/204":
		w.WriteHeader(http.StatusNoContent)
	case "/304":
		h.Set("Etag", `"v1"`)
		w.WriteHeader(http.StatusNotModified)
	case "/big":
		h.Set("Content-Type", "application/octet-stream")
		w.Write(bytes.Repeat([]byte("b"), 100<<10))
	case "/cl":
		h.Set("Content-Type", "text/plain")
		h.Set("Content-Length", "11")
		io.WriteString(w, "hello world")
	case "/upgrade":
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		ping := make([]byte, 4)
		if _, err := io.ReadFull(brw, ping); err == nil {
			brw.WriteString("pong:" + string(ping))
			brw.Flush()
		}
	default:
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s body %q %v te=%v cl=%d xff=%q", r.Method, r.RequestURI, b, err, r.TransferEncoding, r.ContentLength, r.Header.Get("X-Forwarded-For"))
	}
}

// TestProxyMatchesNetHTTP sends the same raw requests through
// httputil.ReverseProxy (the forwarding path's relay of 1xx, trailers
// and upgrades) served by net/http's server and by Server: the same
// bytes must come back. The client does not half-close here (net/http
// would cancel the requests' contexts, and with them the upstream
// requests); each case ends with a request that closes the connection.
func TestProxyMatchesNetHTTP(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(upstream))
	t.Cleanup(up.Close)
	target, _ := url.Parse(up.URL)
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	t.Cleanup(tr.CloseIdleConnections)
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: tr,
		ErrorLog:  nil,
	}
	s := startServers(t, proxy)
	const last = "GET /up/cl HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
	for name, raw := range map[string]string{
		"GET":              "GET /up/echo?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
		"length and type":  "GET /up/cl HTTP/1.1\r\nHost: a\r\n\r\n",
		"trailers":         "GET /up/trailer HTTP/1.1\r\nHost: a\r\n\r\n",
		"103":              "GET /up/103 HTTP/1.1\r\nHost: a\r\n\r\n",
		"204":              "GET /up/204 HTTP/1.1\r\nHost: a\r\n\r\n",
		"304":              "GET /up/304 HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"v1\"\r\n\r\n",
		"HEAD":             "HEAD /up/cl HTTP/1.1\r\nHost: a\r\n\r\n",
		"HEAD big":         "HEAD /up/big HTTP/1.1\r\nHost: a\r\n\r\n",
		"big":              "GET /up/big HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST":             "POST /up/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"chunked POST":     "POST /up/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"unread POST":      "POST /up/cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.0":         "GET /up/trailer HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"pipelined":        "GET /up/cl HTTP/1.1\r\nHost: a\r\n\r\nGET /up/trailer HTTP/1.1\r\nHost: a\r\n\r\nHEAD /up/cl HTTP/1.1\r\nHost: a\r\n\r\n",
		"upstream refused": "GET /up/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s.sameOpen(t, raw+last)
		})
	}
	t.Run("upgrade", func(t *testing.T) {
		t.Parallel()
		// The tunnel's bytes are sent once the 101 is read: what a
		// client sends before is not relayed (ReverseProxy's tunnel
		// reads the connection, not what the server buffered).
		got := map[string]string{}
		for _, addr := range []string{s.std, s.h1} {
			c, err := net.Dial("unix", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /up/upgrade HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("%s: %v %v, want 101", addr, res, err)
			}
			io.WriteString(c, "ping")
			b, _ := io.ReadAll(br)
			got[addr] = fmt.Sprintf("%v %s", res.Header, b)
		}
		if got[s.std] != got[s.h1] || !strings.HasSuffix(got[s.h1], "pong:ping") {
			t.Errorf("tunnels differ or do not echo:\n--- net/http\n%s\n--- h1\n%s", got[s.std], got[s.h1])
		}
	})
}

// sameOpen is same without the half-close: the servers end the
// connections.
func (s servers) sameOpen(t *testing.T, raw string) {
	t.Helper()
	var std, got string
	var wg sync.WaitGroup
	wg.Go(func() { std = exchangeOpen(t, s.std, raw) })
	wg.Go(func() { got = exchangeOpen(t, s.h1, raw) })
	wg.Wait()
	if std != got {
		t.Errorf("answers to %q differ:\n--- net/http\n%s\n--- h1\n%s", raw, std, got)
	}
}

func exchangeOpen(t *testing.T, addr, raw string) string {
	c, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	b, err := io.ReadAll(bufio.NewReader(c))
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		t.Fatalf("%s: no end of the answer to %q in 10 s; got %q", addr, raw, b)
	}
	return dateLine.ReplaceAllString(string(b), "Date: (now)\r")
}
