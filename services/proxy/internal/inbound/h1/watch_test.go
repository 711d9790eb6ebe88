package h1

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A client that closes its connection while a request without a body
// waits on a slow upstream cancels the request, as net/http's server does:
// the handler sees its context end.
func TestClientCloseCancelsLongRequest(t *testing.T) {
	t.Parallel()
	started, canceled := make(chan struct{}), make(chan error, 1)
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			canceled <- r.Context().Err()
		case <-time.After(20 * time.Second):
			canceled <- nil
		}
	})}
	c, _ := dial(t, serveOne(t, srv))
	io.WriteString(c, "GET /long-poll HTTP/1.1\r\nHost: a.test\r\n\r\n")
	<-started
	c.Close()
	select {
	case err := <-canceled:
		if err == nil {
			t.Fatal("the request ran for 20 s after its client closed the connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not return within 10 s of the client's close")
	}
}

// A request the client sends while the previous one's handler runs and
// the connection is watched is served next, whole: the byte the watch read
// is its first.
func TestWatchKeepsThePipelinedRequest(t *testing.T) {
	t.Parallel()
	reading, read, release := make(chan struct{}), make(chan int, 1), make(chan struct{})
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "served "+r.URL.Path)
	})}
	srv.watchHook = func(event string, n int) {
		switch event {
		case "reading":
			close(reading)
		case "read":
			read <- n
		}
	}
	c, br := dial(t, serveOne(t, srv))
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a.test\r\n\r\n")
	<-reading
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if n := <-read; n != 1 {
		t.Fatalf("the watch read %d bytes of the next request, want 1", n)
	}
	close(release)
	for _, want := range []string{"served /slow", "served /next"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("answer %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
}

// A handler that hijacks a watched connection gets it whole: the watch's
// pending read is cut short and leaves nothing behind.
func TestHijackStopsTheWatch(t *testing.T) {
	t.Parallel()
	reading := make(chan struct{})
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-reading
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		io.WriteString(rw, "hijacked\n")
		rw.Flush()
		line, err := rw.ReadString('\n')
		if err != nil {
			t.Errorf("reading the hijacked connection: %v", err)
		}
		io.WriteString(rw, "echo "+line)
		rw.Flush()
	})}
	srv.watchHook = func(event string, _ int) {
		if event == "reading" {
			close(reading)
		}
	}
	c, br := dial(t, serveOne(t, srv))
	io.WriteString(c, "GET /hijack HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if line, _ := br.ReadString('\n'); line != "hijacked\n" {
		t.Fatalf("first line %q", line)
	}
	io.WriteString(c, "ping\n")
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "echo ping") {
		t.Fatalf("the hijacked connection answered %q, want the echo of ping", line)
	}
}
