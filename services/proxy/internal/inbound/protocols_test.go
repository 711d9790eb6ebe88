package inbound_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/inbound"
)

// handshakes counts handshake outcomes by reason ("" for success).
type handshakes struct {
	mu sync.Mutex
	n  map[failure.Reason]int
}

func (h *handshakes) ObserveInboundHandshake(_ string, reason failure.Reason) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[reason]++
}

func (h *handshakes) count(reason failure.Reason) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[reason]
}

// TestServersByProtocol: HTTP/1.1 (h1's loop, or net/http's server with
// NetHTTP1) and h2 (net/http's server) both serve a Listener's requests
// with what the handler needs of the connection (its client, its
// Listener, the server in the context), and each connection's handshake
// is counted once.
func TestServersByProtocol(t *testing.T) {
	t.Parallel()
	for _, servers := range []struct{ netHTTP1, netHTTP2 bool }{{false, false}, {true, false}, {false, true}} {
		netHTTP1, netHTTP2 := servers.netHTTP1, servers.netHTTP2
		t.Run(fmt.Sprintf("NetHTTP1=%t,NetHTTP2=%t", netHTTP1, netHTTP2), func(t *testing.T) {
			t.Parallel()
			ca, clients := testca.New(t, "server CA"), testca.New(t, "client CA")
			obs := &handshakes{n: map[failure.Reason]int{}}
			m := inbound.New(inbound.Options{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					cl, ok := inbound.ClientOf(r, time.Now())
					_, underServer := r.Context().Value(http.ServerContextKey).(*http.Server)
					fmt.Fprintf(w, "%s listener=%s client=%t verified=%t server=%t", r.Proto, inbound.ListenerOf(r), ok, cl.Verified(), underServer)
				}),
				ShutdownTimeout: 5 * time.Second, Handshakes: obs, NetHTTP1: netHTTP1, NetHTTP2: netHTTP2,
			})
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				m.Close(ctx)
			})
			apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
				host(ca.Server("a.test"), tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "a.test"),
			}})
			addr := m.Addr("public")
			kp := clients.Client("caller")
			for _, h2 := range []bool{false, true} {
				tr := &http.Transport{ForceAttemptHTTP2: h2, TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "a.test", Certificates: []tls.Certificate{kp.TLS}}}
				if !h2 {
					tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
				}
				c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
				want := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2] + " listener=public client=true verified=true server=true"
				for range 3 { // one connection, kept
					resp, err := c.Get("https://" + addr + "/")
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if string(b) != want {
						t.Errorf("h2 %t: got %q, want %q", h2, b, want)
					}
				}
				tr.CloseIdleConnections()
			}
			if n := obs.count(""); n != 2 {
				t.Errorf("%d handshakes counted, want 2 (one per connection)", n)
			}

			// A client that offers only http/1.0 (curl --http1.0) is
			// served, as NGINX serves it, in HTTP/1.0.
			old, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "a.test", Certificates: []tls.Certificate{kp.TLS}, NextProtos: []string{"http/1.0"}})
			if err != nil {
				t.Fatalf("a client offering only http/1.0: %v", err)
			}
			defer old.Close()
			old.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(old, "GET / HTTP/1.0\r\nHost: a.test\r\n\r\n")
			resp10, err := http.ReadResponse(bufio.NewReader(old), nil)
			if err != nil {
				t.Fatal(err)
			}
			b10, _ := io.ReadAll(resp10.Body)
			if want := "HTTP/1.0 listener=public client=true verified=true server=true"; resp10.StatusCode != 200 || string(b10) != want || old.ConnectionState().NegotiatedProtocol != "http/1.0" {
				t.Errorf("http/1.0 client: %d %q (ALPN %q), want 200 %q", resp10.StatusCode, b10, old.ConnectionState().NegotiatedProtocol, want)
			}

			// Plain HTTP to the TLS port: net/http's answer.
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 400 || string(b) != "Client sent an HTTP request to an HTTPS server.\n" {
				t.Errorf("plain HTTP got %d %q, want net/http's 400", resp.StatusCode, b)
			}
		})
	}
}
