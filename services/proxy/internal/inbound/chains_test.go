package inbound_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/testca"
	"keyway.dev/proxy/internal/inbound"
)

// counts records a Manager's client chain verifications and handshake
// outcomes.
type counts struct {
	verified, cached atomic.Int64
	mu               sync.Mutex
	reasons          []failure.Reason
}

func (c *counts) ObserveClientChain(_ string, cached bool) {
	if cached {
		c.cached.Add(1)
	} else {
		c.verified.Add(1)
	}
}

func (c *counts) ObserveInboundHandshake(_ string, reason failure.Reason) {
	c.mu.Lock()
	c.reasons = append(c.reasons, reason)
	c.mu.Unlock()
}

// last is the outcome of the last handshake counted ("" when it
// completed); it waits for as many handshakes as n.
func (c *counts) last(t *testing.T, n int) failure.Reason {
	t.Helper()
	var r failure.Reason
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.reasons) < n {
			return false
		}
		r = c.reasons[n-1]
		return true
	})
	return r
}

func (c *counts) chains() (verified, cached int64) { return c.verified.Load(), c.cached.Load() }

// fetches signals every fetch of a CRL, for revocation.Options.OnFetch.
type fetches struct{ n atomic.Int64 }

func (f *fetches) observe(revocation.FetchEvent) { f.n.Add(1) }

// after waits until a fetch has completed that started after this call.
func (f *fetches) after(t *testing.T) {
	t.Helper()
	// A fetch under way now may have read the list before the change:
	// wait for the one after it.
	want := f.n.Load() + 2
	waitFor(t, func() bool { return f.n.Load() >= want })
}

// judged refuses, as the proxy does, a request whose client certificate
// does not verify now (inbound.ClientOf); next serves the others.
func judged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cl, ok := inbound.ClientOf(r, time.Now()); !ok || !cl.Verified() || cl.XFCC == "" {
			http.Error(w, string(cl.Reason), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func managerWith(t *testing.T, c *counts, f *fetches) *inbound.Manager {
	t.Helper()
	opts := inbound.Options{Handler: judged(handler("n")), ShutdownTimeout: 5 * time.Second, Handshakes: c, ClientChains: c}
	if f != nil {
		opts.Revocation = revocation.Options{MaxRefresh: 200 * time.Millisecond, MinRefresh: 50 * time.Millisecond, OnFetch: f.observe}
	}
	m := inbound.New(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		m.Close(ctx)
	})
	return m
}

// A client that connects again with the same chain is verified from the
// cache; once the Listener's clientCAs no longer hold its CA, the same
// chain is refused at once, as unknown_authority.
func TestCachedChainRefusedAfterCARemoved(t *testing.T) {
	t.Parallel()
	servers, clients, others := testca.New(t, "server CA"), testca.New(t, "client CA"), testca.New(t, "other CA")
	c := new(counts)
	m := managerWith(t, c, nil)
	kp := servers.Server("test.com")
	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
		host(kp, tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "test.com"),
	}})
	addr := m.Addr("public")
	url := "https://" + addr + "/"
	alice := clientFor(servers, "test.com", clients.Client("alice"))
	for i := range 2 {
		if e, _, err := get(alice, url); err != nil || e.Client != "alice" {
			t.Fatalf("connection %d: %v %+v", i+1, err, e)
		}
	}
	if v, cached := c.chains(); v != 1 || cached != 1 {
		t.Fatalf("chains verified %d, cached %d; want 1 and 1", v, cached)
	}

	// The same configured address: the new snapshot is swapped in.
	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
		host(kp, tls.RequireAndVerifyClientCert, []*testca.CA{others}, "test.com"),
	}})
	if _, _, err := get(alice, url); err == nil {
		t.Fatal("the client's chain was accepted after its CA left the clientCAs")
	}
	if r := c.last(t, 3); r != failure.UnknownAuthority {
		t.Errorf("refusal reason %q, want %q", r, failure.UnknownAuthority)
	}
	if v, cached := c.chains(); v != 2 || cached != 1 {
		t.Errorf("chains verified %d, cached %d; want 2 and 1 (a new snapshot starts with no chain)", v, cached)
	}
}

// A chain taken from the cache is still checked for revocation at every
// handshake: once its certificate is on the CRL, the next connection is
// refused as revoked, while another client's cached chain still passes.
func TestCachedChainRefusedAfterRevocation(t *testing.T) {
	t.Parallel()
	servers, clients := testca.New(t, "server CA"), testca.New(t, "client CA")
	pub := clients.Publisher()
	c, f := new(counts), new(fetches)
	m := managerWith(t, c, f)
	h := host(servers.Server("test.com"), tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "test.com")
	h.Revocation = model.Revocation{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}}
	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{h}})
	url := "https://" + m.Addr("public") + "/"
	aliceKP, bobKP := clients.Client("alice"), clients.Client("bob")
	alice, bob := clientFor(servers, "test.com", aliceKP), clientFor(servers, "test.com", bobKP)
	for _, cl := range []*http.Client{alice, alice, bob, bob} {
		if _, resp, err := get(cl, url); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("before the revocation: %v", err)
		}
	}
	if v, cached := c.chains(); v != 2 || cached != 2 {
		t.Fatalf("chains verified %d, cached %d; want 2 and 2", v, cached)
	}

	pub.Revoke(aliceKP.Cert, int(revocation.KeyCompromise))
	f.after(t)
	if _, _, err := get(alice, url); err == nil {
		t.Fatal("a revoked client certificate was accepted from the chain cache")
	}
	if r := c.last(t, 5); r != failure.Revoked {
		t.Errorf("refusal reason %q, want %q", r, failure.Revoked)
	}
	if _, resp, err := get(bob, url); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("a client not revoked: %v", err)
	}
	if v, cached := c.chains(); v != 2 || cached != 4 {
		t.Errorf("chains verified %d, cached %d; want 2 and 4", v, cached)
	}
}

// A client that keeps session tickets resumes its TLS 1.3 session with the
// host that issued the ticket (through the Listener's per-host configs);
// the resumed session still has its client certificate judged
// (ClientOf answers with it) and checked for revocation, so a certificate
// revoked since the ticket was issued is refused on resumption. A ticket is
// not resumed by another host of the Listener.
func TestResumedSessionChecked(t *testing.T) {
	t.Parallel()
	servers, clients := testca.New(t, "server CA"), testca.New(t, "client CA")
	pub := clients.Publisher()
	c, f := new(counts), new(fetches)
	m := managerWith(t, c, f)
	kp := servers.Server("test.com", "other.com")
	h := host(kp, tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "test.com")
	h.Revocation = model.Revocation{Mode: revocation.HardFail, CRLs: []string{pub.CRLURL()}}
	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
		h, host(kp, tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "other.com"),
	}})
	addr := m.Addr("public")
	aliceKP := clients.Client("alice")
	sessions := tls.NewLRUClientSessionCache(8)
	cfg := func(sni string) *tls.Config {
		return &tls.Config{RootCAs: servers.Pool(), ServerName: sni, Certificates: []tls.Certificate{aliceKP.TLS}, ClientSessionCache: sessions}
	}
	// request sends one request on a new connection; resumed is whether
	// the handshake resumed a session, status the answer's.
	request := func(sni string) (resumed bool, e echo, err error) {
		conn, err := tls.Dial("tcp", addr, cfg(sni))
		if err != nil {
			return false, echo{}, err
		}
		defer conn.Close()
		resumed = conn.ConnectionState().DidResume
		req, _ := http.NewRequest(http.MethodGet, "https://"+sni+"/", nil)
		req.Close = true
		if err := req.Write(conn); err != nil {
			return resumed, echo{}, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			return resumed, echo{}, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return resumed, echo{}, errors.New(resp.Status)
		}
		return resumed, e, json.NewDecoder(resp.Body).Decode(&e)
	}

	if resumed, e, err := request("test.com"); err != nil || resumed || e.Client != "alice" {
		t.Fatalf("first connection: resumed %v, %+v, %v; want a full handshake", resumed, e, err)
	}
	resumed, e, err := request("test.com")
	if err != nil || !resumed {
		t.Fatalf("second connection: resumed %v, %v; want a resumed session", resumed, err)
	}
	if e.Client != "alice" {
		t.Errorf("the resumed session's client %q, want alice", e.Client)
	}
	if v, cached := c.chains(); v != 1 || cached != 1 {
		t.Errorf("chains verified %d, cached %d; want 1 and 1 (the resumed session's certificate checked again)", v, cached)
	}
	if resumed, _, err := request("other.com"); err != nil || resumed {
		t.Errorf("another host of the Listener: resumed %v, %v; want a full handshake", resumed, err)
	}

	pub.Revoke(aliceKP.Cert, int(revocation.KeyCompromise))
	f.after(t)
	resumed, _, err = request("test.com")
	if err == nil {
		t.Fatal("a revoked client certificate was accepted on a resumed session")
	}
	if !resumed {
		t.Errorf("the refused connection did not resume (%v): the test did not exercise resumption", err)
	}
	if r := c.last(t, 4); r != failure.Revoked {
		t.Errorf("refusal reason %q, want %q", r, failure.Revoked)
	}
}
