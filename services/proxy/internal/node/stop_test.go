package node_test

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/node"
)

// connTracker follows a server's connections; changed receives a value on
// every state change.
type connTracker struct {
	mu      sync.Mutex
	open    map[net.Conn]bool
	changed chan struct{}
}

func (c *connTracker) track(conn net.Conn, st http.ConnState) {
	c.mu.Lock()
	switch st {
	case http.StateNew:
		c.open[conn] = true
	case http.StateClosed, http.StateHijacked:
		delete(c.open, conn)
	}
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *connTracker) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.open)
}

// A request hung in an Upstream that was replaced (so draining) does not
// hold the stop beyond ShutdownTimeout, and the stop closes the upstream
// connections of the Upstreams still served.
func TestStopIsBoundedByShutdownTimeout(t *testing.T) {
	t.Parallel()
	url, kv := startNATS(t)
	ca, clients := testca.New(t, "upstream CA"), testca.New(t, "clients")

	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	conns := &connTracker{open: map[net.Conn]bool{}, changed: make(chan struct{}, 1)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hung/wait" {
			entered <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		w.Write([]byte("{}"))
	}))
	srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	srv.Config.ConnState = conns.track
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server("orders.internal").TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients.Pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	const shutdownTimeout = time.Second
	n, _, stop := launch(t, url, func(c *node.Config) { c.ShutdownTimeout = shutdownTimeout })
	t.Cleanup(func() { close(release) }) // before the node's and the server's cleanups
	put(t, kv, service("hung", "http1", addr(srv)))
	put(t, kv, binding(t, "hung-mtls", "hung", mtls(ca, clients.Client("gateway-1"), nil)))
	waitRevision(t, n, put(t, kv, route("hung", "/hung/", "hung")))

	answered := make(chan string, 1)
	go func() {
		resp, err := client.Get("http://" + n.Addr() + "/hung/wait")
		if err != nil {
			answered <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answered <- resp.Status + " " + string(body)
	}()
	select {
	case <-entered:
	case got := <-answered:
		t.Fatalf("the request was answered before it reached the upstream: %s", got)
	case <-time.After(30 * time.Second):
		t.Fatal("the request did not reach the upstream within 30s")
	}
	// The hung request's Upstream is replaced: it drains, waiting for it.
	waitRevision(t, n, put(t, kv, binding(t, "hung-mtls", "hung", mtls(ca, clients.Client("gateway-2"), nil))))
	// The new Upstream keeps an idle connection.
	do(t, "GET", "http://"+n.Addr()+"/hung/ok").echo(t)

	stop()
	stopped := make(chan struct{})
	go func() { n.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(shutdownTimeout + 3*time.Second):
		t.Fatalf("the node is still stopping %s after the stop began; ShutdownTimeout is %s", shutdownTimeout+3*time.Second, shutdownTimeout)
	}

	deadline := time.After(5 * time.Second)
	for conns.count() != 0 {
		select {
		case <-conns.changed:
		case <-deadline:
			t.Fatalf("%d upstream connections still open after the node stopped", conns.count())
		}
	}
}

// A clean stop closes the NATS connection without a warning.
func TestCleanStopDoesNotWarn(t *testing.T) {
	t.Parallel()
	url, _ := startNATS(t)
	n, logs, stop := launch(t, url, nil)
	<-n.Ready()
	stop()
	if err := n.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := logs.lines("disconnected from NATS; serving the last good configuration"); len(got) != 0 {
		t.Errorf("a clean stop logged %v", got)
	}
	if got := logs.lines("proxy node stopped"); len(got) != 1 {
		t.Errorf("%d stop lines", len(got))
	}
}
