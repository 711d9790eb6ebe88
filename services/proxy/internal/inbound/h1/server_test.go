package h1

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testMaxHeaderBytes is small, so that 431 is cheap to reach.
const testMaxHeaderBytes = 1 << 10

// echo is a handler with one path per response shape: what net/http's
// server and Server must frame the same way.
func echo(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	switch r.URL.Path {
	case "/empty":
	case "/flush":
		io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		io.WriteString(w, "b")
	case "/flushempty":
		w.(http.Flusher).Flush()
	case "/big":
		w.Write(bytes.Repeat([]byte("x"), 3000))
	case "/bigcl":
		h.Set("Content-Length", "3000")
		w.Write(bytes.Repeat([]byte("y"), 3000))
	case "/cl":
		h.Set("Content-Length", "5")
		io.WriteString(w, "hello")
	case "/clct":
		// Declared length and type: the header is settled at
		// WriteHeader; later changes are ignored, as net/http ignores
		// them.
		h.Set("Content-Length", "5")
		h.Set("Content-Type", "text/x")
		w.WriteHeader(http.StatusCreated)
		h.Set("X-Late", "ignored")
		h.Del("Content-Type")
		io.WriteString(w, "hello")
	case "/clct-close":
		h.Set("Content-Length", "0")
		h.Set("Content-Type", "text/x")
		h.Set("Connection", "close")
		w.WriteHeader(http.StatusOK)
	case "/clte-settled":
		h.Set("Content-Length", "5")
		h.Set("Transfer-Encoding", "chunked")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "hello")
	case "/ce-settled":
		h.Set("Content-Length", "2")
		h.Set("Content-Encoding", "gzip")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "\x1f\x8b")
	case "/short":
		h.Set("Content-Length", "10")
		io.WriteString(w, "hello")
	case "/long":
		h.Set("Content-Length", "2")
		if _, err := io.WriteString(w, "hello"); err != nil {
			h.Set("X-Never", "sent")
		}
	case "/badcl":
		h.Set("Content-Length", "nope")
		io.WriteString(w, "hello")
	case "/trailer":
		h.Set("Trailer", "X-Sum, Content-Length")
		io.WriteString(w, "body")
		h.Set("X-Sum", "42")
		h.Set(http.TrailerPrefix+"X-Late", "late")
	case "/lateTrailer":
		io.WriteString(w, "body")
		h.Set(http.TrailerPrefix+"X-Late", "late")
	case "/1xx":
		h.Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		h.Del("Link")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "ok")
	case "/100":
		w.WriteHeader(http.StatusContinue)
		io.WriteString(w, "ok")
	case "/204":
		h.Set("Content-Length", "3")
		w.WriteHeader(http.StatusNoContent)
		io.WriteString(w, "abc")
	case "/304":
		h.Set("Content-Length", "10")
		h.Set("Content-Type", "text/plain")
		h.Set("Etag", `"x"`)
		w.WriteHeader(http.StatusNotModified)
	case "/close":
		h.Set("Connection", "close")
		io.WriteString(w, "bye")
	case "/keepalive":
		h.Set("Connection", "keep-alive")
		h.Set("Content-Length", "2")
		io.WriteString(w, "ka")
	case "/identity":
		h.Set("Transfer-Encoding", "identity")
		io.WriteString(w, "until close")
	case "/chunkedte":
		h.Set("Transfer-Encoding", "chunked")
		io.WriteString(w, "chunks")
	case "/clte":
		h.Set("Transfer-Encoding", "gzip")
		h.Set("Content-Length", "3")
		io.WriteString(w, "abc")
	case "/sniff":
		io.WriteString(w, "<html><body>hi</body></html>")
	case "/nosniff":
		h["Content-Type"] = nil
		io.WriteString(w, "<html>")
	case "/ce":
		h.Set("Content-Encoding", "gzip")
		io.WriteString(w, "\x1f\x8b")
	case "/error":
		http.Error(w, "nope", http.StatusTeapot)
	case "/status999":
		w.WriteHeader(999)
	case "/headerafter":
		h.Set("X-Before", "1")
		w.WriteHeader(http.StatusAccepted)
		h.Set("X-After", "1")
		io.WriteString(w, "x")
	case "/superfluous":
		w.WriteHeader(http.StatusCreated)
		w.WriteHeader(http.StatusGone)
	case "/panic":
		io.WriteString(w, "partial")
		panic("boom")
	case "/abort":
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case "/hijack":
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer c.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nbuffered %d\n", brw.Reader.Buffered())
		brw.Flush()
	case "/101":
		h.Set("Upgrade", "x")
		h.Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
	case "/noread":
		io.WriteString(w, "ignored your body")
	case "/halfread":
		buf := make([]byte, 10)
		n, _ := io.ReadFull(r.Body, buf)
		fmt.Fprintf(w, "read %q", buf[:n])
	case "/closebody":
		r.Body.Close()
		_, err := r.Body.Read(make([]byte, 1))
		fmt.Fprintf(w, "after close: %v", err)
	case "/fullduplex":
		http.NewResponseController(w).EnableFullDuplex()
		io.WriteString(w, "first ")
		b, err := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%q %v", b, err)
	case "/deadline":
		rc := http.NewResponseController(w)
		fmt.Fprintf(w, "%v %v", rc.SetReadDeadline(time.Now().Add(time.Minute)), rc.SetWriteDeadline(time.Now().Add(time.Minute)))
	default:
		// Echo the request as parsed.
		b, err := io.ReadAll(r.Body)
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range r.Header {
				if !yield(k) {
					return
				}
			}
		})
		fmt.Fprintf(w, "%s %q %s host=%q cl=%d te=%v close=%t\n", r.Method, r.RequestURI, r.Proto, r.Host, r.ContentLength, r.TransferEncoding, r.Close)
		for _, k := range keys {
			fmt.Fprintf(w, "%s=%q\n", k, r.Header[k])
		}
		fmt.Fprintf(w, "body %q err %v trailer %v\n", b, err, r.Trailer)
	}
}

// servers is net/http's server and Server, serving the same handler on
// Unix sockets: they close and half-close as TCP does, and leave no port in
// TIME_WAIT (a fuzzing run opens hundreds of thousands of connections).
type servers struct {
	std, h1 string
}

func listen(t testing.TB, dir, name string) net.Listener {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func startServers(t testing.TB, handler http.Handler) servers {
	t.Helper()
	quiet := log.New(io.Discard, "", 0)
	// Short: a socket's path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "h1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	stdLn := listen(t, dir, "std")
	std := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: testMaxHeaderBytes, ErrorLog: quiet}
	go std.Serve(stdLn)
	t.Cleanup(func() { std.Close() })

	ln := listen(t, dir, "h1")
	srv := &Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: testMaxHeaderBytes, ErrorLog: quiet}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return servers{std: stdLn.Addr().String(), h1: ln.Addr().String()}
}

var dateLine = regexp.MustCompile(`(?m)^Date: [^\r\n]*\r$`)

// exchange sends raw on a new connection to addr, half-closes it and
// returns everything read until the server closes, with Date values
// blanked.
func exchange(t testing.TB, addr, raw string) string {
	c, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var got bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(&got, c)
		done <- err
	}()
	if _, err := io.WriteString(c, raw); err == nil {
		c.(*net.UnixConn).CloseWrite()
	}
	err = <-done
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: no end of the answer to %q in 10 s; got %q", addr, raw, got.String())
	}
	return dateLine.ReplaceAllString(got.String(), "Date: (now)\r")
}

// same sends raw to both servers and fails when the answers differ; it
// returns net/http's.
func (s servers) same(t testing.TB, raw string) string {
	t.Helper()
	var std, got string
	var wg sync.WaitGroup
	wg.Go(func() { std = exchange(t, s.std, raw) })
	wg.Go(func() { got = exchange(t, s.h1, raw) })
	wg.Wait()
	if std != got {
		t.Errorf("answers to %q differ:\n--- net/http\n%s\n--- h1\n%s", raw, std, got)
	}
	return std
}

func get1(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: a.test\r\n\r\n" }

// TestServeMatchesNetHTTP sends the same raw requests to net/http's
// server and to Server, serving the same handler: the bytes that come
// back must be the same (but for Date), including how and when the
// connection ends.
func TestServeMatchesNetHTTP(t *testing.T) {
	t.Parallel()
	s := startServers(t, http.HandlerFunc(echo))
	paths := []string{"/", "/empty", "/flush", "/flushempty", "/big", "/bigcl", "/cl", "/clct", "/clct-close", "/clte-settled", "/ce-settled", "/short", "/long", "/badcl",
		"/trailer", "/lateTrailer", "/1xx", "/100", "/204", "/304", "/close", "/keepalive", "/identity", "/chunkedte", "/clte",
		"/sniff", "/nosniff", "/ce", "/error", "/status999", "/headerafter", "/superfluous", "/panic", "/abort", "/hijack",
		"/101", "/noread", "/halfread", "/closebody", "/fullduplex", "/deadline"}
	cases := map[string]string{}
	for _, p := range paths {
		// Each shape, then a second request on the same connection:
		// kept or not, as net/http keeps it.
		cases["GET "+p] = get1(p) + get1("/after")
		cases["HEAD "+p] = "HEAD " + p + " HTTP/1.1\r\nHost: a.test\r\n\r\n" + get1("/after")
		cases["HTTP/1.0 "+p] = "GET " + p + " HTTP/1.0\r\n\r\n"
		cases["HTTP/1.0 keep-alive "+p] = "GET " + p + " HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + get1("/after")
		cases["POST "+p] = "POST " + p + " HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n\r\nhello world" + get1("/after")
		cases["chunked POST "+p] = "POST " + p + " HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n" + get1("/after")
		cases["close "+p] = "GET " + p + " HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n" + get1("/after")
	}
	for name, raw := range map[string]string{
		"pipelined":             get1("/") + get1("/cl") + get1("/big") + "HEAD /cl HTTP/1.1\r\nHost: a\r\n\r\n" + get1("/trailer"),
		"expect 100-continue":   "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello" + get1("/after"),
		"expect unread":         "POST /noread HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello" + get1("/after"),
		"expect no body":        "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n" + get1("/after"),
		"expect 1.0":            "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
		"expect unknown":        "GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n" + get1("/after"),
		"big unread body":       "POST /noread HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n" + strings.Repeat("z", 300000) + get1("/after"),
		"unread body in bounds": "POST /noread HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n" + strings.Repeat("z", 200000) + get1("/after"),
		"big unread chunked":    "POST /noread HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1000\r\n"+strings.Repeat("c", 4096)+"\r\n", 70) + "0\r\n\r\n" + get1("/after"),
		"half-read big body":    "POST /halfread HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n" + strings.Repeat("z", 300000) + get1("/after"),
		"truncated body":        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\nshort",
		"truncated chunked":     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
		"POST then CRLF":        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok\r\n" + get1("/after"),
		"OPTIONS *":             "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n" + get1("/after"),
		"OPTIONS * body":        "OPTIONS * HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("o", 5000) + get1("/after"),
		"absolute form":         "GET http://b.test/x?y HTTP/1.1\r\nHost: a\r\n\r\n" + get1("/after"),
		"absolute no Host":      "GET http://b.test/x HTTP/1.1\r\n\r\n" + get1("/after"),
		"empty Host":            "GET / HTTP/1.1\r\nHost:\r\n\r\n" + get1("/after"),
		"CONNECT":               "CONNECT b.test:443 HTTP/1.1\r\n\r\n" + get1("/after"),
		"PRI":                   "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"PRI with Host":         "PRI * HTTP/2.0\r\nHost: a\r\n\r\n",
		"header near limit":     "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + strings.Repeat("p", testMaxHeaderBytes+3000) + "\r\n\r\n" + get1("/after"),
		"pragma":                "GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
		"leading CRLF":          "\r\n" + get1("/"),
		"nothing":               "",
		"not HTTP":              "\x16\x03\x01\x00\x05hello",
	} {
		cases[name] = raw
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s.same(t, raw)
		})
	}
}
