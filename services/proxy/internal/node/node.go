// Package node wires a proxy node together: the NATS connection and the
// configuration watcher, the proxy listener, the Listeners' TLS servers
// (internal/inbound) and the admin listener. main and
// the tests share it.
package node

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "keyway.dev/gen/keyway/node/v1"

	"keyway.dev/internal/access"
	"keyway.dev/internal/certevents"
	"keyway.dev/internal/certs"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/material"
	"keyway.dev/internal/model"
	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/nodekv"
	"keyway.dev/internal/retry"
	"keyway.dev/internal/revocation"
	"keyway.dev/internal/telemetry"
	"keyway.dev/proxy/internal/forward"
	"keyway.dev/proxy/internal/inbound"
	"keyway.dev/proxy/internal/inbound/h1"
	"keyway.dev/proxy/internal/metrics"
	"keyway.dev/proxy/internal/publish"
	"keyway.dev/proxy/internal/registry"
	"keyway.dev/proxy/internal/secrets"
	"keyway.dev/proxy/internal/upstream"
	"keyway.dev/proxy/internal/watch"
)

// Config is a node's configuration. Zero values take the documented defaults.
type Config struct {
	// Listen is the proxy's address. Default 127.0.0.1:8080; port 0 picks one.
	Listen string
	// AdminListen serves /healthz, /status and /metrics. Default
	// 127.0.0.1:9080.
	AdminListen string
	// Admin is the admin port's TLS and access control (package access):
	// /healthz is open, /status and /metrics need viewer, /debug/pprof/
	// operator. Without TLS files and a policy the node refuses to
	// start, unless InsecureNoAuth is set and AdminListen is loopback.
	Admin access.Options
	// PProf serves Go's profiler at /debug/pprof/ on the admin port.
	// Off by default.
	PProf bool
	// NATSURL is the NATS server. Default nats://127.0.0.1:4222.
	NATSURL string
	// NATS is the NATS connection's TLS and user (package natsconn); its
	// URL, when empty, is NATSURL.
	NATS natsconn.Config
	// Bucket is the configuration bucket. Default configkv.Bucket.
	Bucket string
	// NodeID names the node in logs, request ids, the NATS connection and
	// the node bucket (letters, digits, '-', '_', '='). Required.
	NodeID string
	// NodeBucket is the node registry bucket. Default nodekv.Bucket.
	NodeBucket string
	// Heartbeat is how often the node rewrites its status in the node
	// bucket when nothing changes. Default nodekv.DefaultHeartbeat.
	Heartbeat time.Duration
	// NodeTTL is the node bucket's MaxAge, used when this node creates
	// the bucket. Default three heartbeats.
	NodeTTL time.Duration
	// NodeReplicas is the node bucket's replicas in a NATS cluster, used
	// when this node creates the bucket (before any policy replica does).
	// Default 1.
	NodeReplicas int
	// HandshakeTimeout bounds each upstream TLS handshake. Default 10s.
	HandshakeTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers on the proxy port and on
	// every Listener (HTTP/1.1 and HTTP/2): larger ones are answered 431.
	// Default inbound.DefaultMaxHeaderBytes (64 KiB).
	MaxHeaderBytes int
	// NetHTTP1 serves HTTP/1.1 on the plain proxy port and the Listeners
	// with net/http's server instead of h1's loop
	// ([inbound.Options].NetHTTP1).
	NetHTTP1 bool
	// NetHTTP2 serves h2 on the Listeners with net/http's server instead
	// of package inbound/h2 ([inbound.Options].NetHTTP2).
	NetHTTP2 bool
	// RevocationMaxRefresh is the longest time between two fetches of a
	// CRL or an OCSP response that Listener hosts check client
	// certificates, and Upstreams their upstream's certificate, against, however far its nextUpdate: how long a
	// revocation may go unseen. Default revocation.DefaultMaxRefresh
	// (10m).
	RevocationMaxRefresh time.Duration
	// RevocationMinRefresh is the shortest time between two fetches of
	// one CRL, and the first retry delay after a failed fetch. Default
	// revocation.DefaultMinRefresh (10s).
	RevocationMinRefresh time.Duration
	// ExpiryThresholds are the times left under which a certificate the
	// node presents or trusts is announced on certevents.Subject, once per
	// certificate and threshold. Default certevents.DefaultThresholds (30,
	// 7 and 1 days).
	ExpiryThresholds []time.Duration
	// NoPresentedRevocation leaves the certificates the node presents
	// unchecked: no OCSP stapling of Listener certificates, and no
	// revocation state for them in the node's status. By default the node
	// fetches the lists and responders those certificates name.
	NoPresentedRevocation bool
	// ShutdownTimeout bounds the graceful stop: requests still in flight
	// then are cut off and the Upstreams' connections closed. Default 15s.
	ShutdownTimeout time.Duration
	// RetryInterval is the first wait between attempts to reach the
	// bucket and to restart a broken watch; each next wait doubles, up to
	// 30 times it, and every wait is jittered ±50% (package retry) so
	// that a fleet does not retry in lockstep. Default 1s.
	RetryInterval time.Duration
	// Decode turns stored resources into models; default model.Decode.
	// Tests set it to decode with model.AllowPortZero, or to make a
	// decode fail.
	Decode watch.Decoder
	// Tracing, when on, traces requests, handshakes and configuration
	// changes (see package telemetry). The zero value is off.
	Tracing telemetry.Tracing
	Logger  *slog.Logger
	// Secrets resolves references to keystores, aliases and truststores;
	// nil: values with references are refused (listed in /status). Build
	// it with [NewSecrets]. The node runs it.
	Secrets *secrets.Source
}

// NewSecrets is the source of key material for a node: MaterialService at
// cfg.URL over mTLS. Give it as Config.Secrets.
func NewSecrets(cfg material.Config, log *slog.Logger) (*secrets.Source, error) {
	c, err := material.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return secrets.New(c, secrets.Options{Logger: log}), nil
}

// Node is a running proxy node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	nc      *nats.Conn
	watcher *watch.Watcher
	inbound *inbound.Manager
	metrics *metrics.Metrics
	proxy   proxyServer
	admin   *http.Server
	proxyLn net.Listener
	adminLn net.Listener
	done    chan struct{}
	err     error
	// natsClosed is closed by the NATS connection's last callback.
	natsClosed chan struct{}
	started    time.Time
	// stream is the bucket's stream, set before the watcher runs; it
	// serves the headers of traced changes.
	stream jetstream.Stream
	// status keeps what NodeStatus can reuse from one call to the next.
	status statusCache
	// own are the node's own certificates by role, read at each use.
	own map[string]func() *x509.Certificate
	// presented checks the certificates the node presents, for its
	// status; nil with Config.NoPresentedRevocation.
	presented *presented
	// expiry publishes the expiry events, at each status write.
	expiry *certevents.Tracker
	// expiryFailing is set while publishing expiry events fails, so that
	// an outage is logged once. Registry goroutine only.
	expiryFailing bool
}

// statusCache is what NodeStatus reuses between calls, so that a change to
// one upstream of thousands costs the status little: each Upstream's
// certificate entries (an Upstream is immutable; a changed one is a new
// one). The entries are shared between statuses and never modified.
type statusCache struct {
	mu     sync.Mutex
	served map[*upstream.Upstream][]*nodev1.ServedCertificate
}

// upstreamCertificates are the certificate entries of upstream name.
func upstreamCertificates(name string, u *upstream.Upstream) []*nodev1.ServedCertificate {
	tc := u.TLS()
	if tc == nil {
		return nil
	}
	var out []*nodev1.ServedCertificate
	if c := tc.Certificate; c != nil && c.Leaf != nil {
		sc := served("upstream", name, "", "client", c.Leaf)
		if ref := tc.CertificateRef; ref != nil {
			sc.Keystore, sc.Alias = ref.Keystore, ref.Alias
		}
		out = append(out, sc)
	}
	for _, ca := range tc.TrustedCAs {
		sc := served("upstream", name, "", "trust", ca)
		sc.Truststore = tc.Truststore
		out = append(out, sc)
	}
	return out
}

// Run starts a node and serves until ctx ends, then stops gracefully.
func Run(ctx context.Context, cfg Config) error {
	n, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	return n.Wait()
}

// Start binds the listeners, connects to NATS and starts serving; the node
// answers 503 until the bucket's contents are loaded ([Node.Ready]). It stops
// when ctx ends; [Node.Wait] returns then.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg.Listen = cmp.Or(cfg.Listen, "127.0.0.1:8080")
	cfg.AdminListen = cmp.Or(cfg.AdminListen, "127.0.0.1:9080")
	cfg.NATSURL = cmp.Or(cfg.NATSURL, nats.DefaultURL)
	cfg.Bucket = cmp.Or(cfg.Bucket, configkv.Bucket)
	cfg.ShutdownTimeout = cmp.Or(cfg.ShutdownTimeout, 15*time.Second)
	cfg.RetryInterval = cmp.Or(cfg.RetryInterval, time.Second)
	cfg.NodeBucket = cmp.Or(cfg.NodeBucket, nodekv.Bucket)
	cfg.Heartbeat = cmp.Or(cfg.Heartbeat, nodekv.DefaultHeartbeat)
	cfg.NodeTTL = cmp.Or(cfg.NodeTTL, 3*cfg.Heartbeat)
	cfg.MaxHeaderBytes = cmp.Or(cfg.MaxHeaderBytes, inbound.DefaultMaxHeaderBytes)
	if err := nodekv.CheckID(cfg.NodeID); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	n := &Node{cfg: cfg, log: log, done: make(chan struct{}), natsClosed: make(chan struct{}), started: time.Now()}

	adminAccess, err := access.NewServer(cfg.Admin, cfg.AdminListen, log)
	if err != nil {
		return nil, fmt.Errorf("node: admin port: %w", err)
	}
	// The watcher reports to the metrics, which read its snapshot.
	own := map[string]func() *x509.Certificate{"admin-server": adminAccess.Certificate}
	if cfg.Secrets != nil {
		own["internal-client"] = cfg.Secrets.ClientCertificate
	}
	n.own = own
	n.metrics = metrics.New(func() *publish.Snapshot { return n.watcher.Snapshot() }, metrics.WithOwnCertificates(own))
	n.expiry = certevents.NewTracker(cfg.NodeID, cfg.ExpiryThresholds, n.publishExpiry)
	if !cfg.NoPresentedRevocation {
		n.presented = newPresented(func() *revocation.Cache { return n.inbound.RevocationCache() })
	}
	// One cache of CRLs and OCSP responses, the inbound manager's, serves
	// the Listener hosts and the Upstreams; both are set before anything
	// asks for it.
	revocationMetrics := n.metrics.NewRevocation(metrics.RevocationSource{
		Lists: func() []revocation.ListStatus { return n.inbound.RevocationLists() },
		OCSP:  func() int { return n.inbound.RevocationOCSP() },
	})
	uopts := forward.UpstreamOptions(upstream.Options{
		HandshakeTimeout: cfg.HandshakeTimeout, Logger: log,
		Handshakes: n.metrics, Recorder: n.metrics.Recorder,
		Tracing: cfg.Tracing,
		Revocation: &upstream.Revocation{
			Cache:  func() *revocation.Cache { return n.inbound.RevocationCache() },
			Checks: revocationMetrics,
		},
	}, log)
	n.watcher = watch.New(watch.Options{
		Upstream: uopts, Decode: cfg.Decode, Logger: log, RetryInterval: cfg.RetryInterval,
		ApplyLatency: n.metrics.ObserveApplyLatency,
		Panicked:     n.metrics.ObserveConfigPanic,
		Tracing:      cfg.Tracing,
		Headers:      n.headers,
		// Set below, before Run calls it.
		Listeners: func(ls []*model.Listener) map[string]error { return n.inbound.Apply(ls) },
	})
	if cfg.Secrets != nil {
		n.watcher.UseSecrets(cfg.Secrets)
		cfg.Secrets.OnChange(n.watcher.SecretsChanged)
		cfg.Secrets.Trace(cfg.Tracing)
		cfg.Secrets.OnPanic(n.metrics.ObserveSecretsPanic)
	}
	handler := forward.New(n.watcher, forward.NewRequestIDs(cfg.NodeID), log, cfg.Tracing)
	// The Listeners serve the same handler as the plain proxy listener.
	n.inbound = inbound.New(inbound.Options{
		Handler: handler, ShutdownTimeout: cfg.ShutdownTimeout, MaxHeaderBytes: cfg.MaxHeaderBytes, NetHTTP1: cfg.NetHTTP1, NetHTTP2: cfg.NetHTTP2,
		Handshakes: n.metrics, ClientChains: n.metrics, Tracing: cfg.Tracing, Logger: log,
		RevocationChecks: revocationMetrics,
		NoStapling:       cfg.NoPresentedRevocation,
		Revocation: revocation.Options{
			MaxRefresh: cfg.RevocationMaxRefresh, MinRefresh: cfg.RevocationMinRefresh,
			Logger: log, OnFetch: revocationMetrics.ObserveFetch,
		},
	})

	if n.proxyLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("node: listening on %s: %w", cfg.Listen, err)
	}
	if n.adminLn, err = adminAccess.Listen(cfg.AdminListen); err != nil {
		n.proxyLn.Close()
		return nil, fmt.Errorf("node: admin port: %w", err)
	}
	adminAccess.ReloadOnSIGHUP(ctx)
	natsCfg := cfg.NATS
	natsCfg.URL, natsCfg.Name = cmp.Or(natsCfg.URL, cfg.NATSURL), "keyway-proxy "+cfg.NodeID
	n.nc, err = natsconn.Connect(ctx, natsCfg, log, natsconn.Handlers{
		Disconnected: func(_ *nats.Conn, err error) {
			if err == nil {
				// Our own Close at stop, or the server closing cleanly.
				log.Debug("disconnected from NATS")
				return
			}
			log.Warn("disconnected from NATS; serving the last good configuration", "error", err)
		},
		Closed: func(*nats.Conn) { close(n.natsClosed) },
		Reconnected: func(c *nats.Conn) {
			log.Info("reconnected to NATS; resuming the configuration watch", "url", c.ConnectedUrl(), "revision", n.watcher.Revision())
			n.watcher.Resume()
		},
	})
	if err != nil {
		n.proxyLn.Close()
		n.adminLn.Close()
		return nil, fmt.Errorf("node: connecting to NATS at %s: %w", natsCfg.URL, err)
	}

	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	std := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          errLog,
	}
	n.proxy = std
	if !cfg.NetHTTP1 {
		n.proxy = h1Server{&h1.Server{
			Handler:           handler,
			ReadHeaderTimeout: std.ReadHeaderTimeout,
			IdleTimeout:       std.IdleTimeout,
			MaxHeaderBytes:    cfg.MaxHeaderBytes,
			// A handler may act differently under a server (the
			// forwarding path aborts a response it cannot finish).
			ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
				return context.WithValue(ctx, http.ServerContextKey, std)
			},
			ErrorLog: errLog,
		}}
	}
	n.admin = &http.Server{
		Handler:           adminAccess.Handler(access.NodeAdmin(cfg.PProf), n.adminHandler()),
		Protocols:         adminAccess.Protocols(),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          errLog,
	}

	go n.run(ctx)
	log.Info("proxy node started", "listen", n.Addr(), "admin", n.AdminAddr(), "nats", cfg.NATSURL, "bucket", cfg.Bucket)
	return n, nil
}

func (n *Node) run(ctx context.Context) {
	defer close(n.done)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errc := make(chan error, 3)
	go func() { errc <- serve(n.proxy, n.proxyLn) }()
	go func() { errc <- serve(n.admin, n.adminLn) }()
	watchDone := make(chan struct{})
	regDone := make(chan struct{})
	if n.cfg.Secrets != nil {
		secretsDone := make(chan struct{})
		go func() {
			defer close(secretsDone)
			js, err := jetstream.New(n.nc)
			if err != nil {
				errc <- fmt.Errorf("node: following secret versions: %w", err)
				return
			}
			n.cfg.Secrets.Run(ctx, js)
		}()
		defer func() { <-secretsDone }()
	}
	go func() {
		defer close(watchDone)
		kv, err := n.bucket(ctx)
		if err != nil {
			return // ctx ended
		}
		js, err := jetstream.New(n.nc)
		if err != nil {
			errc <- fmt.Errorf("node: watching the configuration: %w", err)
			return
		}
		if err := n.watcher.Run(ctx, js, kv); err != nil {
			errc <- err
		}
	}()
	go func() {
		defer close(regDone)
		kv, err := n.nodeBucket(ctx)
		if err != nil {
			return // ctx ended
		}
		registry.Run(ctx, registry.Options{
			KV: kv, ID: n.cfg.NodeID, Heartbeat: n.cfg.Heartbeat, Logger: n.log,
			Status: n.statusAndExpiry, Changed: n.watcher.Changed, Connected: n.nc.IsConnected,
		})
	}()

	select {
	case <-ctx.Done():
	case err := <-errc:
		n.err = err
		n.log.Error("proxy node failed", "error", err)
	}
	n.log.Info("stopping: finishing requests in flight")
	// One deadline for the whole stop: serving, then draining.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.ShutdownTimeout)
	defer scancel()
	var stopping sync.WaitGroup
	// The Listeners drain alongside the proxy listener, within the same
	// deadline; an Apply from the watcher after this does nothing.
	stopping.Go(func() { n.inbound.Close(sctx) })
	if err := n.proxy.Shutdown(sctx); err != nil {
		n.log.Warn("requests still in flight at shutdown; cutting them off", "error", err)
		// Closing their connections cancels their contexts, which
		// aborts their upstream round trips.
		_ = n.proxy.Close()
	}
	stopping.Wait()
	if err := n.admin.Shutdown(sctx); err != nil {
		n.admin.Close()
	}
	cancel(errors.New("node: stopping"))
	<-watchDone
	<-regDone // the node's key is deleted before NATS is closed
	// Hijacked (upgraded) connections outlive Shutdown: Drain waits for
	// them until sctx ends, then closes every Upstream's idle connections.
	n.watcher.Drain(sctx)
	n.nc.Close()
	<-n.natsClosed // its callbacks log nothing after the node stopped
	n.log.Info("proxy node stopped")
}

// proxyServer serves the plain proxy port: net/http's server, or h1's
// (the default).
type proxyServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

type h1Server struct{ *h1.Server }

func (s h1Server) Serve(ln net.Listener) error { return s.Server.Serve(context.Background(), ln) }

func serve(srv proxyServer, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("node: serving on %s: %w", ln.Addr(), err)
	}
	return nil
}

// bucket opens the configuration bucket, waiting for it to exist: the
// policy service creates it.
func (n *Node) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	js, err := jetstream.New(n.nc)
	if err != nil {
		return nil, err
	}
	b := retry.New(n.cfg.RetryInterval, watch.RetryCeiling*n.cfg.RetryInterval)
	for {
		kv, err := js.KeyValue(ctx, n.cfg.Bucket)
		if err == nil && n.cfg.Tracing.On() {
			// The watcher's entries carry no headers: traced changes
			// read theirs from the stream.
			n.stream, err = js.Stream(ctx, "KV_"+n.cfg.Bucket)
		}
		if err == nil {
			return kv, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d := b.Next()
		n.log.Warn("configuration bucket not available yet", "bucket", n.cfg.Bucket, "error", err, "retry_in", d)
		if !retry.Sleep(ctx, d) {
			return nil, ctx.Err()
		}
	}
}

// nodeBucket opens the node bucket, creating it when missing, and waits
// for NATS as [Node.bucket] does.
func (n *Node) nodeBucket(ctx context.Context) (jetstream.KeyValue, error) {
	js, err := jetstream.New(n.nc)
	if err != nil {
		return nil, err
	}
	b := retry.New(n.cfg.RetryInterval, watch.RetryCeiling*n.cfg.RetryInterval)
	for {
		kv, err := nodekv.OpenReplicas(ctx, js, n.cfg.NodeBucket, n.cfg.NodeTTL, n.cfg.NodeReplicas)
		if err == nil {
			if ttl, err := nodekv.TTL(ctx, kv); err == nil && ttl > 0 && ttl < 2*n.cfg.Heartbeat {
				n.log.Warn("the node bucket's TTL is under two heartbeats: the node may drop out between them", "bucket", n.cfg.NodeBucket, "ttl", ttl, "heartbeat", n.cfg.Heartbeat)
			}
			return kv, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d := b.Next()
		n.log.Warn("node bucket not available yet", "bucket", n.cfg.NodeBucket, "error", err, "retry_in", d)
		if !retry.Sleep(ctx, d) {
			return nil, ctx.Err()
		}
	}
}

// maxCertificates bounds the certificates one status lists: the status is
// written after every change, and a node with 10,000 mTLS upstreams would
// otherwise send megabytes each time. The listeners' come first.
const maxCertificates = 1000

// NodeStatus is what the node reports of itself in the node bucket: the
// revision it serves, its addresses, the certificates of the current
// snapshot per listener and upstream (at most maxCertificates, and an error
// "certificates" saying how many were left out), and the values it refused.
func (n *Node) NodeStatus() *nodev1.NodeStatus {
	s := n.watcher.Snapshot()
	st := &nodev1.NodeStatus{
		Id: n.cfg.NodeID, Version: nodekv.Version(),
		ProxyAddress: n.Addr(), AdminAddress: n.AdminAddr(),
		Revision:  s.Revision,
		StartTime: timestamppb.New(n.started),
	}
	now := time.Now()
	if p := n.presented; p != nil {
		p.begin()
		defer p.end()
	}
	st.Certificates = listenerCertificates(n.inbound.Served(), n.presented, now)
	listed := 0 // upstreams with TLS whose certificates are listed
	n.status.mu.Lock()
	cached := n.status.served
	n.status.served = make(map[*upstream.Upstream][]*nodev1.ServedCertificate, min(len(cached), maxCertificates))
	for _, name := range s.UpstreamNames {
		if len(st.Certificates) >= maxCertificates {
			// The rest are counted, not visited: at 10,000 upstreams
			// visiting each took most of a status's CPU.
			break
		}
		u := s.Upstreams.Get(name)
		if u.TLS() == nil {
			continue
		}
		listed++
		certs, ok := cached[u]
		if !ok {
			certs = upstreamCertificates(name, u)
		}
		n.status.served[u] = certs
		if p := n.presented; p != nil && u.TLS().Certificate != nil {
			for _, sc := range certs {
				if sc.Role == "client" {
					sc = p.withState(sc, u.TLS().Certificate, now)
				}
				st.Certificates = append(st.Certificates, sc)
			}
			continue
		}
		st.Certificates = append(st.Certificates, certs...)
	}
	n.status.mu.Unlock()
	if left := s.Upstreams.TLSLen() - listed; left > 0 {
		st.Errors = append(st.Errors, &nodev1.NodeError{Key: "certificates", Message: fmt.Sprintf("the certificates of %d upstreams are not listed: a status lists at most %d; GET /status on the node lists them all", left, maxCertificates), Time: timestamppb.Now()})
	}
	for _, sk := range s.Skipped {
		st.Errors = append(st.Errors, &nodev1.NodeError{Key: sk.Key, Message: sk.Err.Error(), Time: timestamppb.New(sk.Time)})
	}
	if n.cfg.Secrets != nil {
		ss := n.cfg.Secrets.Status()
		st.SecretsStale, st.SecretsStaleReason = ss.Stale, ss.Reason
		for _, r := range ss.References {
			if r.Error != "" {
				st.Errors = append(st.Errors, &nodev1.NodeError{Key: r.Ref, Message: r.Error})
			}
		}
	}
	return st
}

// Bounds of what a status says of one certificate: the names are the
// certificate issuer's to choose, and a status must stay small.
const (
	maxNameBytes = 256
	maxSANs      = 16
)

func served(scope, name, host, role string, c *x509.Certificate) *nodev1.ServedCertificate {
	return &nodev1.ServedCertificate{
		Scope: scope, Name: name, Host: host, Role: role,
		Sha256Fingerprint: certs.Fingerprint(c), NotAfter: timestamppb.New(c.NotAfter),
		Subject: cut(c.Subject.String()), Issuer: cut(c.Issuer.String()), Sans: sans(c),
	}
}

// sans lists a certificate's subject alternative names, at most maxSANs.
func sans(c *x509.Certificate) []string {
	var out []string
	add := func(s string) {
		if len(out) < maxSANs {
			out = append(out, cut(s))
		}
	}
	for _, d := range c.DNSNames {
		add(d)
	}
	for _, ip := range c.IPAddresses {
		add(ip.String())
	}
	for _, u := range c.URIs {
		add(u.String())
	}
	return out
}

func cut(s string) string {
	if len(s) <= maxNameBytes {
		return s
	}
	return strings.ToValidUTF8(s[:maxNameBytes], "") + "…"
}

// listenerCertificates are the server certificates and client CAs of the
// Listeners the node serves; p (may be nil) gives the server certificates'
// revocation state.
func listenerCertificates(ls []*model.Listener, p *presented, now time.Time) []*nodev1.ServedCertificate {
	var out []*nodev1.ServedCertificate
	for _, l := range ls {
		for i := range l.Hosts {
			h := &l.Hosts[i]
			host := ""
			if len(h.Hostnames) > 0 {
				host = h.Hostnames[0]
			}
			if h.Certificate != nil && h.Certificate.Leaf != nil {
				sc := served("listener", l.Name, host, "server", h.Certificate.Leaf)
				if ref := h.CertificateRef; ref != nil {
					sc.Keystore, sc.Alias = ref.Keystore, ref.Alias
				}
				if p != nil {
					sc.Revocation, sc.RevocationDetail = p.state(h.Certificate, now)
				}
				out = append(out, sc)
			}
			for _, ca := range h.ClientCAs {
				sc := served("listener", l.Name, host, "trust", ca)
				sc.Truststore = h.ClientTruststore
				out = append(out, sc)
			}
		}
	}
	return out
}

// headers reads the headers of the bucket's message at revision rev (one
// direct get), for the trace context the policy service wrote there.
func (n *Node) headers(ctx context.Context, rev uint64) (nats.Header, error) {
	if n.stream == nil {
		return nil, nil
	}
	msg, err := n.stream.GetMsg(ctx, rev)
	if err != nil {
		return nil, fmt.Errorf("node: reading the headers of revision %d: %w", rev, err)
	}
	return msg.Header, nil
}

// Wait blocks until the node has stopped and returns why it failed, if it did.
func (n *Node) Wait() error {
	<-n.done
	return n.err
}

// Addr is the proxy listener's address.
func (n *Node) Addr() string { return n.proxyLn.Addr().String() }

// AdminAddr is the admin listener's address.
func (n *Node) AdminAddr() string { return n.adminLn.Addr().String() }

// Ready is closed once the bucket's contents at start are loaded.
func (n *Node) Ready() <-chan struct{} { return n.watcher.Ready() }

// Revision is the store revision the node serves.
func (n *Node) Revision() uint64 { return n.watcher.Revision() }

// WaitRevision returns once the node has applied revision rev or later. When
// a value refused at rev or earlier is still outstanding, it returns that
// refusal (a *publish.SkippedError; several are joined): see
// [watch.Watcher.WaitRevision].
func (n *Node) WaitRevision(ctx context.Context, rev uint64) error {
	return n.watcher.WaitRevision(ctx, rev)
}

// Status is the /status document.
type Status struct {
	NodeID      string            `json:"nodeId"`
	Ready       bool              `json:"ready"`
	Revision    uint64            `json:"revision"`
	Upstreams   []upstream.Status `json:"upstreams"`
	Routes      []string          `json:"routes"`
	RouteErrors []string          `json:"routeErrors,omitempty"`
	// Listeners are the TLS Listeners, served or refused, by name; a
	// refused one also has its key in Skipped.
	Listeners []inbound.ListenerStatus `json:"listeners"`
	// Skipped are the stored values the node refused and still does not
	// serve (their keys keep their last good value), by key. Empty when
	// the node serves the bucket as of Revision.
	Skipped []Skipped `json:"skipped"`
	// Watch counts the work the configuration watcher has done: entries
	// read, Upstreams and routing tables built, snapshots published.
	Watch watch.Stats `json:"watch"`
	// Secrets is the key material from the secrets service: whether it
	// may be stale and why, and each reference in use with its version.
	// Absent when the node has no secrets service configured.
	Secrets *secrets.Status `json:"secrets,omitempty"`
}

// Skipped is one refused stored value in [Status].
type Skipped struct {
	Key      string `json:"key"`
	Revision uint64 `json:"revision"`
	Error    string `json:"error"`
}

// Status reports what the node serves.
func (n *Node) Status() Status {
	s := n.watcher.Snapshot()
	st := Status{NodeID: n.cfg.NodeID, Ready: s.Ready, Revision: s.Revision, Upstreams: []upstream.Status{}, Routes: []string{}, Listeners: n.inbound.Status(), Skipped: []Skipped{}, Watch: n.watcher.Stats()}
	for _, u := range s.Upstreams.All() {
		st.Upstreams = append(st.Upstreams, u.Status())
	}
	slices.SortFunc(st.Upstreams, func(a, b upstream.Status) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range s.Router.Routes() {
		st.Routes = append(st.Routes, r.Name)
	}
	for _, err := range s.RouteErrors {
		st.RouteErrors = append(st.RouteErrors, err.Error())
	}
	for _, sk := range s.Skipped {
		st.Skipped = append(st.Skipped, Skipped{Key: sk.Key, Revision: sk.Revision, Error: sk.Err.Error()})
	}
	if n.cfg.Secrets != nil {
		ss := n.cfg.Secrets.Status()
		st.Secrets = &ss
	}
	return st
}

func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-n.watcher.Ready():
			w.Write([]byte("ok\n"))
		default:
			http.Error(w, "configuration not loaded yet", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(n.Status()) // the client may have gone; nothing to tell it
	})
	mux.Handle("GET /metrics", n.metrics.Handler())
	if n.cfg.PProf {
		// Go's profiler, for `go tool pprof https://<admin>/debug/pprof/profile`
		// with an operator's certificate; off unless --pprof.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// ListenerAddr is the address Listener name is bound to, or "" when it is
// not served.
func (n *Node) ListenerAddr(name string) string { return n.inbound.Addr(name) }
