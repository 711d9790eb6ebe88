package h2

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"
)

// TestWriteStallClosesTheConnection: a client that opens a large window
// and then reads nothing fills the socket's buffers; the serve loop's
// write then ends at the write deadline, the connection closes, and the
// handler's Write fails, instead of all of them waiting forever.
//
// Not parallel: it shortens writeStall.
func TestWriteStallClosesTheConnection(t *testing.T) {
	defer func(d time.Duration) { writeStall = d }(writeStall)
	writeStall = 400 * time.Millisecond

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wrote := make(chan error, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 4096 { // 256 MiB at most: far beyond any socket buffer
			if _, err := w.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	})
	srv := new(Server)
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		srv.ServeConn(c, &ServeConnOpts{Context: context.Background(), BaseConfig: &http.Server{}, Handler: handler})
	}()
	defer func() {
		// The connection's goroutines read writeStall: they end before
		// it is put back.
		srv.Close()
		ln.Close()
		<-served
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, ClientPreface)
	fr := NewFramer(c, nil)
	fr.WriteSettings(Setting{ID: SettingInitialWindowSize, Val: 1<<31 - 1})
	fr.WriteWindowUpdate(0, 1<<31-1-65535)
	var hbuf bytesBuffer
	enc := hpack.NewEncoder(&hbuf)
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"}, {Name: ":authority", Value: "a.test"}, {Name: ":path", Value: "/"}} {
		enc.WriteField(f)
	}
	fr.WriteHeaders(HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.b, EndStream: true, EndHeaders: true})
	// ... and nothing more is read.

	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("the handler wrote 256 MiB to a client that reads nothing")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the handler's Write still blocks 30 s on, with a 400 ms write deadline")
	}
}

type bytesBuffer struct{ b []byte }

func (b *bytesBuffer) Write(p []byte) (int, error) { b.b = append(b.b, p...); return len(p), nil }
