package h2

// Attacks on the server, each run against package h2's server and against
// net/http's own (Go's bundled x/net): what a peer can make either spend,
// and when either hangs up on it. The fork changed the write path (the
// serve loop flushes synchronously, under a write deadline; a handler's
// last frames are handed over without waiting): these tests check that it
// protects no less than the reference.
//
// Not parallel: several shorten writeStall, which the connections'
// goroutines read, and they count the process's goroutines.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"

	"keyway.dev/internal/testca"
)

// attackTarget is one server under attack, on loopback TLS.
type attackTarget struct {
	name  string
	addr  string
	cfg   *tls.Config // the client's
	conns *connCount
	fork  *Server // package h2's server; nil for net/http's
	// shutdown is the server's graceful Shutdown.
	shutdown func(context.Context) error
}

func (tg *attackTarget) isFork() bool { return tg.fork != nil }

// connCount counts the server's connections, opened and ended, and tells
// when that changes.
type connCount struct {
	mu           sync.Mutex
	opened, done int
	changed      chan struct{}
}

func newConnCount() *connCount { return &connCount{changed: make(chan struct{})} }

func (c *connCount) add(opened, done int) {
	c.mu.Lock()
	c.opened += opened
	c.done += done
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *connCount) ended() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// waitEnded waits until n connections have ended, or for d, and reports
// whether they have.
func (c *connCount) waitEnded(n int, d time.Duration) bool {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		c.mu.Lock()
		done, ch := c.done, c.changed
		c.mu.Unlock()
		if done >= n {
			return true
		}
		select {
		case <-ch:
		case <-timeout.C:
			return false
		}
	}
}

var attackCA struct {
	once sync.Once
	ca   *testca.CA
	kp   *testca.KeyPair
}

func attackCert(t testing.TB) (tls.Certificate, *tls.Config) {
	attackCA.once.Do(func() {
		attackCA.ca = testca.New(t, "h2 attack CA")
		attackCA.kp = attackCA.ca.Server("a.test")
	})
	return attackCA.kp.TLS, &tls.Config{RootCAs: attackCA.ca.Pool(), ServerName: "a.test", NextProtos: []string{"h2"}}
}

// attackTargets starts package h2's server and net/http's, each with the
// handler newHandler makes for it and with tune applied to its
// http.Server.
//
// sndBuf, if not 0, is the servers' socket send buffer: a server's
// flushes block once it and the client's receive buffer are full.
func attackTargets(t *testing.T, newHandler func(fork bool) http.Handler, tune func(*http.Server), sndBuf int) []*attackTarget {
	t.Helper()
	cert, clientCfg := attackCert(t)
	base := func(h http.Handler) *http.Server {
		hs := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 10 * time.Second}
		if tune != nil {
			tune(hs)
		}
		return hs
	}

	// package h2's
	ours := &attackTarget{name: "h2", cfg: clientCfg, conns: newConnCount(), fork: new(Server)}
	ours.shutdown = ours.fork.Shutdown
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return sndBufListener{ln, sndBuf}
	}
	ln := listen()
	ours.addr = ln.Addr().String()
	h := newHandler(true)
	bs := base(h)
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ours.conns.add(1, 0)
			go func() {
				defer ours.conns.add(0, 1)
				tc := tls.Server(c, tlsCfg)
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if tc.Handshake() != nil {
					tc.Close()
					return
				}
				_ = tc.SetDeadline(time.Time{})
				ours.fork.ServeConn(tc, &ServeConnOpts{Context: context.Background(), BaseConfig: bs, Handler: h})
			}()
		}
	}()
	t.Cleanup(func() {
		// Every connection's goroutines end before the test does: they
		// read writeStall, which the test puts back.
		ln.Close()
		<-accepted
		ours.fork.Close()
		ours.conns.mu.Lock()
		n := ours.conns.opened
		ours.conns.mu.Unlock()
		if !ours.conns.waitEnded(n, 10*time.Second) {
			t.Errorf("h2: connections still served 10 s after Close")
		}
	})

	// net/http's
	ref := &attackTarget{name: "net/http", cfg: clientCfg, conns: newConnCount()}
	srv := httptest.NewUnstartedServer(nil)
	srv.Listener.Close()
	srv.Listener = listen()
	srv.Config = base(newHandler(false))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			ref.conns.add(1, 0)
		case http.StateClosed, http.StateHijacked:
			ref.conns.add(0, 1)
		}
	}
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	ref.addr = srv.Listener.Addr().String()
	ref.shutdown = srv.Config.Shutdown
	t.Cleanup(func() {
		srv.Config.Close() // net/http's connections stalled by a test end too
		srv.Close()
	})
	return []*attackTarget{ours, ref}
}

// sndBufListener sets the send buffer of the connections it accepts.
type sndBufListener struct {
	net.Listener
	sndBuf int
}

func (l sndBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && l.sndBuf > 0 {
		_ = tc.SetWriteBuffer(l.sndBuf)
	}
	return c, err
}

// attacker is a client speaking raw frames.
type attacker struct {
	t    testing.TB
	tg   *attackTarget
	conn *tls.Conn
	fr   *Framer
	wmu  sync.Mutex // guards fr's writes
	hbuf bytes.Buffer
	henc *hpack.Encoder
	sent atomic.Int64 // frames written

	readDone chan struct{} // closed when the reader ends
	mu       sync.Mutex    // guards what the reader saw
	goAway   *goAwayInfo
	goAwayAt time.Time
	endedAt  time.Time
	resets   map[ErrCode]int
	statuses map[uint32]string
	frames   int
}

// goAwayInfo is what a GOAWAY said.
type goAwayInfo struct {
	LastStreamID uint32
	ErrCode      ErrCode
	Debug        string
}

func (g *goAwayInfo) String() string {
	if g == nil {
		return "none"
	}
	return fmt.Sprintf("%v last=%d %q", g.ErrCode, g.LastStreamID, g.Debug)
}

// dial connects to tg; rcvBuf, if not 0, is the client's socket receive
// buffer. It sends the preface and settings, reads the server's SETTINGS
// and acknowledges them (so that the server's limits are in force).
func dial(t testing.TB, tg *attackTarget, rcvBuf int, settings ...Setting) *attacker {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvBuf > 0 {
		d.Control = rcvBufControl(rcvBuf)
	}
	raw, err := d.Dial("tcp", tg.addr)
	if err != nil {
		t.Fatal(err)
	}
	if rcvBuf > 0 {
		_ = raw.(*net.TCPConn).SetReadBuffer(rcvBuf)
	}
	c := tls.Client(raw, tg.cfg)
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	a := &attacker{t: t, tg: tg, conn: c, readDone: make(chan struct{}), resets: map[ErrCode]int{}, statuses: map[uint32]string{}}
	a.henc = hpack.NewEncoder(&a.hbuf)
	a.fr = NewFramer(c, c)
	a.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	a.fr.MaxHeaderListSize = 1 << 20
	if _, err := io.WriteString(c, ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := a.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := a.fr.ReadFrame()
		if err != nil {
			t.Fatalf("%s: reading the server's SETTINGS: %v", tg.name, err)
		}
		if sf, ok := f.(*SettingsFrame); ok && !sf.IsAck() {
			break
		}
	}
	if err := a.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{})
	return a
}

// read reads what the server sends, until the connection ends or for
// limit at most, recording GOAWAY, RST_STREAMs and :status.
func (a *attacker) read(limit time.Duration) {
	_ = a.conn.SetReadDeadline(time.Now().Add(limit))
	go func() {
		defer close(a.readDone)
		for {
			f, err := a.fr.ReadFrame()
			a.mu.Lock()
			if err != nil {
				a.endedAt = time.Now()
				a.mu.Unlock()
				return
			}
			a.frames++
			switch f := f.(type) {
			case *GoAwayFrame:
				if a.goAway == nil {
					a.goAway = &goAwayInfo{LastStreamID: f.LastStreamID, ErrCode: f.ErrCode, Debug: string(f.DebugData())}
					a.goAwayAt = time.Now()
				}
			case *RSTStreamFrame:
				a.resets[f.ErrCode]++
			case *MetaHeadersFrame:
				a.statuses[f.StreamID] = f.PseudoValue("status")
			}
			a.mu.Unlock()
		}
	}()
}

// hungUp reports whether the server has sent GOAWAY or the reader ended.
func (a *attacker) hungUp() bool {
	select {
	case <-a.readDone:
		return true
	default:
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.goAway != nil
}

func (a *attacker) block(fields ...string) []byte {
	a.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		// Never indexed: each block stands alone.
		_ = a.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1], Sensitive: true})
	}
	return bytes.Clone(a.hbuf.Bytes())
}

func (a *attacker) write(f func(fr *Framer) error) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	err := f(a.fr)
	if err == nil {
		a.sent.Add(1)
	}
	return err
}

// get writes a GET of path on stream id.
func (a *attacker) get(id uint32, path string) error {
	b := a.block(":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", path)
	return a.write(func(fr *Framer) error {
		return fr.WriteHeaders(HeadersFrameParam{StreamID: id, BlockFragment: b, EndStream: true, EndHeaders: true})
	})
}

// watch samples the process's goroutines and heap until stop is called,
// which returns the highest of each.
func watch() (stop func() (goroutines int, heap uint64)) {
	var peakG atomic.Int64
	var peakH atomic.Uint64
	quit, done := make(chan struct{}), make(chan struct{})
	sample := func() {
		if g := int64(runtime.NumGoroutine()); g > peakG.Load() {
			peakG.Store(g)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > peakH.Load() {
			peakH.Store(ms.HeapInuse)
		}
	}
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for range 3000 { // a minute at most
			sample()
			select {
			case <-quit:
				return
			case <-tick.C:
			}
		}
	}()
	return func() (int, uint64) {
		close(quit)
		<-done
		sample()
		return int(peakG.Load()), peakH.Load()
	}
}

// settle polls, for d at most, until the process runs at most limit
// goroutines, and returns how many it runs.
func settle(limit int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := runtime.NumGoroutine()
		if n <= limit || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// stillServes checks that tg answers a plain GET on a new connection
// within d.
func stillServes(t *testing.T, tg *attackTarget, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	cfg := tg.cfg.Clone()
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: d}
	res, err := c.Get("https://" + tg.addr + "/")
	if err != nil {
		t.Errorf("%s: a new connection is not served: %v", tg.name, err)
		return time.Since(start)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Errorf("%s: answered over %s", tg.name, res.Proto)
	}
	return time.Since(start)
}

// closeNotify is how long crypto/tls's Close may block sending its
// close_notify alert (its own write deadline) once a write has stalled:
// the serve loop's Close after the failed write waits that long too, as
// x/net's does after a WriteByteTimeout.
const closeNotify = 5 * time.Second

// shortStall sets writeStall to d for the test; the targets' cleanup,
// registered after, ends their connections before it is put back.
func shortStall(t *testing.T, d time.Duration) {
	old := writeStall
	writeStall = d
	t.Cleanup(func() { writeStall = old })
}

// TestAttackRapidReset: 10,000 HEADERS, each followed at once by its
// RST_STREAM (CVE-2023-44487), to handlers that take their time and do
// not watch the request's context. The handlers running at once must stay
// within SETTINGS_MAX_CONCURRENT_STREAMS, and the server must hang up
// (ENHANCE_YOUR_CALM) once too many wait to run, at the stream where
// net/http's does, or earlier.
func TestAttackRapidReset(t *testing.T) {
	release := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	var handlers [2]gauge
	tgs := attackTargets(t, func(fork bool) http.Handler {
		i := targetIndex(fork)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer handlers[i].enter()()
			select { // a slow backend: the reset is not looked at
			case <-release[i]:
			case <-time.After(20 * time.Second):
			}
			io.WriteString(w, "ok")
		})
	}, nil, 0)
	var once [2]sync.Once
	let := func(i int) { once[i].Do(func() { close(release[i]) }) }
	t.Cleanup(func() { let(0); let(1) }) // before the servers close
	base0 := runtime.NumGoroutine()
	base := base0

	type result struct {
		sent    int64
		last    uint32
		code    ErrCode
		elapsed time.Duration
		peak    int
	}
	var got [2]result
	for i, tg := range tgs {
		stop := watch()
		a := dial(t, tg, 0)
		a.read(20 * time.Second)
		_ = a.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		start := time.Now()
		for n := range 10_000 {
			id := uint32(2*n + 1)
			if a.hungUp() || a.get(id, "/slow") != nil ||
				a.write(func(fr *Framer) error { return fr.WriteRSTStream(id, ErrCodeCancel) }) != nil {
				break
			}
		}
		select {
		case <-a.readDone:
		case <-time.After(10 * time.Second):
		}
		g, _ := stop()
		a.mu.Lock()
		r := result{sent: a.sent.Load(), elapsed: a.goAwayAt.Sub(start), peak: g - base}
		if a.goAway != nil {
			r.last, r.code = a.goAway.LastStreamID, a.goAway.ErrCode
		}
		a.mu.Unlock()
		got[i] = r
		t.Logf("%s: %d frames written, GOAWAY %v last stream %d after %v; handlers at once at most %d; goroutines +%d at most",
			tg.name, r.sent, r.code, r.last, r.elapsed.Round(time.Millisecond), handlers[i].peak.Load(), r.peak)
		if handlers[i].peak.Load() > 250 {
			t.Errorf("%s: %d handlers at once, beyond the 250 streams advertised", tg.name, handlers[i].peak.Load())
		}
		if r.peak > 2*250+50 {
			t.Errorf("%s: %d more goroutines during the attack", tg.name, r.peak)
		}
		a.conn.Close()
		let(i) // the handlers end
		if n := settle(base0+4, 10*time.Second); n > base0+4 {
			t.Errorf("%s: %d goroutines 10 s after the handlers were released, %d before", tg.name, n, base0)
		}
		base = runtime.NumGoroutine()
	}
	ours, ref := got[0], got[1]
	if ref.code != ErrCodeEnhanceYourCalm {
		t.Logf("net/http did not hang up with ENHANCE_YOUR_CALM (%v)", ref.code)
	}
	if ours.code != ErrCodeEnhanceYourCalm {
		t.Errorf("h2: GOAWAY %v; want ENHANCE_YOUR_CALM, as net/http's %v", ours.code, ref.code)
	}
	if ref.last != 0 && ours.last > ref.last {
		t.Errorf("h2 hung up after stream %d, net/http after %d", ours.last, ref.last)
	}
	for _, tg := range tgs {
		stillServes(t, tg, 5*time.Second)
	}
}

// TestAttackContinuationFlood: a HEADERS without END_HEADERS followed by
// CONTINUATION frames, each a field of 8 KiB, past the header list limit
// (about 1 MiB): the server must hang up (x/net's CVE-2023-45288 fix), no
// later than net/http's, without keeping what it read.
func TestAttackContinuationFlood(t *testing.T) {
	tgs := attackTargets(t, func(bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	}, nil, 0)
	var sent [2]int64
	var took [2]time.Duration
	for i, tg := range tgs {
		heap0 := heapInuse()
		stop := watch()
		a := dial(t, tg, 0)
		a.read(20 * time.Second)
		_ = a.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		first := a.block(":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/")
		pad := strings.Repeat("p", 8<<10)
		start := time.Now()
		err := a.write(func(fr *Framer) error {
			return fr.WriteHeaders(HeadersFrameParam{StreamID: 1, BlockFragment: first})
		})
		for n := 0; err == nil && n < 10_000 && !a.hungUp(); n++ {
			b := a.block(fmt.Sprintf("x-pad-%d", n), pad)
			err = a.write(func(fr *Framer) error { return fr.WriteContinuation(1, false, b) })
			// Paced, so that the count when the GOAWAY comes is the
			// server's rather than the socket buffers'.
			time.Sleep(time.Millisecond)
		}
		sent[i] = a.sent.Load()
		a.mu.Lock()
		took[i] = a.goAwayAt.Sub(start)
		a.mu.Unlock()
		select {
		case <-a.readDone:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: the connection still open 10 s after %d frames", tg.name, a.sent.Load())
		}
		g, h := stop()
		a.mu.Lock()
		t.Logf("%s: GOAWAY after %d frames (%d MiB), %v; GOAWAY %v; heap %d MiB at most (from %d), goroutines %d at most",
			tg.name, sent[i], sent[i]*8/1024, took[i].Round(time.Millisecond), a.goAway, h>>20, heap0>>20, g)
		if a.goAway == nil || a.goAway.ErrCode == ErrCodeNo {
			t.Errorf("%s: no GOAWAY for a connection error (%v)", tg.name, a.goAway)
		}
		a.mu.Unlock()
		if h > heap0+64<<20 {
			t.Errorf("%s: heap grew by %d MiB", tg.name, (h-heap0)>>20)
		}
	}
	// The client notices the GOAWAY a frame or two late: a margin of 8.
	if sent[0] > sent[1]+8 {
		t.Errorf("h2 took %d frames to hang up, net/http %d", sent[0], sent[1])
	}
	for _, tg := range tgs {
		stillServes(t, tg, 5*time.Second)
	}
}

// controlFlood sends n frames of one kind from a client that reads
// nothing (its receive buffer small), and measures how the server ends
// it: when the server's connection ended, and how many frames the client
// had written by then.
type floodResult struct {
	closed   bool
	sentThen int64
	took     time.Duration
	peakG    int
	heap     uint64
	served   time.Duration // a new connection's GET, during the flood
}

func controlFlood(t *testing.T, tg *attackTarget, n int, frame func(fr *Framer, i int) error) floodResult {
	t.Helper()
	base := runtime.NumGoroutine()
	heap0 := heapInuse()
	stop := watch()
	ended := tg.conns.ended()
	a := dial(t, tg, 4<<10)
	_ = a.conn.SetWriteDeadline(time.Now().Add(8 * time.Second))
	start := time.Now()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := range n {
			if a.write(func(fr *Framer) error { return frame(fr, i) }) != nil {
				return
			}
		}
	}()
	var r floodResult
	// Wait until the client's writes stall (200 ms without progress) or
	// end; meanwhile, and then, other connections are served.
	last, since := a.sent.Load(), time.Now()
	for range 250 {
		time.Sleep(20 * time.Millisecond)
		if n := a.sent.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > 200*time.Millisecond {
			break
		}
	}
	r.served = stillServes(t, tg, 5*time.Second)
	// A margin of 6 s: on a loaded machine (or under -race) the server
	// may reach its stalled flush well after the client's writes stall.
	wait := writeStall + closeNotify + 6*time.Second
	if !tg.isFork() {
		wait = 2 * time.Second
	}
	r.closed = tg.conns.waitEnded(ended+2, wait) // the attacker's, and stillServes'
	r.took = time.Since(start)
	r.sentThen = a.sent.Load()
	a.conn.Close()
	<-wrote
	g, h := stop()
	r.peakG, r.heap = g-base, h-min(h, heap0)
	if n := settle(base+2, 5*time.Second); n > base+2 {
		t.Errorf("%s: %d goroutines after the flood, %d before", tg.name, n, base)
	}
	return r
}

// TestAttackPingFlood: 100,000 PINGs from a client that reads nothing.
// net/http's server queues their ACKs until 10,000 wait
// (maxQueuedControlFrames), then hangs up; package h2's flushes in its
// serve loop, which, the client's window full, stops reading (the flood
// stays in the socket buffers) until the write deadline hangs up (then
// TLS's close_notify waits up to 5 s more). Either way nothing grows
// without bound and other connections are served. The write deadline is
// 1 s here, 30 s in production: there package h2 holds such a connection
// up to 35 s, where net/http's hangs up at once; it reads and queues
// nothing meanwhile.
func TestAttackPingFlood(t *testing.T) {
	shortStall(t, time.Second)
	tgs := attackTargets(t, func(bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	}, nil, 16<<10)
	for _, tg := range tgs {
		r := controlFlood(t, tg, 100_000, func(fr *Framer, i int) error {
			var data [8]byte
			data[0], data[1], data[2] = byte(i>>16), byte(i>>8), byte(i)
			return fr.WritePing(false, data)
		})
		t.Logf("%s: closed=%t after %v, %d PINGs written by then; goroutines +%d, heap +%d KiB at most; a new connection served in %v",
			tg.name, r.closed, r.took.Round(time.Millisecond), r.sentThen, r.peakG, r.heap>>10, r.served.Round(time.Millisecond))
		checkFlood(t, tg, r)
	}
}

// TestAttackSettingsFlood: 100,000 SETTINGS from a client that reads
// nothing. Their ACKs are not queued (one is owed at most) in either
// server: net/http's keeps the connection until the client goes; package
// h2's hangs up at the write deadline.
func TestAttackSettingsFlood(t *testing.T) {
	shortStall(t, time.Second)
	tgs := attackTargets(t, func(bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	}, nil, 16<<10)
	for _, tg := range tgs {
		r := controlFlood(t, tg, 100_000, func(fr *Framer, i int) error {
			return fr.WriteSettings(Setting{ID: SettingMaxHeaderListSize, Val: uint32(1<<20 + i%2)})
		})
		t.Logf("%s: closed=%t after %v, %d SETTINGS written by then; goroutines +%d, heap +%d KiB at most; a new connection served in %v",
			tg.name, r.closed, r.took.Round(time.Millisecond), r.sentThen, r.peakG, r.heap>>10, r.served.Round(time.Millisecond))
		checkFlood(t, tg, r)
	}
}

func checkFlood(t *testing.T, tg *attackTarget, r floodResult) {
	t.Helper()
	if tg.isFork() && (!r.closed || r.took > writeStall+closeNotify+8*time.Second) {
		t.Errorf("%s: closed=%t after %v; want closed by the write deadline (%v, and %v for TLS's close_notify)", tg.name, r.closed, r.took, writeStall, closeNotify)
	}
	if r.peakG > 20 {
		t.Errorf("%s: %d more goroutines during the flood", tg.name, r.peakG)
	}
	if r.heap > 32<<20 {
		t.Errorf("%s: heap grew by %d MiB", tg.name, r.heap>>20)
	}
}

// TestAttackClientNeverReads: a client opens streams whose answers are
// large and reads none of them.
//
// With a window of 0, nothing can be written: the handlers wait in
// Write, one per stream (no more streams than advertised), and hold no
// more than their buffers.
//
// With a large window and the client's socket buffer full, net/http's
// server waits forever (it has no write deadline without WriteTimeout);
// package h2's hangs up at its write deadline, and its serve loop, stuck
// in a flush until then, holds up neither other connections nor
// Shutdown, even when handlers finish meanwhile and fill its message
// channel (each setting a write deadline, as a gateway's do): Shutdown
// used to wait for that serve loop, past its context, holding the lock
// every connection's start and end takes.
func TestAttackClientNeverReads(t *testing.T) {
	shortStall(t, 2*time.Second)
	release := map[bool]chan struct{}{true: make(chan struct{}), false: make(chan struct{})}
	var wroteMu sync.Mutex
	lastWrite := map[bool]time.Time{}
	var slowDone [2]atomic.Int64 // /slow handlers done, h2's and net/http's
	tgs := attackTargets(t, func(fork bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/big": // 64 MiB at most, in 16 KiB writes
				chunk := make([]byte, 16<<10)
				for range 4096 {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			case "/stream": // 64 MiB at most, flushed a KiB at a time
				chunk := make([]byte, 1<<10)
				for range 64 << 10 {
					if _, err := w.Write(chunk); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					wroteMu.Lock()
					lastWrite[fork] = time.Now()
					wroteMu.Unlock()
				}
			case "/slow": // a small answer from a slow backend
				select {
				case <-release[fork]:
				case <-r.Context().Done():
				case <-time.After(20 * time.Second):
				}
				// As a gateway does: a deadline for writing the answer.
				_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(w, "ok")
				if fork {
					slowDone[0].Add(1)
				} else {
					slowDone[1].Add(1)
				}
			default:
				io.WriteString(w, "ok")
			}
		})
	}, nil, 16<<10)

	t.Run("window 0", func(t *testing.T) {
		for _, tg := range tgs {
			base := runtime.NumGoroutine()
			heap0 := heapInuse()
			stop := watch()
			a := dial(t, tg, 0, Setting{ID: SettingInitialWindowSize, Val: 0})
			a.read(10 * time.Second)
			for n := range 300 {
				if a.get(uint32(2*n+1), "/big") != nil {
					break
				}
			}
			// The handlers have started (and wait) once a new connection's
			// request is through; they hold what they hold.
			served := stillServes(t, tg, 5*time.Second)
			g := settle(0, 300*time.Millisecond) // a moment for the handlers to run into the window
			peakG, h := stop()
			a.mu.Lock()
			resets := fmt.Sprint(a.resets)
			a.mu.Unlock()
			t.Logf("%s: 300 streams asked: RST_STREAMs %s; goroutines +%d (+%d at most), heap +%d MiB at most; a new connection served in %v",
				tg.name, resets, g-base, peakG-base, (h-min(h, heap0))>>20, served.Round(time.Millisecond))
			if peakG-base > 250+30 {
				t.Errorf("%s: %d more goroutines for 300 streams with 250 advertised", tg.name, peakG-base)
			}
			if h > heap0+64<<20 {
				t.Errorf("%s: heap grew by %d MiB", tg.name, (h-heap0)>>20)
			}
			ended := tg.conns.ended()
			a.conn.Close()
			if !tg.conns.waitEnded(ended+1, 5*time.Second) {
				t.Errorf("%s: the connection not ended 5 s after the client closed it", tg.name)
			}
			if n := settle(base+2, 5*time.Second); n > base+2 {
				t.Errorf("%s: %d goroutines after, %d before", tg.name, n, base)
			}
		}
	})

	t.Run("socket full", func(t *testing.T) {
		for _, tg := range tgs {
			base := runtime.NumGoroutine()
			stop := watch()
			ended := tg.conns.ended()
			a := dial(t, tg, 4<<10, Setting{ID: SettingInitialWindowSize, Val: 1<<31 - 1})
			_ = a.write(func(fr *Framer) error { return fr.WriteWindowUpdate(0, 1<<31-1-65535) })
			// Slow backends first, then a stream flushed a KiB at a
			// time: the serve loop flushes, and the socket fills.
			for n := range 16 {
				_ = a.get(uint32(2*n+1), "/slow")
			}
			_ = a.get(33, "/stream")
			start := time.Now()
			// Wait until the stream's writes stall (200 ms without one).
			for range 500 {
				time.Sleep(20 * time.Millisecond)
				wroteMu.Lock()
				last := lastWrite[tg.isFork()]
				wroteMu.Unlock()
				if !last.IsZero() && time.Since(last) > 200*time.Millisecond {
					break
				}
			}
			stalled := time.Since(start)
			// The slow backends answer now, while the connection is stuck.
			close(release[tg.isFork()])
			i := 1
			if tg.isFork() {
				i = 0
			}
			for range 100 { // 1 s at most: some wait for the serve loop
				if slowDone[i].Load() == 16 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // for them to hand over their answers
			// Other connections are served meanwhile.
			served := stillServes(t, tg, 5*time.Second)
			var shutdownTook time.Duration
			if tg.isFork() {
				// Shutdown honours its context, and Close then ends the
				// stuck connection, whatever the write deadline.
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				s := time.Now()
				err := tg.shutdown(ctx)
				shutdownTook = time.Since(s)
				cancel()
				if !errors.Is(err, context.DeadlineExceeded) || shutdownTook > time.Second {
					t.Errorf("%s: Shutdown with 300 ms to go returned %v after %v (write deadline %v)", tg.name, err, shutdownTook, writeStall)
				}
			}
			wait := writeStall + closeNotify + 2*time.Second
			if !tg.isFork() {
				wait = time.Second // it has no write deadline
			}
			closed := tg.conns.waitEnded(ended+2, wait)
			took := time.Since(start)
			a.conn.Close()
			g, _ := stop()
			t.Logf("%s: stream stalled after %v; closed=%t %v after the first request; a new connection served in %v; Shutdown(300 ms) took %v; goroutines +%d at most",
				tg.name, stalled.Round(time.Millisecond), closed, took.Round(time.Millisecond), served.Round(time.Millisecond), shutdownTook.Round(time.Millisecond), g-base)
			if tg.isFork() && !closed {
				t.Errorf("%s: the stalled connection still open %v on, write deadline %v", tg.name, took, writeStall)
			}
			if g-base > 60 {
				t.Errorf("%s: %d more goroutines", tg.name, g-base)
			}
			if n := settle(base+2, 5*time.Second); n > base+2 {
				t.Errorf("%s: %d goroutines after, %d before", tg.name, n, base)
			}
		}
	})
}

// TestAttackTooManyStreams: 300 streams at once, 250 advertised (and the
// SETTINGS acknowledged): those beyond are refused, and no more than 250
// handlers run.
func TestAttackTooManyStreams(t *testing.T) {
	release := make(chan struct{})
	var handlers [2]gauge
	tgs := attackTargets(t, func(fork bool) http.Handler {
		i := targetIndex(fork)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/block" {
				return
			}
			defer handlers[i].enter()()
			select {
			case <-release:
			case <-r.Context().Done():
			case <-time.After(20 * time.Second):
			}
		})
	}, nil, 0)
	t.Cleanup(func() { close(release) })
	var refused [2]int
	for i, tg := range tgs {
		base := runtime.NumGoroutine()
		a := dial(t, tg, 0)
		a.read(10 * time.Second)
		for n := range 300 {
			if a.get(uint32(2*n+1), "/block") != nil {
				break
			}
		}
		// The 50 refusals come back once the 300 HEADERS are read.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			a.mu.Lock()
			n := a.resets[ErrCodeProtocol] + a.resets[ErrCodeRefusedStream]
			a.mu.Unlock()
			if n >= 50 && handlers[i].running.Load() >= 250 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		g := runtime.NumGoroutine()
		a.mu.Lock()
		refused[i] = a.resets[ErrCodeProtocol] + a.resets[ErrCodeRefusedStream]
		t.Logf("%s: RST_STREAMs %v, GOAWAY %v; handlers at once %d at most; goroutines +%d", tg.name, a.resets, a.goAway, handlers[i].peak.Load(), g-base)
		a.mu.Unlock()
		if handlers[i].peak.Load() > 250 {
			t.Errorf("%s: %d handlers at once, 250 streams advertised", tg.name, handlers[i].peak.Load())
		}
		ended := tg.conns.ended()
		a.conn.Close()
		tg.conns.waitEnded(ended+1, 5*time.Second)
		if n := settle(base+2, 5*time.Second); n > base+2 {
			t.Errorf("%s: %d goroutines after, %d before", tg.name, n, base)
		}
	}
	if refused[0] < refused[1] || refused[0] < 50 {
		t.Errorf("h2 refused %d streams, net/http %d; 50 are beyond the limit", refused[0], refused[1])
	}
	for _, tg := range tgs {
		stillServes(t, tg, 5*time.Second)
	}
}

// TestAttackHeaderListTooLong: with MaxHeaderBytes of 8 KiB, a header
// block of a 12 KiB field, and one of 16,000 references to a 4 KiB entry
// of the dynamic table (an HPACK bomb: 64 MiB decoded from 16 KB), are
// answered 431 (or refused) as net/http's server does, without decoding
// them into memory; the connection serves on.
func TestAttackHeaderListTooLong(t *testing.T) {
	var seen [2]atomic.Int64 // the largest header list a handler saw
	tgs := attackTargets(t, func(fork bool) http.Handler {
		i := 1
		if fork {
			i = 0
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := 0
			for k, vv := range r.Header {
				for _, v := range vv {
					n += len(k) + len(v)
				}
			}
			if int64(n) > seen[i].Load() {
				seen[i].Store(int64(n))
			}
			io.WriteString(w, "ok")
		})
	}, func(hs *http.Server) { hs.MaxHeaderBytes = 8 << 10 }, 0)
	var answers [2]string
	for i, tg := range tgs {
		heap0 := heapInuse()
		stop := watch()
		a := dial(t, tg, 0)
		a.read(10 * time.Second)
		req := []string{":method", "GET", ":scheme", "https", ":authority", "a.test", ":path", "/"}
		// Stream 1: three fields of 4 KiB.
		big := strings.Repeat("b", 4<<10)
		b := a.block(append(req, "x-big-1", big, "x-big-2", big, "x-big-3", big)...)
		_ = a.write(func(fr *Framer) error {
			return fr.WriteHeaders(HeadersFrameParam{StreamID: 1, BlockFragment: b, EndStream: true, EndHeaders: true})
		})
		// Stream 3: puts a 4 KiB field in the dynamic table (within the
		// limit). Stream 5: refers to it 16,000 times.
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for j := 0; j+1 < len(req); j += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: req[j], Value: req[j+1]})
		}
		bomb := hpack.HeaderField{Name: "x-bomb", Value: strings.Repeat("x", 4000)}
		_ = enc.WriteField(bomb)
		b3 := bytes.Clone(hb.Bytes())
		_ = a.write(func(fr *Framer) error {
			return fr.WriteHeaders(HeadersFrameParam{StreamID: 3, BlockFragment: b3, EndStream: true, EndHeaders: true})
		})
		hb.Reset()
		for j := 0; j+1 < len(req); j += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: req[j], Value: req[j+1]})
		}
		for range 16_000 {
			_ = enc.WriteField(bomb) // indexed: one byte each
		}
		b5 := bytes.Clone(hb.Bytes()) // within a frame: indexed, a field is one byte
		_ = a.write(func(fr *Framer) error {
			return fr.WriteHeaders(HeadersFrameParam{StreamID: 5, BlockFragment: b5, EndStream: true, EndHeaders: true})
		})
		// Stream 7: an ordinary request on the same connection.
		_ = a.get(7, "/")
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			a.mu.Lock()
			done := a.statuses[7] != "" || a.goAway != nil
			a.mu.Unlock()
			if done || a.hungUp() {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		_, h := stop()
		a.mu.Lock()
		answers[i] = fmt.Sprintf("1:%q 3:%q 5:%q 7:%q resets=%v goaway=%v", a.statuses[1], a.statuses[3], a.statuses[5], a.statuses[7], a.resets, a.goAway)
		a.mu.Unlock()
		t.Logf("%s: %s; largest header list a handler saw %d bytes; heap +%d KiB at most", tg.name, answers[i], seen[i].Load(), (h-min(h, heap0))>>10)
		if seen[i].Load() > 8<<10+4096 {
			t.Errorf("%s: a handler saw a header list of %d bytes, MaxHeaderBytes 8 KiB", tg.name, seen[i].Load())
		}
		if h > heap0+32<<20 {
			t.Errorf("%s: heap grew by %d MiB", tg.name, (h-heap0)>>20)
		}
		a.conn.Close()

		// Another connection: one field of 12 KiB, longer than any the
		// decoder takes (a connection error).
		a = dial(t, tg, 0)
		a.read(10 * time.Second)
		b = a.block(append(req, "x-big", strings.Repeat("b", 12<<10))...)
		_ = a.write(func(fr *Framer) error {
			return fr.WriteHeaders(HeadersFrameParam{StreamID: 1, BlockFragment: b, EndStream: true, EndHeaders: true})
		})
		select {
		case <-a.readDone:
		case <-time.After(5 * time.Second):
		}
		a.mu.Lock()
		answers[i] += fmt.Sprintf("; one 12 KiB field: 1:%q goaway=%v", a.statuses[1], a.goAway)
		a.mu.Unlock()
		a.conn.Close()
		t.Logf("%s: %s", tg.name, answers[i])
	}
	if answers[0] != answers[1] {
		t.Errorf("h2 and net/http answer differently:\n h2:       %s\n net/http: %s", answers[0], answers[1])
	}
}

// gauge counts the handlers running at once, and the most there were.
type gauge struct{ running, peak atomic.Int64 }

// enter counts a handler in; call what it returns as the handler ends.
func (g *gauge) enter() (leave func()) {
	n := g.running.Add(1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	return func() { g.running.Add(-1) }
}

// targetIndex is the index of a target in attackTargets' pair: 0 for the
// fork, 1 for net/http's server.
func targetIndex(fork bool) int {
	if fork {
		return 0
	}
	return 1
}
