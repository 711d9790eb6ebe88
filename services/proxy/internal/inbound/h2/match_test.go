package h2_test

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	xh2 "golang.org/x/net/http2"
)

// shapes answers by path, in every way a handler can shape a response.
// A request body is read whole first (but by /echo and /noread): an
// answer sent before the client's DATA arrives ends the stream with
// RST_STREAM, from either server, as timing has it.
func shapes(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/echo" && r.URL.Path != "/noread" {
		_, _ = io.Copy(io.Discard, r.Body)
	}
	switch r.URL.Path {
	case "/":
		io.WriteString(w, "hello")
	case "/empty":
	case "/cl":
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	case "/json":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"a":1}`)
	case "/flush":
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		io.WriteString(w, "second")
	case "/flushempty":
		w.(http.Flusher).Flush()
	case "/big":
		io.WriteString(w, strings.Repeat("b", 200_000))
	case "/4k":
		io.WriteString(w, strings.Repeat("k", 4096))
	case "/4k+1":
		io.WriteString(w, strings.Repeat("k", 4097))
	case "/trailer":
		w.Header().Set("Trailer", "X-T")
		io.WriteString(w, "body")
		w.Header().Set("X-T", "t")
	case "/trailer-empty":
		w.Header().Set("Trailer", "X-T")
		io.WriteString(w, "body")
	case "/lateTrailer":
		io.WriteString(w, "body")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	case "/1xx":
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(103)
		io.WriteString(w, "after hints")
	case "/204":
		w.WriteHeader(204)
	case "/304":
		w.WriteHeader(304)
	case "/404":
		http.Error(w, "not here", 404)
	case "/sniff":
		io.WriteString(w, "<html><body>hi</body></html>")
	case "/echo":
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%s %d %q trailer=%q", r.Method, len(b), truncateS(string(b)), r.Trailer.Get("X-Req-T"))
	case "/noread":
		io.WriteString(w, "did not read")
	case "/panic":
		panic("boom")
	case "/abort":
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case "/close":
		w.Header().Set("Connection", "close")
		io.WriteString(w, "closing")
	case "/header-after":
		io.WriteString(w, "x")
		w.Header().Set("X-Late", "ignored")
	case "/status":
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		w.WriteHeader(code)
	case "/request":
		fmt.Fprintf(w, "%s %s host=%s proto=%s cl=%d te=%v h=%q", r.Method, r.RequestURI, r.Host, r.Proto, r.ContentLength, r.TransferEncoding, r.Header.Values("X-Multi"))
	case "/slow":
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, "slow")
	default:
		http.NotFound(w, r)
	}
}

func truncateS(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

// get is a request's HEADERS frame.
func request(fr *xh2.Framer, enc func(...string) []byte, stream uint32, endStream bool, fields ...string) {
	hdr := append([]string{":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/"}, fields...)
	// Later pseudo-headers given in fields replace the defaults.
	merged := map[string]int{}
	var out []string
	for i := 0; i+1 < len(hdr); i += 2 {
		if j, ok := merged[hdr[i]]; ok && strings.HasPrefix(hdr[i], ":") {
			out[j+1] = hdr[i+1]
			continue
		}
		merged[hdr[i]] = len(out)
		out = append(out, hdr[i], hdr[i+1])
	}
	var drop []string
	for i := 0; i+1 < len(out); i += 2 {
		if out[i+1] != "\x00" {
			drop = append(drop, out[i], out[i+1])
		}
	}
	_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: stream, BlockFragment: enc(drop...), EndStream: endStream, EndHeaders: true})
}

// TestServeMatchesNetHTTP sends the same frames to net/http's HTTP/2
// server and to package h2's, serving the same handler: the frames that
// come back must be the same (but for Date), in the same order, and the
// connection must end the same way.
func TestServeMatchesNetHTTP(t *testing.T) {
	t.Parallel()
	p := startPair(t, http.HandlerFunc(shapes), nil)
	paths := []string{"/", "/empty", "/cl", "/json", "/flush", "/flushempty", "/big", "/4k", "/4k+1", "/trailer", "/trailer-empty",
		"/lateTrailer", "/1xx", "/204", "/304", "/404", "/sniff", "/noread", "/panic", "/abort", "/close", "/header-after",
		"/status?code=200", "/status?code=999", "/status?code=100", "/request", "/slow"}
	cases := map[string]script{}
	for _, path := range paths {
		cases["GET "+path] = func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, ":path", path)
		}
		cases["HEAD "+path] = func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, ":method", "HEAD", ":path", path)
		}
		if path != "/noread" {
			cases["POST "+path] = func(fr *xh2.Framer, enc func(...string) []byte) {
				request(fr, enc, 1, false, ":method", "POST", ":path", path, "content-length", "11")
				_ = fr.WriteData(1, true, []byte("hello world"))
			}
		}
		if path != "/close" { // which stream its GOAWAY names is timing
			cases["two streams "+path] = func(fr *xh2.Framer, enc func(...string) []byte) {
				request(fr, enc, 1, true, ":path", path)
				request(fr, enc, 3, true, ":path", "/slow")
			}
		}
	}
	for name, s := range map[string]script{
		"POST echo unknown length": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, false, ":method", "POST", ":path", "/echo")
			_ = fr.WriteData(1, false, []byte("part one "))
			_ = fr.WriteData(1, true, []byte("part two"))
		},
		"POST echo with trailers": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, false, ":method", "POST", ":path", "/echo", "trailer", "X-Req-T")
			_ = fr.WriteData(1, false, []byte("body"))
			_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: 1, BlockFragment: enc("x-req-t", "v"), EndStream: true, EndHeaders: true})
		},
		"POST echo content-length short": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, false, ":method", "POST", ":path", "/echo", "content-length", "20")
			_ = fr.WriteData(1, true, []byte("short"))
		},
		"POST echo content-length long": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, false, ":method", "POST", ":path", "/echo", "content-length", "2")
			_ = fr.WriteData(1, true, []byte("too long"))
		},
		"big upload": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, false, ":method", "POST", ":path", "/echo")
			for range 3 {
				_ = fr.WriteData(1, false, make([]byte, 16_384))
			}
			_ = fr.WriteData(1, true, nil)
		},
		"request view": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, ":path", "/request?q=1", "x-multi", "a", "x-multi", "b", "cookie", "a=1", "cookie", "b=2")
		},
		"uppercase header": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, "X-Upper", "1")
		},
		"connection header": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, "connection", "keep-alive")
		},
		"te trailers": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, "te", "trailers")
		},
		"te gzip": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, "te", "gzip")
		},
		"no path": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, ":path", "\x00")
		},
		"no method": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, ":method", "\x00")
		},
		"CONNECT": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":method", "CONNECT", ":authority", "b.test:443"), EndHeaders: true})
		},
		"unknown pseudo": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, ":bogus", "x")
		},
		"even stream": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 2, true)
		},
		"stream id goes back": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 5, true, ":path", "/slow")
			request(fr, enc, 3, true)
		},
		"DATA on idle stream": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteData(7, true, []byte("x"))
		},
		"RST_STREAM mid-response": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, ":path", "/slow")
			_ = fr.WriteRSTStream(1, xh2.ErrCodeCancel)
			request(fr, enc, 3, true)
		},
		"PING": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
		},
		"client GOAWAY": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true)
			_ = fr.WriteGoAway(0, xh2.ErrCodeNo, nil)
		},
		"WINDOW_UPDATE zero": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteWindowUpdate(0, 0)
		},
		"window overflow": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteWindowUpdate(0, 1<<31-1)
		},
		"SETTINGS small frame size": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteSettings(xh2.Setting{ID: xh2.SettingMaxFrameSize, Val: 100})
		},
		"SETTINGS small window then big": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteSettings(xh2.Setting{ID: xh2.SettingInitialWindowSize, Val: 10})
			request(fr, enc, 1, true, ":path", "/4k")
		},
		"huge header": func(fr *xh2.Framer, enc func(...string) []byte) {
			request(fr, enc, 1, true, "x-big", strings.Repeat("h", 2<<20))
		},
		"CONTINUATION": func(fr *xh2.Framer, enc func(...string) []byte) {
			b := enc(":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/request", "x-multi", "split")
			_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:5], EndStream: true})
			_ = fr.WriteContinuation(1, true, b[5:])
		},
		"HEADERS without CONTINUATION": func(fr *xh2.Framer, enc func(...string) []byte) {
			b := enc(":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/")
			_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:5], EndStream: true})
			_ = fr.WritePing(false, [8]byte{})
		},
		"garbage frame": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteRawFrame(0x42, 0, 0, []byte("whatever"))
			request(fr, enc, 1, true)
		},
		"PRIORITY self-dependency": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WritePriority(1, xh2.PriorityParam{StreamDep: 1})
		},
	} {
		cases[name] = s
	}
	// Request smuggling: framing and header shapes an HTTP/1.1 hop would
	// read another way, refused (or not) exactly as net/http refuses them.
	raw := func(endStream bool, fields ...string) script {
		return func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(fields...), EndStream: endStream, EndHeaders: true})
			if !endStream {
				_ = fr.WriteData(1, true, []byte("hello"))
			}
		}
	}
	base := []string{":method", "POST", ":scheme", "https", ":authority", "a.test", ":path", "/echo"}
	with := func(fields ...string) []string { return append(slices.Clone(base), fields...) }
	for name, s := range map[string]script{
		"smuggle transfer-encoding chunked":    raw(false, with("transfer-encoding", "chunked")...),
		"smuggle CL and TE":                    raw(false, with("content-length", "5", "transfer-encoding", "chunked")...),
		"smuggle two content-lengths":          raw(false, with("content-length", "5", "content-length", "6")...),
		"smuggle same content-length twice":    raw(false, with("content-length", "5", "content-length", "5")...),
		"smuggle content-length list":          raw(false, with("content-length", "5, 5")...),
		"smuggle content-length sign":          raw(false, with("content-length", "+5")...),
		"smuggle content-length hex":           raw(false, with("content-length", "0x5")...),
		"smuggle CR in value":                  raw(false, with("x-a", "1\r\nx-b: 2")...),
		"smuggle LF in value":                  raw(false, with("x-a", "1\nx-b: 2")...),
		"smuggle NUL in value":                 raw(false, with("x-a", "1\x00")...),
		"smuggle space in name":                raw(false, with("x a", "1")...),
		"smuggle colon in name":                raw(false, with("x:a", "1")...),
		"smuggle empty name":                   raw(false, with("", "1")...),
		"smuggle leading space in value":       raw(false, with("x-a", " 1")...),
		"smuggle pseudo after regular":         raw(true, ":method", "GET", ":scheme", "https", "x-a", "1", ":authority", "a.test", ":path", "/request"),
		"smuggle duplicate :path":              raw(true, ":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/request", ":path", "/other"),
		"smuggle empty :path":                  raw(true, ":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", ""),
		"smuggle relative :path":               raw(true, ":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "request"),
		"smuggle absolute :path":               raw(true, ":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "https://b.test/request"),
		"smuggle asterisk GET":                 raw(true, ":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "*"),
		"smuggle asterisk OPTIONS":             raw(true, ":method", "OPTIONS", ":scheme", "https", ":authority", "a.test", ":path", "*"),
		"smuggle host and authority differ":    raw(true, ":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/request", "host", "b.test"),
		"smuggle host without authority":       raw(true, ":method", "GET", ":scheme", "https", ":path", "/request", "host", "b.test"),
		"smuggle no authority or host":         raw(true, ":method", "GET", ":scheme", "https", ":path", "/request"),
		"smuggle bad authority":                raw(true, ":method", "GET", ":scheme", "https", ":authority", "a b", ":path", "/request"),
		"smuggle method with space":            raw(true, ":method", "GET /x", ":scheme", "https", ":authority", "a.test", ":path", "/request"),
		"smuggle keep-alive header":            raw(true, with("keep-alive", "timeout=5")...),
		"smuggle upgrade header":               raw(true, with("upgrade", "h2c")...),
		"smuggle proxy-connection header":      raw(true, with("proxy-connection", "keep-alive")...),
		"smuggle te trailers, gzip":            raw(true, with("te", "trailers, gzip")...),
		"smuggle uppercase pseudo":             raw(true, ":Method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/"),
		"smuggle response pseudo in request":   raw(true, with(":status", "200")...),
		"smuggle body longer than declared":    raw(false, with("content-length", "3")...),
		"smuggle body shorter than declared":   raw(false, with("content-length", "50")...),
		"smuggle content-length with GET body": raw(false, ":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/echo", "content-length", "5"),
		"smuggle pseudo header in trailers": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(with("trailer", "x-t")...), EndHeaders: true})
			_ = fr.WriteData(1, false, []byte("hello"))
			_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":path", "/other"), EndStream: true, EndHeaders: true})
		},
		"smuggle trailers without END_STREAM": func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(with()...), EndHeaders: true})
			_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: 1, BlockFragment: enc("x-t", "1"), EndHeaders: true})
		},
	} {
		cases[name] = s
	}
	compare(t, p, cases, upstreamStricter)
}

// upstreamStricter are the requests net/http's server (Go 1.26) serves and
// x/net's (v0.61.0, which package h2 is) refuses with RST_STREAM
// PROTOCOL_ERROR, as RFC 9113 has it: malformed requests that a gateway
// must not pass on. For these, h2 must refuse.
var upstreamStricter = map[string]string{
	"smuggle bad authority":             "RFC 9113 8.3.1: :authority is a host and port; x/net checks it",
	"smuggle absolute :path":            "RFC 9113 8.3.1: :path is origin-form (or \"*\" for OPTIONS)",
	"smuggle host and authority differ": "RFC 9113 8.3.1: a Host that differs from :authority is malformed",
}

// compare runs every case against both servers, many at once (each ends
// with a quiet wait), and reports those whose transcripts differ.
func compare(t *testing.T, p pair, cases map[string]script, stricter map[string]string) {
	t.Helper()
	const quiet = 500 * time.Millisecond
	sem := make(chan struct{}, 24)
	var wg sync.WaitGroup
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		s := cases[name]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var want, got []string
			var both sync.WaitGroup
			both.Go(func() { want = transcript(t, p.netHTTP, p.cfg, quiet, s) })
			both.Go(func() { got = transcript(t, p.ours, p.cfg, quiet, s) })
			both.Wait()
			if why, ok := stricter[name]; ok {
				refused := slices.ContainsFunc(got, func(l string) bool {
					return strings.HasPrefix(l, "RST_STREAM stream=1") && strings.Contains(l, "PROTOCOL_ERROR")
				})
				answered := slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, "HEADERS stream=1") })
				if !refused || answered {
					t.Errorf("%s: h2 sent:\n  %s\nwant RST_STREAM PROTOCOL_ERROR and no answer (%s)", name, strings.Join(got, "\n  "), why)
				}
				return
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("%s: net/http sent:\n  %s\nh2 sent:\n  %s", name, strings.Join(want, "\n  "), strings.Join(got, "\n  "))
			}
		})
	}
	wg.Wait()
}
