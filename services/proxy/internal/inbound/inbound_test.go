package inbound_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/proxy/internal/inbound"
)

func TestSNISelectsHost(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "server CA")
	a, b, wild := ca.Server("a.test"), ca.Server("b.test"), ca.Server("*.wild.test")
	m := newManager(t, "n1")
	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Default: 1, Hosts: []model.ListenerHost{
		host(a, tls.NoClientCert, nil, "a.test"),
		host(b, tls.NoClientCert, nil, "b.test"),
		host(wild, tls.NoClientCert, nil, "*.wild.test"),
	}})
	addr := m.Addr("public")
	tests := []struct {
		sni  string
		want *testca.KeyPair
	}{
		{"a.test", a},
		{"b.test", b},
		{"A.Test", a},         // SNI is case-insensitive
		{"", b},               // no SNI: the default
		{"unknown.test", b},   // unknown: the default
		{"x.wild.test", wild}, // the wildcard covers one label
		{"wild.test", b},      // not the bare domain
		{"y.x.wild.test", b},  // nor two labels
		{"a.test.example", b}, // no suffix match
	}
	for _, tt := range tests {
		t.Run(cmpName(tt.sni), func(t *testing.T) {
			t.Parallel()
			if got := served(t, addr, tt.sni); got != tt.want.Fingerprint() {
				t.Errorf("SNI %q served %s, want %s (%s)", tt.sni, got, tt.want.Fingerprint(), tt.want.Cert.Subject.CommonName)
			}
		})
	}
	// And through HTTP, verifying the server: the host's certificate
	// verifies for its name.
	for _, sni := range []string{"a.test", "b.test", "x.wild.test"} {
		e, resp, err := get(clientFor(ca, sni, nil), "https://"+addr+"/")
		if err != nil || resp.StatusCode != 200 || e.SNI != sni || resp.ProtoMajor != 2 {
			t.Errorf("GET with SNI %s: %v %v %+v", sni, err, resp, e)
		}
	}
}

func cmpName(sni string) string {
	if sni == "" {
		return "no-sni"
	}
	return sni
}

func TestClientAuth(t *testing.T) {
	t.Parallel()
	servers := testca.New(t, "server CA")
	clients := testca.New(t, "client CA")
	other := testca.New(t, "other CA")
	inter := clients.Intermediate("client intermediate")
	viaInter := inter.Client("deep")
	viaInter.TLS.Certificate = append(viaInter.TLS.Certificate, inter.Cert.Raw)

	m := newManager(t, "n1")
	shallow := host(servers.Server("shallow.test"), tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "shallow.test")
	shallow.VerifyDepth = 2 // leaf and root
	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
		host(servers.Server("verify.test"), tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "verify.test"),
		host(servers.Server("request.test"), tls.RequestClientCert, nil, "request.test"),
		host(servers.Server("ifgiven.test"), tls.VerifyClientCertIfGiven, []*testca.CA{clients}, "ifgiven.test"),
		shallow,
	}})
	url := "https://" + m.Addr("public") + "/"
	tests := []struct {
		name   string
		sni    string
		client *testca.KeyPair
		maxTLS uint16
		ok     bool
	}{
		{"verify/trusted", "verify.test", clients.Client("alice"), 0, true},
		{"verify/trusted-via-intermediate", "verify.test", viaInter, 0, true},
		{"verify/no-certificate", "verify.test", nil, 0, false},
		{"verify/no-certificate-tls12", "verify.test", nil, tls.VersionTLS12, false},
		{"verify/other-ca", "verify.test", other.Client("mallory"), 0, false},
		{"verify/other-ca-tls12", "verify.test", other.Client("mallory"), tls.VersionTLS12, false},
		{"request/no-certificate", "request.test", nil, 0, true},
		{"request/any-certificate", "request.test", other.Client("mallory"), 0, true},
		{"verify-if-given/no-certificate", "ifgiven.test", nil, 0, true},
		{"verify-if-given/other-ca", "ifgiven.test", other.Client("mallory"), 0, false},
		{"verify-depth/within", "shallow.test", clients.Client("alice"), 0, true},
		{"verify-depth/too-deep", "shallow.test", viaInter, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := clientFor(servers, tt.sni, tt.client)
			c.Transport.(*http.Transport).TLSClientConfig.MaxVersion = tt.maxTLS
			e, resp, err := get(c, url)
			if !tt.ok {
				// TLS 1.3: the client learns of the refusal on its
				// first read, which fails the request all the same.
				if err == nil {
					t.Fatalf("request succeeded (%d, %+v), want it refused", resp.StatusCode, e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
				t.Errorf("got %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
			}
			if tt.client != nil && e.Client != tt.client.Cert.Subject.CommonName {
				t.Errorf("handler saw client %q, want %q", e.Client, tt.client.Cert.Subject.CommonName)
			}
		})
	}
}

// The API7 scenario, with the real curl: mutual TLS on test.com, HTTP/2.
func TestCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not on PATH")
	}
	ca := testca.New(t, "test CA")
	client := ca.Client("curl")
	dir := t.TempDir()
	for name, b := range map[string][]byte{"ca.pem": ca.CertPEM(), "client.crt": client.CertPEM, "client.key": client.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := newManager(t, "n1")
	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
		host(ca.Server("test.com"), tls.RequireAndVerifyClientCert, []*testca.CA{ca}, "test.com"),
	}})
	_, port, _ := net.SplitHostPort(m.Addr("public"))
	run := func(withCert bool) (string, error) {
		args := []string{"-sS", "-o", os.DevNull, "-w", "%{http_version}", "--max-time", "20",
			"--cacert", filepath.Join(dir, "ca.pem"),
			"--resolve", "test.com:" + port + ":127.0.0.1"}
		if withCert {
			args = append(args, "--cert", filepath.Join(dir, "client.crt"), "--key", filepath.Join(dir, "client.key"))
		}
		args = append(args, "https://test.com:"+port+"/hello")
		out, err := exec.Command(curl, args...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	out, err := run(true)
	if err != nil || out != "2" {
		t.Errorf("curl with the client certificate: %v, output %q; want HTTP version 2", err, out)
	}
	out, err = run(false)
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Errorf("curl without a client certificate: %v, output %q; want a non-zero exit", err, out)
	}
}

// Rotating the server certificate under load fails no request, the new
// certificate is served afterwards, and the server is the same one.
func TestRotationUnderLoad(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "server CA")
	clients := testca.New(t, "client CA")
	oldCert, newCert := ca.Server("test.com"), ca.Server("test.com")
	listener := func(kp *testca.KeyPair) *model.Listener {
		return &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
			host(kp, tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "test.com"),
		}}
	}
	m := newManager(t, "n1")
	apply(t, m, listener(oldCert))
	addr := m.Addr("public")
	url := "https://" + addr + "/"
	before := m.Status()[0]

	// A connection opened before the rotation keeps its certificate.
	keep := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "test.com", Certificates: []tls.Certificate{clients.Client("keep").TLS}}, ForceAttemptHTTP2: true,
	}}
	if _, resp, err := get(keep, url); err != nil || resp.TLS.PeerCertificates[0].Equal(oldCert.Cert) == false {
		t.Fatalf("before the rotation: %v", err)
	}

	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		c := clientFor(ca, "test.com", clients.Client(fmt.Sprintf("load-%d", i)))
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, resp, err := get(c, url); err != nil || resp.StatusCode != 200 {
					if err == nil {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
					firstErr.CompareAndSwap(nil, &err)
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		})
	}
	waitFor(t, func() bool { return ok.Load() >= 50 })
	atRotation := ok.Load()
	apply(t, m, listener(newCert))
	waitFor(t, func() bool { return ok.Load() >= atRotation+50 })
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during the rotation; first: %v", n, n+ok.Load(), *firstErr.Load())
	}
	t.Logf("%d requests, %d after the rotation", ok.Load(), ok.Load()-atRotation)

	if got := served(t, addr, "test.com"); got != newCert.Fingerprint() {
		t.Errorf("after the rotation the server presents %s, want the new certificate %s", got, newCert.Fingerprint())
	}
	if _, resp, err := get(keep, url); err != nil || !resp.TLS.PeerCertificates[0].Equal(oldCert.Cert) {
		t.Errorf("the connection opened before the rotation: %v; want it kept with the old certificate", err)
	}
	after := m.Status()[0]
	if after.Bound != before.Bound || !after.Since.Equal(before.Since) {
		t.Errorf("the server was restarted: bound %s since %v, before %s since %v", after.Bound, after.Since, before.Bound, before.Since)
	}
	if after.Hosts[0].Certificate != newCert.Fingerprint() {
		t.Errorf("status shows certificate %s, want %s", after.Hosts[0].Certificate, newCert.Fingerprint())
	}
}

// waitFor waits up to 30 seconds for cond to hold.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	testwait.Until(t, 30*time.Second, "the condition", cond)
}

// Two nodes (two managers) serve one address through SO_REUSEPORT; when
// one stops, the other takes every new connection.
func TestTwoNodesShareAnAddress(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "server CA")
	l := &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{host(ca.Server("test.com"), tls.NoClientCert, nil, "test.com")}}
	m1, m2 := newManager(t, "n1"), newManager(t, "n2")
	apply(t, m1, l)
	shared := *l
	shared.Address = m1.Addr("public")
	apply(t, m2, &shared)
	if m2.Addr("public") != shared.Address {
		t.Fatalf("second node bound %s, want %s", m2.Addr("public"), shared.Address)
	}
	c := clientFor(ca, "test.com", nil)
	seen := map[string]int{}
	for range 200 {
		e, _, err := get(c, "https://"+shared.Address+"/")
		if err != nil {
			t.Fatal(err)
		}
		seen[e.Node]++
	}
	if seen["n1"] == 0 || seen["n2"] == 0 {
		t.Errorf("connections by node: %v; want both nodes to serve", seen)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m1.Close(ctx)
	for range 20 {
		e, _, err := get(c, "https://"+shared.Address+"/")
		if err != nil || e.Node != "n2" {
			t.Fatalf("after n1 stopped: %v, served by %q", err, e.Node)
		}
	}
}

// A Listener whose address cannot be bound is reported, and the others are
// served; it is bound once the address is free.
func TestBindFailure(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "server CA")
	taken := listenBelowEphemeral(t) // without SO_REUSEPORT
	hosts := []model.ListenerHost{host(ca.Server("test.com"), tls.NoClientCert, nil, "test.com")}
	good := &model.Listener{Name: "good", Address: "127.0.0.1:0", Hosts: hosts}
	bad := &model.Listener{Name: "bad", Address: taken.Addr().String(), Hosts: hosts}
	m := newManager(t, "n1")
	errs := m.Apply([]*model.Listener{good, bad})
	if len(errs) != 1 || errs["bad"] == nil || !strings.Contains(errs["bad"].Error(), "address already in use") {
		t.Fatalf("Apply = %v, want only bad refused, address in use", errs)
	}
	if _, resp, err := get(clientFor(ca, "test.com", nil), "https://"+m.Addr("good")+"/"); err != nil || resp.StatusCode != 200 {
		t.Errorf("the good listener: %v", err)
	}
	st := m.Status()
	if len(st) != 2 || st[0].Name != "bad" || st[0].Error == "" || st[0].Bound != "" || st[0].Address != bad.Address || len(st[0].Hosts) != 1 {
		t.Errorf("status: %+v", st)
	}

	taken.Close()
	if errs := m.Apply([]*model.Listener{good, bad}); len(errs) != 0 {
		t.Fatalf("once the address is free: %v", errs)
	}
	if m.Addr("bad") != bad.Address || m.Status()[0].Error != "" {
		t.Errorf("bad listener: bound %q, status %+v", m.Addr("bad"), m.Status()[0])
	}
}

// listenBelowEphemeral listens on a loopback port below the kernel's
// ephemeral range: once it is closed, no other test's port-0 listener or
// outgoing connection is given that port before it is bound again.
func listenBelowEphemeral(t *testing.T) net.Listener {
	t.Helper()
	low := 32768 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if low <= 2048 {
		t.Skipf("the ephemeral port range starts at %d: no port below it to use", low)
	}
	start := 1024 + int(time.Now().UnixNano()%int64(low-2048))
	for i := range 200 {
		port := 1024 + (start-1024+i*7919)%(low-1024)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			return l
		}
	}
	t.Fatalf("no free loopback port below %d in 200 tries", low)
	return nil
}

// Two Listeners on one address (which validation refuses) are not both
// served: the one serving there keeps it.
func TestDuplicateAddress(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "server CA")
	hosts := []model.ListenerHost{host(ca.Server("test.com"), tls.NoClientCert, nil, "test.com")}
	m := newManager(t, "n1")
	apply(t, m, &model.Listener{Name: "b", Address: "127.0.0.1:0", Hosts: hosts})
	addr := m.Addr("b")
	// "b" keeps the address it serves although "a" sorts first.
	errs := m.Apply([]*model.Listener{
		{Name: "a", Address: "127.0.0.1:0", Hosts: hosts},
		{Name: "b", Address: "127.0.0.1:0", Hosts: hosts},
	})
	if len(errs) != 1 || errs["a"] == nil || m.Addr("b") != addr || m.Addr("a") != "" {
		t.Errorf("Apply = %v; a at %q, b at %q (was %s)", errs, m.Addr("a"), m.Addr("b"), addr)
	}
}

// A Listener that moves is served at its new address, and its old server
// drains and closes; removing it closes the new one too.
func TestAddressChangeDrainsTheOldServer(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "server CA")
	m := newManager(t, "n1")
	hosts := []model.ListenerHost{host(ca.Server("test.com"), tls.NoClientCert, nil, "test.com")}
	first := listenBelowEphemeral(t)
	firstAddr := first.Addr().String()
	first.Close()
	apply(t, m, &model.Listener{Name: "public", Address: firstAddr, Hosts: hosts})

	apply(t, m, &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: hosts})
	moved := m.Addr("public")
	if moved == firstAddr || moved == "" {
		t.Fatalf("listener at %q after the move", moved)
	}
	if _, _, err := get(clientFor(ca, "test.com", nil), "https://"+moved+"/"); err != nil {
		t.Errorf("at the new address: %v", err)
	}
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", firstAddr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})

	apply(t, m)
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", moved)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if st := m.Status(); len(st) != 0 {
		t.Errorf("status after removing every listener: %+v", st)
	}
}

// TestDrainFinishesHandshakesInFlight: a client whose handshake is under
// way when its node drains (a rolling restart: another node serves the
// same address) gets its request served instead of a connection closed
// mid-handshake, and the drain does not wait for its ShutdownTimeout.
// Over HTTP/1.1 the draining node serves it; over h2 the draining node
// serves it or, if its GOAWAY came first, the client sends it again to
// the other node.
func TestDrainFinishesHandshakesInFlight(t *testing.T) {
	t.Parallel()
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1.1", true: "h2"}[h2], func(t *testing.T) {
			t.Parallel()
			ca, clients := testca.New(t, "server CA"), testca.New(t, "client CA")
			l := &model.Listener{Name: "public", Address: "127.0.0.1:0", Hosts: []model.ListenerHost{
				host(ca.Server("a.test"), tls.RequireAndVerifyClientCert, []*testca.CA{clients}, "a.test"),
			}}
			draining := inbound.New(inbound.Options{Handler: handler("draining"), ShutdownTimeout: time.Minute})
			apply(t, draining, l)
			addr := draining.Addr("public")

			// The client's certificate is asked for mid-handshake: the
			// callback holds the handshake there until released.
			kp := clients.Client("caller")
			asked, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "a.test", GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				once.Do(func() {
					close(asked)
					<-release
				})
				return &kp.TLS, nil
			}}
			if !h2 {
				cfg.NextProtos = []string{"http/1.1"}
			}
			c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2}}
			type result struct {
				e   echo
				err error
			}
			got := make(chan result, 1)
			go func() {
				e, _, err := get(c, "https://"+addr+"/")
				got <- result{e, err}
			}()
			<-asked

			// The other node binds the address once the connection is
			// the draining node's.
			other := newManager(t, "other")
			shared := *l
			shared.Address = addr
			apply(t, other, &shared)

			closed := make(chan time.Duration, 1)
			go func() {
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				draining.Close(ctx)
				closed <- time.Since(start)
			}()
			waitFor(t, func() bool { return draining.Addr("public") == "" })
			close(release)

			r := <-got
			if r.err != nil {
				t.Fatalf("the request whose handshake the drain caught: %v", r.err)
			}
			want := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
			if r.e.Proto != want || r.e.Client != "caller" || (!h2 && r.e.Node != "draining") {
				t.Errorf("served %+v; want %s for caller, by the draining node over HTTP/1.1", r.e, want)
			}
			t.Logf("served by %s", r.e.Node)
			if took := <-closed; took > 20*time.Second {
				t.Errorf("the drain took %s: it waited for its ShutdownTimeout", took)
			}
		})
	}
}
