package upstream_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/proxy/internal/upstream"
)

// gateway starts an mTLS upstream serving h and, in front of it, a plain
// HTTP server whose handler is Upstream.Forward. It returns the front URL.
func gateway(t *testing.T, h http.Handler, h2 bool, protocol string) string {
	t.Helper()
	p := newPKI(t)
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = h2
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.server.TLS}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.clients.Pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	alpn := []string{"http/1.1"}
	if h2 {
		alpn = []string{"h2"}
	}
	u, err := upstream.New(&model.Service{Name: "orders", Protocol: protocol, Endpoints: []string{srv.Listener.Addr().String()}},
		outbound(p, &p.client.TLS, func(o *model.OutboundTLS) { o.ALPN = alpn }), upstream.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Drain(context.Background()) })
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { u.Forward(w, r) }))
	t.Cleanup(front.Close)
	return front.URL
}

func protos(t *testing.T, f func(t *testing.T, h2 bool)) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "h1", true: "h2"}[h2], func(t *testing.T) {
			t.Parallel()
			f(t, h2)
		})
	}
}

// Hop-by-hop headers (the fixed list and those Connection names) go
// neither way; forwarding headers are the gateway's; TE: trailers passes.
func TestForwardHeaders(t *testing.T) {
	t.Parallel()
	protos(t, func(t *testing.T, h2 bool) {
		seen := make(chan http.Header, 1)
		var query string
		url := gateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := r.Header.Clone()
			h["Host"] = []string{r.Host}
			query = r.URL.RawQuery
			seen <- h
			w.Header().Set("Connection", "X-Hop-Back")
			w.Header().Set("X-Hop-Back", "1")
			w.Header().Set("X-End-To-End", "kept")
			w.Header().Add("X-Multi", "a")
			w.Header().Add("X-Multi", "b")
		}), h2, "")
		req, _ := http.NewRequest("GET", url+"/orders?a=1&b=2;c=3", nil)
		req.Host = "orders.example"
		req.Header.Set("Connection", "X-Hop, keep-alive")
		req.Header.Set("X-Hop", "secret")
		req.Header.Set("Proxy-Authorization", "Basic eA==")
		req.Header.Set("Te", "trailers, deflate")
		req.Header.Set("Forwarded", "for=6.6.6.6")
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		req.Header.Set("X-Forwarded-Host", "evil.example")
		req.Header.Set("X-Kept", "yes")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		h := <-seen
		for k, want := range map[string]string{
			"X-Hop": "", "Proxy-Authorization": "", "Connection": "", "Forwarded": "", "Keep-Alive": "",
			"Te": "trailers", "X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "orders.example",
			"X-Forwarded-Proto": "http", "X-Kept": "yes", "Host": "orders.internal", "User-Agent": "Go-http-client/1.1",
		} {
			if got := strings.Join(h[k], ","); got != want {
				t.Errorf("upstream got %s %q, want %q", k, got, want)
			}
		}
		if query != "a=1" {
			t.Errorf("upstream got query %q, want the unparsable part dropped", query)
		}
		// An h2 upstream cannot send Connection; only h1 can nominate.
		if got := resp.Header.Get("X-Hop-Back"); !h2 && got != "" {
			t.Errorf("client got X-Hop-Back %q, a hop-by-hop header", got)
		}
		if got := resp.Header.Get("X-End-To-End"); got != "kept" {
			t.Errorf("client got X-End-To-End %q", got)
		}
		if got := resp.Header.Values("X-Multi"); strings.Join(got, ",") != "a,b" {
			t.Errorf("client got X-Multi %q", got)
		}
	})
}

// gRPC answers with declared trailers and trailers set after the body
// (http.TrailerPrefix): both reach the client.
func TestForwardTrailers(t *testing.T) {
	t.Parallel()
	protos(t, func(t *testing.T, h2 bool) {
		url := gateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Te") != "trailers" {
				t.Errorf("upstream got TE %q", r.Header.Get("Te"))
			}
			w.Header().Set("Trailer", "Grpc-Status")
			w.Header().Set("Content-Type", "application/grpc")
			w.Write([]byte("\x00\x00\x00\x00\x00"))
			w.Header().Set("Grpc-Status", "0")
			w.Header().Set(http.TrailerPrefix+"Grpc-Message", "ok")
		}), h2, model.ProtocolGRPC)
		req, _ := http.NewRequest("POST", url+"/pkg.Svc/Method", strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Te", "trailers")
		req.Header.Set("Content-Type", "application/grpc")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(body) != 5 {
			t.Errorf("body %q", body)
		}
		if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
			t.Errorf("trailer Grpc-Status %q, want 0", got)
		}
		if got := resp.Trailer.Get("Grpc-Message"); got != "ok" {
			t.Errorf("trailer Grpc-Message %q, want ok", got)
		}
	})
}

// Event streams and gRPC streams reach the client as they are written,
// not when the upstream's response ends.
func TestForwardStreamingFlush(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, protocol, contentType string
		h2                          bool
	}{
		{"event-stream", "", "text/event-stream; charset=utf-8", false},
		{"grpc", model.ProtocolGRPC, "application/grpc", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan struct{})
			url := gateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.Header().Set("Content-Length", "") // not computed from a short body
				io.WriteString(w, "data: 1\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-got: // the client saw the first event: the rest may come
				case <-time.After(5 * time.Second):
					t.Error("the first event did not reach the client before the response ended")
				}
				io.WriteString(w, "data: 2\n\n")
			}), tc.h2, tc.protocol)
			resp, err := http.Get(url + "/events")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			line, err := br.ReadString('\n')
			if err != nil || line != "data: 1\n" {
				t.Fatalf("first line %q, %v", line, err)
			}
			close(got)
			rest, _ := io.ReadAll(br)
			if string(rest) != "\ndata: 2\n\n" {
				t.Errorf("rest %q", rest)
			}
		})
	}
}

// An Upgrade request gets the upstream's 101 and a spliced connection.
func TestForwardUpgrade(t *testing.T) {
	t.Parallel()
	url := gateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" || r.Header.Get("Connection") != "Upgrade" {
			t.Errorf("upstream got Upgrade %q Connection %q", r.Header.Get("Upgrade"), r.Header.Get("Connection"))
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	}), false, "")
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: orders.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	io.WriteString(conn, "ping\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo ping\n" {
		t.Errorf("through the upgraded connection: %q, %v", line, err)
	}
}

// A client that sends Expect: 100-continue gets the go-ahead and its body
// reaches the upstream.
func TestForward100Continue(t *testing.T) {
	t.Parallel()
	protos(t, func(t *testing.T, h2 bool) {
		url := gateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(w, r.Body)
		}), h2, "")
		var continued bool
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got100Continue: func() { continued = true }})
		req, _ := http.NewRequestWithContext(ctx, "PUT", url+"/upload", strings.NewReader("payload"))
		req.Header.Set("Expect", "100-continue")
		c := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "payload" || !continued {
			t.Errorf("body %q, got 100 Continue: %v", body, continued)
		}
	})
}

// A client that goes away cancels the upstream request.
func TestForwardClientCancel(t *testing.T) {
	t.Parallel()
	protos(t, func(t *testing.T, h2 bool) {
		started, canceled := make(chan struct{}), make(chan struct{})
		url := gateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(started)
			select {
			case <-r.Context().Done():
				close(canceled)
			case <-time.After(5 * time.Second):
			}
		}), h2, "")
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", url+"/slow", nil)
		errc := make(chan error, 1)
		go func() {
			_, err := http.DefaultClient.Do(req)
			errc <- err
		}()
		<-started
		cancel()
		<-errc
		select {
		case <-canceled:
		case <-time.After(4 * time.Second):
			t.Error("the upstream request was not canceled")
		}
	})
}
