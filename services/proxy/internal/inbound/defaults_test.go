package inbound_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/inbound"
)

// Every Listener bounds request headers at 64 KiB by default, over HTTP/1.1
// and HTTP/2 alike.
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "server CA")
	m := newManager(t, "n1")
	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
		host(ca.Server("test.com"), tls.NoClientCert, nil, "test.com"),
	}})
	url := "https://" + m.Addr("public") + "/"
	if inbound.DefaultMaxHeaderBytes != 64<<10 {
		t.Fatalf("DefaultMaxHeaderBytes = %d, want 64 KiB", inbound.DefaultMaxHeaderBytes)
	}

	for _, h2 := range []bool{false, true} {
		proto := map[bool]string{false: "h1", true: "h2"}[h2]
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "test.com"}
		// HTTP/1.1 requests each on a new connection: net/http's slack over
		// the limit grows on a reused one.
		tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2, DisableKeepAlives: !h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		t.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		send := func(size int) (*http.Response, error) {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("X-Padding", strings.Repeat("a", size))
			resp, err := c.Do(req)
			if err != nil {
				return nil, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp, nil
		}
		t.Run(proto+"/60KiB", func(t *testing.T) {
			resp, err := send(60 << 10)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
				t.Fatalf("got %s over %s, want 200 over %s", resp.Status, resp.Proto, proto)
			}
		})
		t.Run(proto+"/70KiB", func(t *testing.T) {
			resp, err := send(70 << 10)
			switch {
			case err != nil && h2:
				// Go's HTTP/2 client honours the server's
				// SETTINGS_MAX_HEADER_LIST_SIZE and does not send it.
				if !strings.Contains(err.Error(), "header list larger than peer's advertised limit") {
					t.Fatalf("got %v, want the advertised header list limit to stop the request", err)
				}
			case err != nil:
				t.Fatal(err)
			case resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge:
				t.Fatalf("got %s over %s, want 431", resp.Status, resp.Proto)
			}
		})
	}
}
