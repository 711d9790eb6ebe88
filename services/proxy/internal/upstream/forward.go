package upstream

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/proxy/internal/upstream/h1"
)

// forward is httputil.ReverseProxy.ServeHTTP with our Rewrite, minus what
// costs an allocation per request and that a gateway does not need: the
// inbound header map is edited in place instead of cloned (net/http lets a
// handler do so, issue 14940), the outbound request, its URL and body
// wrapper share one allocation, response headers are moved rather than
// copied, and the Content-Type is not parsed to find event streams.
//
// Everything users see is kept: hop-by-hop headers (and those the
// Connection header lists) removed both ways, "TE: trailers" passed on,
// trailers announced and relayed, X-Forwarded-* set from the inbound
// connection only, 1xx responses (100 Continue, 103 Early Hints) relayed,
// immediate flushes for event streams, bodies of unknown length and
// streaming (h2, gRPC) upstreams, the client's cancellation through the
// request context, and an aborted response when the body copy fails.
// Upgrade requests (WebSocket) go through ReverseProxy, which splices the
// connections.
//
// It reports the request to the Upstream's [Recorder] once answered.
func (u *Upstream) forward(w http.ResponseWriter, in *http.Request) {
	start := time.Now()
	if headerValuesContainsToken(in.Header["Connection"], "upgrade") {
		// Rare: a wrapper that remembers the status is affordable here.
		uw := &upgradeWriter{ResponseWriter: w}
		u.connections().proxy.ServeHTTP(uw, in)
		u.rec.Request(cmp.Or(uw.code, http.StatusOK), uw.reason, time.Since(start))
		return
	}
	o := &forwarding{w: w}
	o.trace.Got1xxResponse = o.got1xx
	// Derived from in's context: the client going away cancels.
	ctx := in.Context()
	if u.tracing.Tracer != nil {
		o.tr, ctx = u.startSpan(ctx, in, &o.trace)
	}
	c := u.connections()
	direct := c.h1pool != nil && h1.Eligible(in)
	var out *http.Request
	if direct {
		out = in.WithContext(ctx) // the trace is handed over directly
	} else {
		out = in.WithContext(httptrace.WithClientTrace(ctx, &o.trace))
	}
	o.url = *in.URL
	out.URL = &o.url
	out.Close = false
	if in.ContentLength == 0 {
		out.Body = nil // nil Body for http.Transport retries (Go issue 16036)
	}
	if out.Body != nil {
		// The Transport closes the body it was given, maybe before the
		// client sent it all (100-continue): give it one whose Close
		// does nothing, and close the real one when done. The
		// Transport's writer can outlive this handler; reading after
		// Close is safe in practice (Go issue 46866).
		o.body.ReadCloser = in.Body
		out.Body = &o.body
		defer in.Body.Close()
	}
	h := in.Header
	if h == nil {
		h = make(http.Header)
		out.Header = h
	}
	te := headerValuesContainsToken(h["Te"], "trailers")
	removeHopByHopHeaders(h)
	if te {
		o.vals[0] = "trailers"
		h["Te"] = o.vals[0:1:1]
	}
	// The gateway is the edge: what the client says about forwarding is
	// not trusted.
	delete(h, "Forwarded")
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		o.vals[1] = ip
		h["X-Forwarded-For"] = o.vals[1:2:2]
	} else {
		delete(h, "X-Forwarded-For")
	}
	o.vals[2] = in.Host
	h["X-Forwarded-Host"] = o.vals[2:3:3]
	o.vals[3] = "http"
	if in.TLS != nil {
		o.vals[3] = "https"
	}
	h["X-Forwarded-Proto"] = o.vals[3:4:4]
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = o.vals[4:5:5] // "": not Go's default
	}
	out.URL.RawQuery = cleanQueryParams(out.URL.RawQuery)
	out.URL.Scheme = u.scheme
	out.URL.Host = u.endpoint()
	out.Host = u.host
	if o.tr != nil {
		o.tr.sending(out)
	}

	var res *http.Response
	var err error
	if direct {
		res, err = c.h1pool.RoundTrip(out, &o.trace)
	} else {
		res, err = c.transport.RoundTrip(out)
	}
	o.mu.Lock()
	o.done = true
	o.mu.Unlock()
	if err != nil {
		u.failed(w, out, err, start, o.tr)
		return
	}
	if res.StatusCode < 100 {
		// net/http reads any three digits; its server refuses to write
		// a status below 100.
		res.Body.Close()
		u.failed(w, out, fmt.Errorf("upstream answered with status %03d, which is not an HTTP status", res.StatusCode), start, o.tr)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		res.Body.Close()
		u.failed(w, out, fmt.Errorf("upstream switched protocols (%q) without being asked to", res.Header.Get("Upgrade")), start, o.tr)
		return
	}
	if res.StatusCode == http.StatusBadRequest && u.tls != nil {
		if refused := u.refusedIdentity(res); refused != nil {
			res.Body.Close()
			u.failed(w, out, refused, start, o.tr)
			return
		}
	}
	removeHopByHopHeaders(res.Header)
	if m := u.modifyResponse; m != nil {
		if err := m(res); err != nil {
			res.Body.Close()
			u.failed(w, out, err, start, o.tr)
			return
		}
	}
	dst := w.Header()
	moveHeader(dst, res.Header)
	// The Transport leaves "Trailer" out of the header: announce the
	// trailers from what it read.
	announced := len(res.Trailer)
	if announced > 0 {
		// In order: the same answer announces them the same way.
		dst.Add("Trailer", strings.Join(slices.Sorted(maps.Keys(res.Trailer)), ", "))
		// An h2 upstream may send a length with trailers; HTTP/1.1 can
		// only carry trailers chunked. (ReverseProxy loses them here.)
		delete(dst, "Content-Length")
	}
	w.WriteHeader(res.StatusCode)

	err = u.copyBody(w, res)
	// The client has its status; the body's time counts.
	u.rec.Request(res.StatusCode, "", time.Since(start))
	o.tr.end(res.StatusCode, err)
	if err != nil {
		res.Body.Close()
		// The status is sent: abort the response so that the client
		// does not take a truncated body for a whole one (as
		// ReverseProxy does, only under a server).
		if in.Context().Value(http.ServerContextKey) != nil {
			panic(http.ErrAbortHandler)
		}
		return
	}
	res.Body.Close() // now, so that res.Trailer is filled in

	if len(res.Trailer) > 0 {
		// Force chunking, so that net/http does not compute a length
		// for a short body and drop the trailers.
		_ = http.NewResponseController(w).Flush()
	}
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			dst[k] = append(dst[k], vv...)
		}
		return
	}
	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		dst[k] = append(dst[k], vv...)
	}
}

// refusedIdentity reads a small 400 answer of a TLS upstream and, when it
// is a refusal of the gateway's client certificate made after the handshake
// (nginx's `ssl_verify_client on` pages), returns it as a classified error:
// the upstream refused Keyway's identity, which is the gateway's problem,
// not the client's. Otherwise res.Body is left to read the same bytes.
func (u *Upstream) refusedIdentity(res *http.Response) error {
	if res.ContentLength <= 0 || res.ContentLength > failure.MaxRefusalPage {
		return nil
	}
	body := make([]byte, res.ContentLength)
	n, err := io.ReadFull(res.Body, body)
	body = body[:n]
	if reason, ok := failure.RefusalPage(res.StatusCode, body); ok && err == nil {
		return failure.WithReason(reason, fmt.Errorf("the upstream completed the TLS handshake, then answered 400 %q: it refused the gateway's client certificate (%s)",
			failure.PageTitle(body), reason))
	}
	res.Body = readCloser{io.MultiReader(bytes.NewReader(body), res.Body), res.Body}
	return nil
}

// readCloser reads from one reader and closes another.
type readCloser struct {
	io.Reader
	io.Closer
}

// failed answers a request that could not be forwarded and records it.
func (u *Upstream) failed(w http.ResponseWriter, out *http.Request, err error, start time.Time, tr *traced) {
	code, ue := u.fail(w, out, err)
	u.rec.Request(code, ue.Reason, time.Since(start))
	tr.fail(ue)
}

// upgradeWriter remembers what an Upgrade request was answered with.
// Unwrap keeps http.ResponseController's Hijack working through it.
type upgradeWriter struct {
	http.ResponseWriter
	code   int
	reason failure.Reason
}

func (uw *upgradeWriter) WriteHeader(code int) {
	if uw.code == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		uw.code = code
	}
	uw.ResponseWriter.WriteHeader(code)
}

func (uw *upgradeWriter) Write(b []byte) (int, error) {
	if uw.code == 0 {
		uw.code = http.StatusOK
	}
	return uw.ResponseWriter.Write(b)
}

func (uw *upgradeWriter) Unwrap() http.ResponseWriter { return uw.ResponseWriter }

// forwarding is what one forwarded request needs besides the request itself,
// in one allocation. It is not reused: the Transport may hold the request
// after RoundTrip returns.
type forwarding struct {
	url   url.URL
	body  noopCloser
	vals  [5]string // header values: TE, X-Forwarded-For, -Host, -Proto, User-Agent
	trace httptrace.ClientTrace
	w     http.ResponseWriter
	mu    sync.Mutex
	done  bool
	// tr is set when tracing is on.
	tr *traced
}

// got1xx relays an informational response (100 Continue, 103 Early Hints)
// to the client, unless RoundTrip has returned and the handler owns the
// header map again.
func (o *forwarding) got1xx(code int, header textproto.MIMEHeader) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return nil
	}
	h := o.w.Header()
	for k, vv := range header {
		for _, v := range vv {
			h.Add(k, v)
		}
	}
	o.w.WriteHeader(code)
	clear(h) // WriteHeader does not for 1xx
	return nil
}

type noopCloser struct{ io.ReadCloser }

func (noopCloser) Close() error { return nil }

// copyBody copies the response body to w, flushing after every write when
// the response streams: always for h2 and gRPC upstreams, and for event
// streams and bodies of unknown length from any upstream.
func (u *Upstream) copyBody(w http.ResponseWriter, res *http.Response) error {
	flush := u.streaming || res.ContentLength == -1 || isEventStream(res.Header.Get("Content-Type"))
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	b := copyBuffers.Get().(*[32 << 10]byte)
	defer copyBuffers.Put(b)
	buf := b[:]
	for {
		n, rerr := res.Body.Read(buf)
		if rerr != nil && rerr != io.EOF && !errors.Is(rerr, context.Canceled) {
			u.connections().errLog.Printf("upstream %q: reading the response body: %v", u.name, rerr)
		}
		if n > 0 {
			m, werr := w.Write(buf[:n])
			if werr != nil {
				return werr
			}
			if m != n {
				return io.ErrShortWrite
			}
			if flush {
				if err := rc.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// moveHeader adds src's values to dst. src is the response's, which nobody
// else holds, so its value slices move instead of being copied.
func moveHeader(dst, src http.Header) {
	for k, vv := range src {
		if prior, ok := dst[k]; ok {
			dst[k] = append(prior, vv...)
		} else {
			dst[k] = vv
		}
	}
}

// hopHeaders are removed in both directions (RFC 9110 section 7.6.1; the
// list is ReverseProxy's).
var hopHeaders = [...]string{
	"Connection",
	"Proxy-Connection", // not standard, still sent by libcurl
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

func removeHopByHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		delete(h, f)
	}
}

// headerValuesContainsToken reports whether a comma-separated token list in
// values holds token, case-insensitively.
func headerValuesContainsToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// isEventStream reports whether a Content-Type is text/event-stream,
// parameters aside, without mime.ParseMediaType's allocations.
func isEventStream(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// cleanQueryParams is ReverseProxy's: a query that net/url cannot parse
// (semicolons, bad escapes) is re-encoded without the unparsable parts.
func cleanQueryParams(s string) string {
	reencode := func(s string) string {
		v, _ := url.ParseQuery(s)
		return v.Encode()
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// copyBuffers lend the body copies their 32 KiB buffers; pointers to arrays,
// so that neither Get nor Put allocates.
var copyBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}
