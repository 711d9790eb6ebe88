package inbound_test

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// Rotating the client CA under load, the way an operator does it — add the
// new CA next to the old one, move the clients to certificates from the new
// CA, remove the old CA — fails no request; afterwards a certificate from
// the old CA is refused at the handshake.
func TestClientCARotationUnderLoad(t *testing.T) {
	t.Parallel()
	servers := testca.New(t, "server CA")
	oldCA, newCA := testca.New(t, "client CA 2026"), testca.New(t, "client CA 2027")
	serverKP := servers.Server("test.com")
	listener := func(cas ...*testca.CA) *model.Listener {
		return &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
			host(serverKP, tls.RequireAndVerifyClientCert, cas, "test.com"),
		}}
	}
	m := newManager(t, "n1")
	apply(t, m, listener(oldCA))
	url := "https://" + m.Addr("public") + "/"

	// The clients' current certificate, and its generation: 0 from the
	// old CA, 1 from the new one.
	type clientCert struct {
		gen  int64
		cert *tls.Certificate
	}
	var current atomic.Pointer[clientCert]
	current.Store(&clientCert{0, &oldCA.Client("load").TLS})

	const workers = 8
	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	// done[i] is the last generation worker i completed a request with.
	var done [workers]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range workers {
		// What this worker presents on its next handshake.
		var use atomic.Pointer[clientCert]
		// A new handshake per request: every request meets the Listener's
		// client CAs of the moment.
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true, ForceAttemptHTTP2: true,
			TLSClientConfig: &tls.Config{RootCAs: servers.Pool(), ServerName: "test.com",
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return use.Load().cert, nil }},
		}}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cc := current.Load()
				use.Store(cc)
				if _, resp, err := get(c, url); err != nil || resp.StatusCode != 200 {
					if err == nil {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
					firstErr.CompareAndSwap(nil, &err)
					failed.Add(1)
					continue
				}
				done[i].Store(cc.gen)
				ok.Add(1)
			}
		})
	}
	more := func(n int64) {
		at := ok.Load()
		waitFor(t, func() bool { return ok.Load() >= at+n })
	}

	more(50)
	apply(t, m, listener(oldCA, newCA)) // overlap
	more(50)
	current.Store(&clientCert{1, &newCA.Client("load").TLS})
	// Every worker has finished a request with the new certificate: none
	// is still in flight with the old one.
	waitFor(t, func() bool {
		for i := range done {
			if done[i].Load() < 1 {
				return false
			}
		}
		return true
	})
	apply(t, m, listener(newCA)) // the old CA is gone
	more(50)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during the client CA rotation; first: %v", n, n+ok.Load(), *firstErr.Load())
	}
	t.Logf("%d requests through the rotation, none failed", ok.Load())

	old := clientFor(servers, "test.com", oldCA.Client("late"))
	if _, resp, err := get(old, url); err == nil {
		t.Errorf("a certificate from the removed CA got %d, want the connection refused", resp.StatusCode)
	}
}
