package h2_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	xh2 "golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/inbound/h2"
)

// pair is the same handler served by net/http's HTTP/2 server and by
// package h2's, each over TLS on loopback.
type pair struct {
	netHTTP, ours string
	cfg           *tls.Config // the client's
}

func startPair(t testing.TB, handler http.Handler, tune func(*http.Server)) pair {
	t.Helper()
	ca := testca.New(t, "h2 test CA")
	kp := ca.Server("a.test")
	newServer := func() *http.Server {
		hs := &http.Server{Handler: handler, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 10 * time.Second}
		if tune != nil {
			tune(hs)
		}
		return hs
	}

	ref := httptest.NewUnstartedServer(handler)
	ref.Config = newServer()
	ref.EnableHTTP2 = true
	ref.TLS = &tls.Config{Certificates: []tls.Certificate{kp.TLS}}
	ref.StartTLS()
	t.Cleanup(ref.Close)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := newServer()
	srv := new(h2.Server)
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{kp.TLS}, NextProtos: []string{"h2"}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, tlsCfg)
				if tc.Handshake() != nil {
					tc.Close()
					return
				}
				srv.ServeConn(tc, &h2.ServeConnOpts{Context: context.Background(), BaseConfig: base, Handler: handler})
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return pair{
		netHTTP: ref.Listener.Addr().String(),
		ours:    ln.Addr().String(),
		cfg:     &tls.Config{RootCAs: ca.Pool(), ServerName: "a.test", NextProtos: []string{"h2"}},
	}
}

// script is what a client sends on one connection, after the preface
// and an empty SETTINGS: each step writes frames with fr (and may use
// enc for header blocks).
type script func(fr *xh2.Framer, enc func(fields ...string) []byte)

// transcript runs s against addr and returns every frame the server
// sent until it closed the connection or went quiet for quiet, each
// rendered as a line (Date headers dropped), grouped by stream: each
// stream's frames in the order sent, the connection's own (stream 0)
// sorted. What is timing rather than behaviour is folded: WINDOW_UPDATEs
// are left out (how the server batched them, whether a stream's went out
// before it closed, whether the first went out before an error's GOAWAY;
// the large transfers that need them are among the cases) and
// consecutive DATA frames are joined (where flow control cut them). After
// a GOAWAY for a connection error, RST_STREAMs are left out too: whether
// a stream's reset was written before the connection's is timing, and the
// connection is dead either way. So is a RST_STREAM NO_ERROR after a
// stream's answer ended: the server asking the client to stop sending a
// body it did not read, which it does only if the body's DATA arrived
// after the answer (and RST_STREAM STREAM_CLOSED for DATA that arrives
// after that). Likewise a RST_STREAM STREAM_CLOSED after the stream's own
// reset: package h2 writes a reset at once, and forgets the stream, so
// the client's DATA behind it gets one (RFC 9113 §5.1); net/http's
// server, its reset still in flight, lets the DATA go. DATA is acknowledged with WINDOW_UPDATEs, as a client
// reading the body would.
func transcript(t testing.TB, addr string, cfg *tls.Config, quiet time.Duration, s script) []string {
	t.Helper()
	return fold(frames(t, addr, cfg, quiet, s, false))
}

// fold renders what frames read, as transcript describes.
func fold(recv []received) []string {
	byStream := map[uint32][]string{}
	data := map[uint32]*bytes.Buffer{}
	var end string
	flushData := func(id uint32, endStream bool) {
		if b := data[id]; b != nil {
			byStream[id] = append(byStream[id], fmt.Sprintf("DATA stream=%d end=%t len=%d %q", id, endStream, b.Len(), truncate(b.Bytes())))
			delete(data, id)
		}
	}
	for _, f := range recv {
		switch {
		case f.end != "":
			end = f.end
		case f.isWindow:
		case f.isData:
			if data[f.stream] == nil {
				data[f.stream] = new(bytes.Buffer)
			}
			data[f.stream].Write(f.data)
			if f.endStream {
				flushData(f.stream, true)
			}
		default:
			flushData(f.stream, false)
			byStream[f.stream] = append(byStream[f.stream], f.line)
		}
	}
	for id := range data {
		flushData(id, false)
	}
	// The SETTINGS ACK is left out: a live connection always sends it,
	// a dead one may or may not have before it died.
	byStream[0] = slices.DeleteFunc(byStream[0], func(l string) bool { return strings.HasPrefix(l, "SETTINGS stream=0 flags=0x1") })
	connErr := slices.ContainsFunc(byStream[0], func(l string) bool {
		return strings.HasPrefix(l, "GOAWAY") && !strings.Contains(l, "code=NO_ERROR")
	})
	var lines []string
	for _, id := range slices.Sorted(maps.Keys(byStream)) {
		for frames := byStream[id]; len(frames) >= 2 && strings.HasPrefix(frames[len(frames)-1], "RST_STREAM") &&
			(strings.Contains(frames[len(frames)-1], "code=NO_ERROR") || strings.Contains(frames[len(frames)-1], "code=STREAM_CLOSED")) &&
			slices.ContainsFunc(frames[:len(frames)-1], func(l string) bool {
				return strings.Contains(l, "end=true") || strings.Contains(l, "flags=0x5") || strings.HasPrefix(l, "RST_STREAM")
			}); frames = byStream[id] {
			byStream[id] = frames[:len(frames)-1]
		}
		if connErr {
			byStream[id] = slices.DeleteFunc(byStream[id], func(l string) bool { return strings.HasPrefix(l, "RST_STREAM") })
		}
		if id == 0 {
			// Two SETTINGS read before the first ACK is written get
			// one ACK from net/http's server: timing too.
			slices.Sort(byStream[id])
			byStream[id] = slices.Compact(byStream[id])
		}
		lines = append(lines, byStream[id]...)
	}
	return append(lines, end)
}

// received is one frame, rendered as it is read (a Framer reuses its
// buffers).
type received struct {
	stream    uint32
	line      string
	isWindow  bool
	isData    bool
	data      []byte
	endStream bool
	end       string // "(quiet)" or "(closed)" for the last
}

// firstFrameWait bounds the wait for a server's first frame (its
// SETTINGS), which every connection gets: on a machine busy with other
// tests, a server may take longer than quiet to start answering.
const firstFrameWait = 10 * time.Second

// frames reads what the server sends until it closes the connection or
// is quiet for quiet after its first frame; with stopAtEnd, quiet is 100
// ms once stream 1 has ended or a GOAWAY came.
func frames(t testing.TB, addr string, cfg *tls.Config, quiet time.Duration, s script, stopAtEnd bool) []received {
	t.Helper()
	failed := func(err error) []received {
		t.Errorf("%s: %v", addr, err) // not Fatal: cases run in goroutines of their own
		return []received{{end: "(failed)"}}
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return failed(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, xh2.ClientPreface); err != nil {
		return failed(err)
	}
	fr := xh2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	var hbuf bytes.Buffer
	henc := hpack.NewEncoder(&hbuf)
	enc := func(fields ...string) []byte {
		hbuf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			_ = henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return slices.Clone(hbuf.Bytes())
	}
	if err := fr.WriteSettings(); err != nil {
		return failed(err)
	}
	s(fr, enc)

	var got []received
	for {
		// The server's SETTINGS always comes first, however long a
		// loaded machine takes to send it: quiet counts from there.
		wait := quiet
		if len(got) == 0 {
			wait = firstFrameWait
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		f, err := fr.ReadFrame()
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				return append(got, received{end: "(quiet)"})
			}
			return append(got, received{end: "(closed)"})
		}
		r := received{stream: f.Header().StreamID, line: render(f)}
		switch f := f.(type) {
		case *xh2.WindowUpdateFrame:
			r.isWindow = true
		case *xh2.DataFrame:
			r.isData, r.data, r.endStream = true, slices.Clone(f.Data()), f.StreamEnded()
		}
		got = append(got, r)
		if stopAtEnd {
			h := f.Header()
			if h.Type == xh2.FrameGoAway || (h.StreamID == 1 && (h.Type == xh2.FrameRSTStream || h.Flags.Has(xh2.FlagDataEndStream))) {
				quiet = min(quiet, 100*time.Millisecond)
			}
		}
		switch f := f.(type) {
		case *xh2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *xh2.DataFrame:
			if n := uint32(len(f.Data())); n > 0 {
				_ = fr.WriteWindowUpdate(0, n)
				_ = fr.WriteWindowUpdate(f.StreamID, n)
			}
		case *xh2.PingFrame:
			if !f.IsAck() {
				_ = fr.WritePing(true, f.Data)
			}
		}
	}
}

func render(f xh2.Frame) string {
	h := f.Header()
	head := fmt.Sprintf("%s stream=%d flags=%#x", h.Type, h.StreamID, uint8(h.Flags))
	switch f := f.(type) {
	case *xh2.MetaHeadersFrame:
		var fields []string
		for _, hf := range f.Fields {
			if hf.Name == "date" {
				continue
			}
			fields = append(fields, hf.Name+": "+hf.Value)
		}
		return head + " " + strings.Join(fields, "; ")
	case *xh2.DataFrame:
		return fmt.Sprintf("%s len=%d %q", head, len(f.Data()), truncate(f.Data()))
	case *xh2.SettingsFrame:
		var s []string
		_ = f.ForeachSetting(func(st xh2.Setting) error { s = append(s, st.String()); return nil })
		return head + " " + strings.Join(s, ",")
	case *xh2.WindowUpdateFrame:
		return fmt.Sprintf("%s incr=%d", head, f.Increment)
	case *xh2.RSTStreamFrame:
		return fmt.Sprintf("%s code=%v", head, f.ErrCode)
	case *xh2.GoAwayFrame:
		return fmt.Sprintf("%s last=%d code=%v debug=%q", head, f.LastStreamID, f.ErrCode, f.DebugData())
	case *xh2.PingFrame:
		return fmt.Sprintf("%s %x", head, f.Data)
	}
	return head
}

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
