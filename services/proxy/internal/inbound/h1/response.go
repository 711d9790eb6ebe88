// Parts of this file are adapted from Go's net/http (server.go,
// transfer.go): Copyright 2009 The Go Authors, under the BSD-style license
// in LICENSE.go-authors beside this file.

package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of one request: net/http's
// response, with the same buffers (the handler writes into a 2 KiB buffer
// that flushes into chunkWriter, which frames the body into the
// connection's 4 KiB buffer) and the same decisions.
type response struct {
	conn             *conn
	req              *http.Request
	reqBody          *body
	body             body // reqBody's storage
	cancelCtx        context.CancelFunc
	wroteHeader      bool // a non-1xx header was (logically) written
	wants10KeepAlive bool
	wantsClose       bool

	// writeContinueMu guards the 100 Continue the body reader may write
	// (from another goroutine) against the response's writes.
	writeContinueMu  sync.Mutex
	canWriteContinue atomic.Bool

	w  *bufio.Writer // the connection's response buffer, into cw
	cw chunkWriter

	handlerHeader http.Header
	calledHeader  bool

	written       int64
	contentLength int64 // declared, or -1
	status        int

	closeAfterReply     bool
	fullDuplex          bool
	requestBodyLimitHit bool
	trailers            []string
	handlerDone         bool

	dateBuf   [len(http.TimeFormat)]byte
	clenBuf   [10]byte
	statusBuf [3]byte
}

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Hijacker       = (*response)(nil)
	_ io.StringWriter     = (*response)(nil)
)

func (w *response) Header() http.Header {
	if w.cw.header == nil && w.wroteHeader && !w.cw.wroteHeader {
		// Written logically, not yet physically: snapshot what was
		// written.
		w.cw.header = w.handlerHeader.Clone()
	}
	w.calledHeader = true
	return w.handlerHeader
}

// excludedHeadersNoBody are left out of a 1xx response.
var excludedHeadersNoBody = map[string]bool{"Content-Length": true, "Transfer-Encoding": true}

func (w *response) WriteHeader(code int) {
	if w.conn.hijacked {
		w.conn.srv.logf("http: response.WriteHeader on hijacked connection")
		return
	}
	if w.wroteHeader {
		w.conn.srv.logf("http: superfluous response.WriteHeader call")
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 101 || code > 199 {
		w.disableWriteContinue()
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.writeContinueMu.Lock()
		writeStatusLine(w.conn.bw, w.req.ProtoAtLeast(1, 1), code, w.statusBuf[:])
		// RFC 8297: the header map is not cleared.
		_ = w.handlerHeader.WriteSubset(w.conn.bw, excludedHeadersNoBody)
		_, _ = w.conn.bw.WriteString("\r\n")
		_ = w.conn.bw.Flush()
		w.writeContinueMu.Unlock()
		return
	}
	w.wroteHeader = true
	w.status = code
	cl := get(w.handlerHeader, "Content-Length")
	if cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.contentLength = v
			cl = ""
		}
	}
	// cl is now an invalid Content-Length, or "".
	if w.calledHeader && w.cw.header == nil {
		if w.headerSettled() {
			// Written now, as it would be later: nothing the body
			// could change. The handler's later changes to its
			// header are ignored either way; this saves net/http's
			// clone of it.
			w.cw.header = w.handlerHeader
			w.cw.borrowed = true
			w.cw.writeHeader(nil)
		} else {
			// Cloned before an invalid Content-Length is deleted,
			// as net/http does: the clone keeps it.
			w.cw.header = w.handlerHeader.Clone()
		}
	}
	if cl != "" {
		w.conn.srv.logf("http: invalid Content-Length of %q", cl)
		w.handlerHeader.Del("Content-Length")
	}
}

// headerSettled reports whether the header, as WriteHeader leaves it, is
// written the same whatever the body turns out to be and whenever it is
// written: the length is declared (so it is not computed from a short
// body), the Content-Type is not to be sniffed, and there is no request
// body to read before the header goes out.
func (w *response) headerSettled() bool {
	if w.req.ContentLength != 0 || w.contentLength == -1 || w.canWriteContinue.Load() {
		return false
	}
	h := w.handlerHeader
	if !bodyAllowedForStatus(w.status) || has(h, "Content-Type") || get(h, "Transfer-Encoding") != "" {
		return true
	}
	return len(h.Get("Content-Encoding")) > 0
}

func (w *response) Write(data []byte) (int, error) { return w.write(len(data), data, "") }

func (w *response) WriteString(data string) (int, error) { return w.write(len(data), nil, data) }

func (w *response) write(lenData int, dataB []byte, dataS string) (int, error) {
	if w.conn.hijacked {
		if lenData > 0 {
			w.conn.srv.logf("http: response.Write on hijacked connection")
		}
		return 0, http.ErrHijacked
	}
	if w.canWriteContinue.Load() {
		w.disableWriteContinue()
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if lenData == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(lenData)
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	if dataB != nil {
		return w.w.Write(dataB)
	}
	return w.w.WriteString(dataS)
}

// Flush is for http.Flusher; FlushError for http.ResponseController.
func (w *response) Flush() { _ = w.FlushError() }

func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	err := w.w.Flush()
	e2 := w.cw.flush()
	if err == nil {
		err = e2
	}
	return err
}

// SetReadDeadline, SetWriteDeadline and EnableFullDuplex are for
// http.ResponseController.
func (w *response) SetReadDeadline(deadline time.Time) error {
	return w.conn.rwc.SetReadDeadline(deadline)
}

func (w *response) SetWriteDeadline(deadline time.Time) error {
	w.conn.writeDeadline = true
	return w.conn.rwc.SetWriteDeadline(deadline)
}

func (w *response) EnableFullDuplex() error {
	w.fullDuplex = true
	return nil
}

// Hijack hands the connection to the handler, with what is buffered of
// it; the server forgets it.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.handlerDone {
		panic("net/http: Hijack called after ServeHTTP finished")
	}
	w.disableWriteContinue()
	if w.wroteHeader {
		_ = w.cw.flush()
	}
	c := w.conn
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	c.stopWatch()
	c.hijacked = true
	_ = c.rwc.SetDeadline(time.Time{})
	buf := bufio.NewReadWriter(c.br, bufio.NewWriter(c.rwc))
	c.srv.track(c, false)
	return c.rwc, buf, nil
}

func (w *response) disableWriteContinue() {
	w.writeContinueMu.Lock()
	w.canWriteContinue.Store(false)
	w.writeContinueMu.Unlock()
}

func (w *response) requestTooLarge() {
	w.closeAfterReply = true
	w.requestBodyLimitHit = true
	if !w.wroteHeader {
		w.Header().Set("Connection", "close")
	}
}

func (w *response) sendExpectationFailed() {
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusExpectationFailed)
	w.finishRequest()
}

func (w *response) finishRequest() {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	_ = w.w.Flush()
	w.cw.close()
	_ = w.conn.bw.Flush()
	// Closed whatever the connection's fate, as net/http does: the
	// handler may have replaced req.Body, this one is the server's.
	_ = w.reqBody.Close()
	if w.req.MultipartForm != nil {
		_ = w.req.MultipartForm.RemoveAll()
	}
}

func (w *response) shouldReuseConnection() bool {
	if w.closeAfterReply {
		return false
	}
	if w.req.Method != "HEAD" && w.contentLength != -1 && bodyAllowedForStatus(w.status) && w.contentLength != w.written {
		return false // did not write what it declared
	}
	return w.conn.werr == nil && !w.reqBody.earlyClose
}

// finalTrailers is the trailers the handler set, if any.
func (w *response) finalTrailers() http.Header {
	var t http.Header
	for k, vv := range w.handlerHeader {
		if kk, found := strings.CutPrefix(k, http.TrailerPrefix); found {
			if t == nil {
				t = make(http.Header)
			}
			t[kk] = vv
		}
	}
	for _, k := range w.trailers {
		if t == nil {
			t = make(http.Header)
		}
		for _, v := range w.handlerHeader[k] {
			t.Add(k, v)
		}
	}
	return t
}

func (w *response) declareTrailer(k string) {
	k = http.CanonicalHeaderKey(k)
	if !httpguts.ValidTrailerHeader(k) {
		return
	}
	w.trailers = append(w.trailers, k)
}

// chunkWriter frames the body: it writes the header at the first write
// (or flush), then each write as it is, or as a chunk.
type chunkWriter struct {
	res *response
	// header is a clone of the handler's header at WriteHeader, when the
	// handler may change it before it is written; or the handler's own
	// (borrowed), when it is written at WriteHeader.
	header      http.Header
	borrowed    bool
	wroteHeader bool
	chunking    bool
	hexBuf      [18]byte
}

func (cw *chunkWriter) Write(p []byte) (n int, err error) {
	if !cw.wroteHeader {
		cw.writeHeader(p)
	}
	if cw.res.req.Method == "HEAD" {
		return len(p), nil
	}
	bw := cw.res.conn.bw
	if cw.chunking {
		if _, err = bw.Write(formatHex(cw.hexBuf[:], len(p))); err != nil {
			cw.res.conn.rwc.Close()
			return 0, err
		}
	}
	n, err = bw.Write(p)
	if cw.chunking && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		cw.res.conn.rwc.Close()
	}
	return n, err
}

func (cw *chunkWriter) flush() error {
	if !cw.wroteHeader {
		cw.writeHeader(nil)
	}
	return cw.res.conn.bw.Flush()
}

func (cw *chunkWriter) close() {
	if !cw.wroteHeader {
		cw.writeHeader(nil)
	}
	if cw.chunking {
		bw := cw.res.conn.bw
		_, _ = bw.WriteString("0\r\n")
		if trailers := cw.res.finalTrailers(); trailers != nil {
			_ = trailers.Write(bw)
		}
		_, _ = bw.WriteString("\r\n")
	}
}

// extraHeader is what writeHeader adds to the handler's header.
type extraHeader struct {
	contentType      string
	connection       string
	transferEncoding string
	date             []byte
	contentLength    []byte
}

func (h *extraHeader) write(w *bufio.Writer) {
	if h.date != nil {
		_, _ = w.WriteString("Date: ")
		_, _ = w.Write(h.date)
		_, _ = w.WriteString("\r\n")
	}
	if h.contentLength != nil {
		_, _ = w.WriteString("Content-Length: ")
		_, _ = w.Write(h.contentLength)
		_, _ = w.WriteString("\r\n")
	}
	for i, v := range [...]string{h.contentType, h.connection, h.transferEncoding} {
		if v != "" {
			_, _ = w.WriteString(extraHeaderKeys[i])
			_, _ = w.WriteString(": ")
			_, _ = w.WriteString(v)
			_, _ = w.WriteString("\r\n")
		}
	}
}

var extraHeaderKeys = [...]string{"Content-Type", "Connection", "Transfer-Encoding"}

// writeHeader is net/http's chunkWriter.writeHeader: it settles the
// framing (Content-Length for a finished short body, chunking, or close),
// the connection's reuse, Content-Type sniffing and Date, drains the
// request body left unread, and writes the status line and header. p is
// the body's first bytes, if the handler has written any.
func (cw *chunkWriter) writeHeader(p []byte) {
	if cw.wroteHeader {
		return
	}
	cw.wroteHeader = true
	w := cw.res
	keepAlivesEnabled := w.conn.srv.doKeepAlives()
	isHEAD := w.req.Method == "HEAD"

	header := cw.header
	owned := header != nil && !cw.borrowed
	if header == nil {
		header = w.handlerHeader
	}
	var excludeHeader map[string]bool
	delHeader := func(key string) {
		if owned {
			header.Del(key)
			return
		}
		if _, ok := header[key]; !ok {
			return
		}
		if excludeHeader == nil {
			excludeHeader = make(map[string]bool)
		}
		excludeHeader[key] = true
	}
	var setHeader extraHeader

	trailers := false
	for k := range cw.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if excludeHeader == nil {
				excludeHeader = make(map[string]bool)
			}
			excludeHeader[k] = true
			trailers = true
		}
	}
	for _, v := range cw.header["Trailer"] {
		trailers = true
		foreachHeaderElement(v, w.declareTrailer)
	}

	te := get(header, "Transfer-Encoding")
	hasTE := te != ""

	// A handler done whose whole body is p: its length is known.
	if w.handlerDone && !trailers && !hasTE && bodyAllowedForStatus(w.status) && !has(header, "Content-Length") && (!isHEAD || len(p) > 0) {
		w.contentLength = int64(len(p))
		setHeader.contentLength = strconv.AppendInt(w.clenBuf[:0], int64(len(p)), 10)
	}

	if w.wants10KeepAlive && keepAlivesEnabled {
		sentLength := get(header, "Content-Length") != ""
		if sentLength && get(header, "Connection") == "keep-alive" {
			w.closeAfterReply = false
		}
	}

	hasCL := w.contentLength != -1

	if w.wants10KeepAlive && (isHEAD || hasCL || !bodyAllowedForStatus(w.status)) {
		if _, connectionHeaderSet := header["Connection"]; !connectionHeaderSet {
			setHeader.connection = "keep-alive"
		}
	} else if !w.req.ProtoAtLeast(1, 1) || w.wantsClose {
		w.closeAfterReply = true
	}

	if get(header, "Connection") == "close" || !keepAlivesEnabled {
		w.closeAfterReply = true
	}

	// A 100-continue body not read to its end: the connection is not
	// reused.
	if rb, ok := w.req.Body.(*body); ok && rb.expect && !rb.readEOF {
		w.closeAfterReply = true
	}

	// The unread request body is read now, before the response, for
	// clients that send their whole request before reading.
	if w.req.ContentLength != 0 && !w.closeAfterReply && !w.fullDuplex {
		var discard, tooBig bool
		switch bdy := w.req.Body.(type) {
		case *body:
			switch {
			case bdy.expect:
				// Read to its end (see above).
			case bdy.closed || bdy.innerClosed:
				if !bdy.sawEOF {
					w.closeAfterReply = true
				}
			case bdy.remain >= maxPostHandlerReadBytes:
				tooBig = true
			default:
				discard = true
			}
		default:
			discard = true
		}
		if discard {
			_, err := io.CopyN(io.Discard, w.reqBody, maxPostHandlerReadBytes+1)
			switch {
			case err == nil:
				tooBig = true
			case errors.Is(err, http.ErrBodyReadAfterClose):
			case errors.Is(err, io.EOF):
				if err := w.reqBody.Close(); err != nil {
					w.closeAfterReply = true
				}
			default:
				w.closeAfterReply = true
			}
		}
		if tooBig {
			w.requestTooLarge()
			delHeader("Connection")
			setHeader.connection = "close"
		}
	}

	code := w.status
	if bodyAllowedForStatus(code) {
		_, haveType := header["Content-Type"]
		hasCE := len(header.Get("Content-Encoding")) > 0
		if !hasCE && !haveType && !hasTE && len(p) > 0 {
			setHeader.contentType = http.DetectContentType(p)
		}
	} else {
		for _, k := range suppressedHeaders(code) {
			delHeader(k)
		}
	}

	if !has(header, "Date") {
		setHeader.date = time.Now().UTC().AppendFormat(w.dateBuf[:0], http.TimeFormat)
	}

	if hasCL && hasTE && te != "identity" {
		w.conn.srv.logf("http: WriteHeader called with both Transfer-Encoding of %q and a Content-Length of %d", te, w.contentLength)
		delHeader("Content-Length")
		hasCL = false
	}

	switch {
	case w.req.Method == "HEAD" || !bodyAllowedForStatus(code) || code == http.StatusNoContent:
		delHeader("Transfer-Encoding")
	case hasCL:
		delHeader("Transfer-Encoding")
	case w.req.ProtoAtLeast(1, 1):
		if hasTE && te == "identity" {
			cw.chunking = false
			w.closeAfterReply = true
			delHeader("Transfer-Encoding")
		} else {
			cw.chunking = true
			setHeader.transferEncoding = "chunked"
			if hasTE && te == "chunked" {
				delHeader("Transfer-Encoding")
			}
		}
	default:
		// HTTP/1.0: no chunking; the end of the body is the close.
		w.closeAfterReply = true
		delHeader("Transfer-Encoding")
	}

	if cw.chunking {
		delHeader("Content-Length")
	}
	if !w.req.ProtoAtLeast(1, 0) {
		return
	}

	delConnectionHeader := w.closeAfterReply &&
		(!keepAlivesEnabled || !hasToken(get(cw.header, "Connection"), "close")) &&
		!isProtocolSwitchResponse(w.status, header)
	if delConnectionHeader {
		delHeader("Connection")
		if w.req.ProtoAtLeast(1, 1) {
			setHeader.connection = "close"
		}
	}

	bw := w.conn.bw
	// Under the lock: a 100 Continue written by a body read in another
	// goroutine must not land inside the header.
	w.writeContinueMu.Lock()
	writeStatusLine(bw, w.req.ProtoAtLeast(1, 1), code, w.statusBuf[:])
	_ = cw.header.WriteSubset(bw, excludeHeader)
	setHeader.write(bw)
	_, _ = bw.WriteString("\r\n")
	w.writeContinueMu.Unlock()
}

func suppressedHeaders(status int) []string {
	switch {
	case status == 304:
		return []string{"Content-Type", "Content-Length", "Transfer-Encoding"}
	case !bodyAllowedForStatus(status):
		return []string{"Content-Length", "Transfer-Encoding"}
	}
	return nil
}

func bodyAllowedForStatus(status int) bool {
	switch {
	case status >= 100 && status <= 199:
		return false
	case status == 204:
		return false
	case status == 304:
		return false
	}
	return true
}

func isProtocolSwitchResponse(code int, h http.Header) bool {
	return code == http.StatusSwitchingProtocols && h.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

// foreachHeaderElement calls fn for each non-empty element of the list v.
func foreachHeaderElement(v string, fn func(string)) {
	v = textprotoTrim(v)
	if v == "" {
		return
	}
	if !strings.Contains(v, ",") {
		fn(v)
		return
	}
	for f := range strings.SplitSeq(v, ",") {
		if f = textprotoTrim(f); f != "" {
			fn(f)
		}
	}
}

// textprotoTrim is textproto.TrimString: ASCII whitespace off both ends.
func textprotoTrim(s string) string {
	for len(s) > 0 && isASCIISpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isASCIISpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func isASCIISpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

func writeStatusLine(bw *bufio.Writer, is11 bool, code int, scratch []byte) {
	if is11 {
		_, _ = bw.WriteString("HTTP/1.1 ")
	} else {
		_, _ = bw.WriteString("HTTP/1.0 ")
	}
	if text := http.StatusText(code); text != "" {
		_, _ = bw.Write(strconv.AppendInt(scratch[:0], int64(code), 10))
		_ = bw.WriteByte(' ')
		_, _ = bw.WriteString(text)
		_, _ = bw.WriteString("\r\n")
	} else {
		c := strconv.Itoa(code)
		for len(c) < 3 {
			c = "0" + c
		}
		_, _ = bw.WriteString(c + " status code " + strconv.Itoa(code) + "\r\n")
	}
}

// body is the request body as the handler sees it: net/http's, with what
// its server adds (the bounded drain at Close, 100 Continue at the first
// read).
type body struct {
	rc io.ReadCloser
	w  *response
	// remain is what is left of a body of known length; -1 for a chunked
	// one.
	remain int64
	// closing: the request closes its connection and the body's length
	// is known, so Close leaves the rest unread.
	closing bool
	// expect: the client waits for 100 Continue before sending the body.
	expect bool
	// readEOF is set when a Read (not Close's drain) saw the end: the
	// end of a 100-continue body as net/http's server sees it.
	readEOF    bool
	sawEOF     bool
	closed     bool
	earlyClose bool
	// innerClosed is set when net/http's body closed itself (a bad
	// trailer): it counts as closed before its end.
	innerClosed bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.expect {
		w := b.w
		if w.canWriteContinue.Load() {
			w.writeContinueMu.Lock()
			if w.canWriteContinue.Load() {
				_, _ = w.conn.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
				_ = w.conn.bw.Flush()
				w.canWriteContinue.Store(false)
			}
			w.writeContinueMu.Unlock()
		}
	}
	n, err := b.read(p)
	if errors.Is(err, io.EOF) {
		b.readEOF = true
	}
	return n, err
}

func (b *body) read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if b.remain > 0 {
		b.remain -= int64(n)
	}
	switch {
	case err == io.EOF:
		b.sawEOF = true
	case err != nil && b.remain < 0 && !b.innerClosed:
		// net/http's chunked body closes itself when its trailer does
		// not parse; an empty read tells, with no I/O once it failed.
		if _, err := b.rc.Read(nil); errors.Is(err, http.ErrBodyReadAfterClose) {
			b.innerClosed = true
		}
	}
	return n, err
}

// Close ends the body: up to maxPostHandlerReadBytes of what is left is
// read, so that the connection can serve the next request; a longer rest
// closes the connection (earlyClose).
func (b *body) Close() error {
	if b.closed {
		return nil
	}
	var err error
	switch {
	case b.sawEOF, b.innerClosed:
	case b.closing && b.remain >= 0:
	case b.remain > maxPostHandlerReadBytes:
		b.earlyClose = true
	default:
		var n int64
		n, err = io.CopyN(io.Discard, readerFunc(b.read), maxPostHandlerReadBytes)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		if n == maxPostHandlerReadBytes {
			b.earlyClose = true
		}
	}
	b.closed = true
	return err
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
