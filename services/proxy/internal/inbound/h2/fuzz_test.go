package h2_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"
	xh2 "golang.org/x/net/http2"
)

// FuzzServeMatchesNetHTTP sends one request, its header fields one per
// line ("name: value"; a pseudo-header's name starts with ':') and its
// body, to net/http's HTTP/2 server and to package h2's: the frames that
// come back until the stream ends must be the same (folded as
// TestServeMatchesNetHTTP folds them), or, for the requests RFC 9113
// calls malformed that x/net refuses and net/http serves, h2 must refuse.
func FuzzServeMatchesNetHTTP(f *testing.F) {
	f.Add(":method: GET\n:scheme: https\n:authority: a.test\n:path: /request\nx-multi: a\nx-multi: b", "", true)
	f.Add(":method: POST\n:scheme: https\n:authority: a.test\n:path: /echo\ncontent-length: 5", "hello", false)
	f.Add(":method: POST\n:scheme: https\n:authority: a.test\n:path: /echo\ntransfer-encoding: chunked", "5\r\nhello\r\n0\r\n\r\n", false)
	f.Add(":method: GET\n:scheme: https\n:authority: a.test\n:path: /trailer\nte: trailers", "", true)
	f.Add(":method: HEAD\n:scheme: https\n:authority: a.test\n:path: /big", "", true)
	f.Add(":method: GET\n:scheme: https\n:authority: a.test\n:path: /1xx\nhost: a.test", "", true)
	f.Add(":method: CONNECT\n:authority: b.test:443", "", false)
	f.Add(":method: OPTIONS\n:scheme: https\n:authority: a.test\n:path: *", "", true)
	// Found by fuzzing: an :authority x/net refuses (not a valid host)
	// that net/http serves.
	f.Add(":method: POST\n:scheme: https\n:authority: a.tes\xd3\xd3\xd3\xd3t\n:path: /echo\ncontent-length: 5", "hello", false)
	p := startPair(f, http.HandlerFunc(shapes), nil)
	f.Fuzz(func(t *testing.T, fields, body string, endStream bool) {
		if len(fields) > 8<<10 || len(body) > 64<<10 {
			return
		}
		var hf []string
		for line := range strings.SplitSeq(fields, "\n") {
			i := strings.Index(line[min(1, len(line)):], ":") + min(1, len(line))
			if i <= 0 || i >= len(line) {
				continue
			}
			hf = append(hf, line[:i], strings.TrimPrefix(line[i+1:], " "))
		}
		s := func(fr *xh2.Framer, enc func(...string) []byte) {
			_ = fr.WriteHeaders(xh2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(hf...), EndStream: endStream, EndHeaders: true})
			if !endStream {
				_ = fr.WriteData(1, true, []byte(body))
			}
		}
		const quiet = 2 * time.Second
		var want, got []string
		var both sync.WaitGroup
		both.Go(func() { want = fold(frames(t, p.netHTTP, p.cfg, quiet, s, true)) })
		both.Go(func() { got = fold(frames(t, p.ours, p.cfg, quiet, s, true)) })
		both.Wait()
		if strings.Join(got, "\n") == strings.Join(want, "\n") {
			return
		}
		answered := func(lines []string) bool {
			for _, l := range lines {
				if strings.HasPrefix(l, "HEADERS stream=1") {
					return true
				}
			}
			return false
		}
		refused := !answered(got) && strings.Contains(strings.Join(got, "\n"), "PROTOCOL_ERROR")
		if refused && answered(want) && malformedPerRFC9113(hf) {
			return // x/net is stricter here, as upstreamStricter lists
		}
		t.Errorf("fields %q, body %q, end %t:\nnet/http sent:\n  %s\nh2 sent:\n  %s", hf, body, endStream,
			strings.Join(want, "\n  "), strings.Join(got, "\n  "))
	})
}

// malformedPerRFC9113 reports whether the request has one of the faults
// upstreamStricter lists, by x/net's own rules (httpcommon's
// NewServerRequest): a Host unlike :authority, or more than one; userinfo
// in the authority; an authority that is not a valid host; a :path that
// is empty or not origin-form (or "*").
func malformedPerRFC9113(hf []string) bool {
	var authority, scheme, path, method string
	var hosts []string
	var hasPath bool
	for i := 0; i+1 < len(hf); i += 2 {
		switch hf[i] {
		case ":authority":
			authority = hf[i+1]
		case ":scheme":
			scheme = hf[i+1]
		case ":method":
			method = hf[i+1]
		case ":path":
			path, hasPath = hf[i+1], true
		case "host":
			hosts = append(hosts, hf[i+1])
		}
	}
	switch {
	case len(hosts) > 1:
		return true
	case len(hosts) == 1 && authority == "":
		authority = hosts[0]
	case len(hosts) == 1 && hosts[0] != authority:
		return true
	}
	if strings.Contains(authority, "@") && (scheme == "http" || scheme == "https") {
		return true
	}
	if authority != "" && !httpguts.ValidHostHeader(authority) {
		return true
	}
	return method != "CONNECT" && hasPath && (path == "" || (path[0] != '/' && path != "*"))
}
