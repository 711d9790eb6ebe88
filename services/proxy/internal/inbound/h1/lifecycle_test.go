package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveOne serves handler with srv's settings on a loopback listener.
func serveOne(t *testing.T, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if srv.ErrorLog == nil {
		srv.ErrorLog = log.New(io.Discard, "", 0)
	}
	go srv.Serve(context.Background(), ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

// waitClosed waits for the server to close c (a read returns EOF).
func waitClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
		t.Fatalf("waiting for the server to close the connection: read %q, %v", b, err)
	}
}

func okHandler(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	io.WriteString(w, "ok "+string(b))
}

func TestReadHeaderTimeoutClosesSlowHeader(t *testing.T) {
	t.Parallel()
	addr := serveOne(t, &Server{Handler: http.HandlerFunc(okHandler), ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: time.Minute})
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n") // never ends
	start := time.Now()
	waitClosed(t, br)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("closed after %v, want about ReadHeaderTimeout", d)
	}
}

func TestIdleTimeoutClosesKeptConnection(t *testing.T) {
	t.Parallel()
	addr := serveOne(t, &Server{Handler: http.HandlerFunc(okHandler), ReadHeaderTimeout: time.Minute, IdleTimeout: 200 * time.Millisecond})
	c, br := dial(t, addr)
	io.WriteString(c, get1("/"))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	waitClosed(t, br)
}

// TestHeaderTimeoutDoesNotBoundBody: a body that takes longer than
// ReadHeaderTimeout to arrive is read whole, as with net/http.
func TestHeaderTimeoutDoesNotBoundBody(t *testing.T) {
	t.Parallel()
	addr := serveOne(t, &Server{Handler: http.HandlerFunc(okHandler), ReadHeaderTimeout: 100 * time.Millisecond, IdleTimeout: time.Minute})
	c, br := dial(t, addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
	// Time passing is what is tested: three header timeouts.
	<-time.After(300 * time.Millisecond)
	io.WriteString(c, "cd")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(b) != "ok abcd" {
		t.Errorf("got %d %q, want 200 \"ok abcd\"", res.StatusCode, b)
	}
}

// TestShutdownClosesIdleAndLetsActiveFinish: Shutdown closes a connection
// waiting for a request at once, and one serving a request once its
// response is written (with Connection: close).
func TestShutdownClosesIdleAndLetsActiveFinish(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, "done")
	}), ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute}
	addr := serveOne(t, srv)

	idle, idleBR := dial(t, addr)
	io.WriteString(idle, get1("/"))
	if res, err := http.ReadResponse(idleBR, nil); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, res.Body)
	}
	// The slow request is the connection's second: read whole into the
	// buffer with the wait for it, it must count as active all the same.
	active, activeBR := dial(t, addr)
	io.WriteString(active, get1("/"))
	if res, err := http.ReadResponse(activeBR, nil); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, res.Body)
	}
	io.WriteString(active, get1("/slow"))
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	waitClosed(t, idleBR)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	default:
	}
	close(release)
	res, err := http.ReadResponse(activeBR, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if string(b) != "done" || !res.Close {
		t.Errorf("in-flight request got %q, close %t; want \"done\" and Connection: close", b, res.Close)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	waitClosed(t, activeBR)
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the listener still accepts after Shutdown")
	}
}

// TestShutdownServesANewConnectionsFirstRequest: a connection that has
// sent no request yet when Shutdown begins (a client that has just
// connected) is not closed as idle: the request it then sends is served,
// with Connection: close. One that sends nothing is closed after
// newConnGrace, and Shutdown returns once both are gone.
//
// Not parallel: it shortens newConnGrace.
func TestShutdownServesANewConnectionsFirstRequest(t *testing.T) {
	defer func(d time.Duration) { newConnGrace = d }(newConnGrace)
	newConnGrace = 300 * time.Millisecond
	srv := &Server{Handler: http.HandlerFunc(okHandler), ReadHeaderTimeout: time.Minute, ErrorLog: log.New(io.Discard, "", 0)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	newConn := func() (net.Conn, *bufio.Reader) {
		c, br := dial(t, ln.Addr().String())
		rwc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		go srv.ServeConn(context.Background(), rwc)
		return c, br
	}
	sends, sendsBR := newConn()
	_, silentBR := newConn()
	waitUntil(t, func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns) == 2
	})

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	waitUntil(t, srv.shutdown.Load)
	io.WriteString(sends, "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello")
	res, err := http.ReadResponse(sendsBR, nil)
	if err != nil {
		t.Fatalf("the request sent after Shutdown began: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(b) != "ok hello" || !res.Close {
		t.Errorf("got %d %q, close %t; want 200 \"ok hello\" and Connection: close", res.StatusCode, b, res.Close)
	}
	waitClosed(t, sendsBR)
	start := time.Now()
	waitClosed(t, silentBR)
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Errorf("the silent connection held Shutdown %s", waited)
	}
}

// waitUntil polls cond until it holds, for at most 10 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}

// TestShutdownDeadlineThenClose: a request that does not finish makes
// Shutdown return ctx's error; Close then cuts it off and cancels its
// context.
func TestShutdownDeadlineThenClose(t *testing.T) {
	t.Parallel()
	entered, canceled := make(chan struct{}), make(chan struct{})
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		close(canceled)
	}), ReadHeaderTimeout: time.Minute}
	addr := serveOne(t, srv)
	c, br := dial(t, addr)
	io.WriteString(c, get1("/"))
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown returned %v, want the deadline", err)
	}
	srv.Close()
	<-canceled
	waitClosed(t, br)
}

// TestHijackedConnectionOutlivesShutdown: a hijacked connection is the
// handler's; Shutdown neither waits for it nor closes it.
func TestHijackedConnectionOutlivesShutdown(t *testing.T) {
	t.Parallel()
	hijacked := make(chan net.Conn, 1)
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		hijacked <- c
	}), ReadHeaderTimeout: time.Minute}
	addr := serveOne(t, srv)
	c, br := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 101 {
		t.Fatalf("got %v, %v; want 101", res, err)
	}
	sc := <-hijacked
	defer sc.Close()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	io.WriteString(sc, "still here")
	b := make([]byte, len("still here"))
	if _, err := io.ReadFull(br, b); err != nil || string(b) != "still here" {
		t.Errorf("read %q, %v from the hijacked connection after Shutdown", b, err)
	}
}

// TestPanicLoggedAbortNot: a handler's panic is logged with its stack
// and closes the connection; http.ErrAbortHandler closes it silently.
func TestPanicLoggedAbortNot(t *testing.T) {
	t.Parallel()
	var logs strings.Builder
	logged := make(chan struct{}, 2)
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("boom")
	}), ErrorLog: log.New(writerFunc(func(p []byte) (int, error) {
		logs.Write(p)
		logged <- struct{}{}
		return len(p), nil
	}), "", 0)}
	addr := serveOne(t, srv)
	for _, path := range []string{"/abort", "/panic"} {
		c, br := dial(t, addr)
		io.WriteString(c, get1(path))
		waitClosed(t, br)
	}
	<-logged
	if got := logs.String(); !strings.Contains(got, "http: panic serving") || !strings.Contains(got, "boom") || strings.Count(got, "panic serving") != 1 {
		t.Errorf("error log %q: want one panic, boom's, with its stack", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
