// Package app wires the policy service: NATS, the store, and the RPC server
// that serves Connect, gRPC and gRPC-Web on one port, with gRPC reflection
// and health so that `buf curl` needs no schema.
package app

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/otelconnect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/access"
	"keyway.dev/internal/audit"
	"keyway.dev/internal/certevents"
	"keyway.dev/internal/certfiles"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/limits"
	"keyway.dev/internal/material"
	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/retry"
	"keyway.dev/internal/telemetry"
	"keyway.dev/policy/internal/console"
	"keyway.dev/policy/internal/inlinekeys"
	"keyway.dev/policy/internal/metrics"
	"keyway.dev/policy/internal/nodes"
	"keyway.dev/policy/internal/probelog"
	"keyway.dev/policy/internal/secretcheck"
	"keyway.dev/policy/internal/server"
	"keyway.dev/policy/internal/store"
)

// Config is what the policy service needs to run.
type Config struct {
	// Listen is the API address, e.g. "127.0.0.1:8081".
	Listen string
	// Access is the API's TLS and access control (see package access):
	// without TLS files and a policy the service refuses to start, unless
	// InsecureNoAuth is set and Listen is a loopback address.
	Access access.Options
	// NATSURL is the NATS server (or comma-separated cluster seed list).
	NATSURL string
	Store   store.Config
	// NodeBucket is the node registry bucket; default nodekv.Bucket.
	NodeBucket string
	// NodeTTL is the node bucket's MaxAge when this service creates it;
	// default nodekv.DefaultTTL.
	NodeTTL time.Duration
	Log     *slog.Logger
	// Tracing, when on, traces every RPC (otelconnect: the server span is
	// named after the procedure, "keyway.policy.v1.PolicyService/Apply")
	// and the store's writes under it.
	Tracing telemetry.Tracing
	// OnListen, if set, is called with the bound address once the API
	// serves (tests listen on port 0).
	OnListen func(net.Addr)
	// SecretsServer is the secrets service's API (e.g.
	// "https://127.0.0.1:8082"); empty: references to keystores, aliases and
	// truststores are refused, and so are inline private keys (they are
	// moved into the secrets service at apply). Over https the service
	// presents Material's client certificate and trusts Material's CA, as
	// on the internal port.
	SecretsServer string
	// Material is the secrets service's internal port (MaterialService,
	// mTLS), used by the live probe of bindings with references; zero URL:
	// those bindings are not probed (a warning says so).
	Material material.Config
	// NATS is the NATS connection's TLS and user (package natsconn); its
	// URL, when empty, is NATSURL.
	NATS natsconn.Config
	// Audit is the audit stream's configuration (limits); the service and
	// the replicas (Store.Replicas) are filled in.
	Audit audit.Config
	// ConsoleListen is the operator console's address (package console),
	// e.g. "127.0.0.1:8085"; empty: no console. It is served like the API:
	// TLS with the API's certificate and the same access control, or
	// plain HTTP on loopback with InsecureNoAuth.
	ConsoleListen string
	// OnConsoleListen, if set, is called with the console's bound address.
	OnConsoleListen func(net.Addr)
	// ProbeTimeout and ProbeDeadline bound the live probe of one endpoint
	// and of one Apply; zero: server.DefaultProbeTimeout and
	// server.DefaultProbeDeadline.
	ProbeTimeout, ProbeDeadline time.Duration
	// ExpiryThresholds are the times left under which the service's own
	// certificates (api-server, internal-client) are announced on
	// certevents.Subject, once per certificate and threshold; nil:
	// certevents.DefaultThresholds. ExpiryInterval is how often they are
	// looked at (zero: certevents.DefaultOwnInterval).
	ExpiryThresholds []time.Duration
	ExpiryInterval   time.Duration
}

// Run serves until ctx is done, then shuts down gracefully.
//
// The NATS connection is replaced by a new one whenever the server closes
// it for good (nats.go reconnects by itself after a network failure, but not
// after a protocol error such as "maximum control line exceeded"); until
// then, gRPC health reports keyway.policy.v1.PolicyService NOT_SERVING.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	guard, err := access.NewServer(cfg.Access, cfg.Listen, log)
	if err != nil {
		return err
	}
	if cfg.ConsoleListen != "" && guard.Insecure() {
		// The console is served as the API is: without authentication,
		// on loopback alone.
		if err := access.CheckLoopback(cfg.ConsoleListen); err != nil {
			return fmt.Errorf("--console-listen: %w", err)
		}
	}

	if cfg.Store.Bucket == "" {
		cfg.Store.Bucket = configkv.Bucket
	}
	cfg.Store.Tracing = cfg.Tracing
	if cfg.Material.URL != "" && cfg.SecretsServer == "" {
		return errors.New("the secrets service's internal URL is set without its API URL: give --secrets-server too")
	}
	var opts []server.Option
	if cfg.ProbeTimeout != 0 || cfg.ProbeDeadline != 0 {
		timeout, deadline := cmp.Or(cfg.ProbeTimeout, server.DefaultProbeTimeout), cmp.Or(cfg.ProbeDeadline, server.DefaultProbeDeadline)
		if err := server.CheckProbeBounds(timeout, deadline); err != nil {
			return err
		}
		opts = append(opts, server.WithProbeBounds(timeout, deadline))
	}
	own := map[string]func() *x509.Certificate{"api-server": guard.Certificate}
	if cfg.SecretsServer != "" {
		var mat server.Material
		if cfg.Material.URL != "" {
			mc, err := material.New(cfg.Material)
			if err != nil {
				return fmt.Errorf("configuring the secrets service's internal port: %w", err)
			}
			mat = mc
			own["internal-client"] = mc.Certificate
		}
		// One client for the secrets service's API: reference checks and
		// the moving of inline keys present the same credentials.
		secretsAPI, secretsBase, err := secretsHTTPClient(cfg.SecretsServer, cfg.Material)
		if err != nil {
			return err
		}
		opts = append(opts,
			server.WithSecrets(secretcheck.New(secretsBase, secretsAPI, 0), mat),
			server.WithInlineKeys(inlinekeys.NewClient(secretsBase, secretsAPI, 0)))
		log.Info("references to the secrets service enabled", "secrets_server", cfg.SecretsServer, "probe_material", cfg.Material.URL != "")
	}
	// The probe log outlives the backends: a NATS reconnection keeps it.
	probes := probelog.New()
	opts = append(opts, server.WithProbeLog(probes))
	m := metrics.New()
	expiryEvents := certevents.NewEventsCounter()
	m.Register(certfiles.Collector(own), expiryEvents)
	var cur atomic.Pointer[backend]
	hc := &health{cur: &cur}
	open := func(ctx context.Context) (*backend, error) {
		b, err := openBackend(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		// The audit trail is written over the backend's connection: its
		// series follow it.
		var old []prometheus.Collector
		if prev := cur.Load(); prev != nil {
			old = prev.aw.Collectors()
		}
		m.Swap(old, b.aw.Collectors())
		svc := server.New(b.st, b.nv, log, m, append(slices.Clip(opts), server.WithAudit(b.aw))...)
		svc.TraceProbes(cfg.Tracing.Tracer)
		b.svc = svc
		b.handler = guard.Handler(access.PolicyAPI(), handler(svc, m.Handler(), cfg.Tracing, hc))
		return b, nil
	}
	first, err := open(ctx)
	if err != nil {
		return err
	}
	cur.Store(first)

	ln, err := guard.Listen(cfg.Listen)
	if err != nil {
		first.close()
		return err
	}
	guard.ReloadOnSIGHUP(ctx)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			cur.Load().handler.ServeHTTP(w, r)
		}),
		Protocols:         guard.Protocols(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("policy service serving", "addr", ln.Addr().String(), "url", guard.Scheme()+"://"+ln.Addr().String(), "nats", first.nc.ConnectedUrlRedacted(), "bucket", cfg.Store.Bucket)
	if cfg.OnListen != nil {
		cfg.OnListen(ln.Addr())
	}
	superCtx, stopSuper := context.WithCancel(ctx)
	superDone := make(chan struct{})
	go func() {
		defer close(superDone)
		supervise(superCtx, &cur, open, log)
	}()
	expiryDone := make(chan struct{})
	go func() {
		defer close(expiryDone)
		// Published over the connection in use: a replaced one carries
		// the events that follow.
		certevents.WatchOwn(superCtx, certevents.Own{
			Service: "policy", Thresholds: cfg.ExpiryThresholds, Interval: cfg.ExpiryInterval, Certificates: own,
			Publish: func(subject string, data []byte) error { return cur.Load().nc.Publish(subject, data) },
			Counter: expiryEvents, Log: log,
		})
	}()
	defer func() {
		stopSuper()
		<-superDone
		<-expiryDone
		cur.Load().close()
	}()
	errc := make(chan error, 2)
	go func() {
		if err := srv.Serve(ln); err != nil {
			errc <- fmt.Errorf("serving the API: %w", err)
		}
	}()
	servers := []*http.Server{srv}
	names := []string{"the API"}
	if cfg.ConsoleListen != "" {
		csrv, err := serveConsole(cfg, guard, &cur, probes, log, errc)
		if err != nil {
			_ = srv.Close()
			return err
		}
		servers, names = append(servers, csrv), append(names, "the console")
	}
	select {
	case err := <-errc:
		for _, s := range servers {
			_ = s.Close()
		}
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for i, s := range servers {
		if err := s.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("shutting down %s: %w", names[i], err))
		}
	}
	return errors.Join(errs...)
}

// serveConsole serves the operator console on cfg.ConsoleListen with the
// API's TLS and access control, reading the current backend's server; a
// failure to serve goes to errc.
func serveConsole(cfg Config, guard *access.Server, cur *atomic.Pointer[backend], probes *probelog.Log, log *slog.Logger, errc chan<- error) (*http.Server, error) {
	h, err := console.Handler(console.Config{
		API:    func() console.API { return cur.Load().svc },
		Probes: probes,
		Guard:  guard.PageHandler,
		Log:    log.With("component", "console"),
	})
	if err != nil {
		return nil, err
	}
	ln, err := guard.Listen(cfg.ConsoleListen)
	if err != nil {
		return nil, fmt.Errorf("the console (--console-listen): %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		Protocols:         guard.Protocols(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("operator console serving", "addr", ln.Addr().String(), "url", guard.Scheme()+"://"+ln.Addr().String()+console.PathCertificates)
	if cfg.OnConsoleListen != nil {
		cfg.OnConsoleListen(ln.Addr())
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving the console: %w", err)
		}
	}()
	return srv, nil
}

// backend is one NATS connection with the store and node view over it, and
// the API handler serving them.
type backend struct {
	nc      *nats.Conn
	aw      *audit.Writer
	st      *store.Store
	nv      *nodes.View
	svc     *server.Server
	handler http.Handler
	// closed is closed when the connection is closed for good, by the
	// server or by close.
	closed chan struct{}
}

func (b *backend) close() {
	b.nv.Close()
	b.st.Close()
	b.aw.Close()
	b.nc.Close()
}

// openBackend connects to NATS and opens the configuration store and the
// node registry over the connection.
func openBackend(ctx context.Context, cfg Config, log *slog.Logger) (*backend, error) {
	b := &backend{closed: make(chan struct{})}
	// Set once the views exist: they restart their watches when NATS
	// comes back.
	var onReconnect atomic.Pointer[func()]
	var once sync.Once
	natsCfg := cfg.NATS
	natsCfg.URL, natsCfg.Name = cmp.Or(natsCfg.URL, cfg.NATSURL), "keyway-policy"
	nc, err := natsconn.Connect(ctx, natsCfg, log, natsHandlers(log, &onReconnect, func() { once.Do(func() { close(b.closed) }) }))
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", natsCfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	aw, err := openAudit(ctx, js, cfg, log)
	if err != nil {
		nc.Close()
		return nil, err
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	storeCfg := cfg.Store
	storeCfg.Journal = server.Journal(aw)
	st, err := store.Open(openCtx, nc, storeCfg, log)
	cancel()
	if err != nil {
		aw.Close()
		nc.Close()
		return nil, fmt.Errorf("opening the configuration store (is NATS with JetStream at %s?): %w", natsCfg.URL, err)
	}
	openCtx, cancel = context.WithTimeout(ctx, 30*time.Second)
	nv, err := nodes.Open(openCtx, js, cfg.NodeBucket, cfg.NodeTTL, cfg.Store.Replicas, log)
	cancel()
	if err != nil {
		st.Close()
		aw.Close()
		nc.Close()
		return nil, fmt.Errorf("opening the node registry: %w", err)
	}
	resume := func() { st.Resume(); nv.Resume() }
	onReconnect.Store(&resume)
	b.nc, b.aw, b.st, b.nv = nc, aw, st, nv
	return b, nil
}

// supervise replaces the current backend with a new one each time its NATS
// connection is closed for good, retrying with jittered backoff, until ctx
// is done.
func supervise(ctx context.Context, cur *atomic.Pointer[backend], open func(context.Context) (*backend, error), log *slog.Logger) {
	for {
		old := cur.Load()
		select {
		case <-ctx.Done():
			return
		case <-old.closed:
		}
		log.Error("the NATS connection was closed for good; connecting anew", "error", old.nc.LastError())
		// Every replica lost NATS at once: jitter keeps them from
		// reconnecting in lockstep.
		b := retry.New(250*time.Millisecond, 10*time.Second)
		for {
			nb, err := open(ctx)
			if err == nil {
				cur.Store(nb)
				old.close()
				log.Info("nats connection replaced", "url", nb.nc.ConnectedUrlRedacted())
				break
			}
			d := b.Next()
			log.Warn("connecting to NATS anew", "error", err, "retry_in", d)
			if !retry.Sleep(ctx, d) {
				return
			}
		}
	}
}

// health answers gRPC health checks: the server ("") is serving while the
// process runs; PolicyService is NOT_SERVING while NATS is not connected
// (reads are served from the last view, writes fail).
type health struct{ cur *atomic.Pointer[backend] }

// Check implements [grpchealth.Checker].
func (h *health) Check(_ context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	switch req.Service {
	case "":
		return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
	case policyv1connect.PolicyServiceName:
		if b := h.cur.Load(); b == nil || !b.nc.IsConnected() {
			return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
		}
		return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %s", limits.Quote(req.Service)))
}

// openAudit opens the audit stream every write is recorded in.
func openAudit(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (*audit.Writer, error) {
	ac := cfg.Audit
	ac.Service = audit.ServicePolicy
	if ac.Replicas == 0 {
		ac.Replicas = cfg.Store.Replicas
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	aw, err := audit.Open(openCtx, js, ac, log)
	if err != nil {
		return nil, fmt.Errorf("opening the audit stream (is NATS with JetStream at %s?): %w", cfg.NATSURL, err)
	}
	return aw, nil
}

// Handler serves the PolicyService (Connect, gRPC, gRPC-Web), gRPC
// reflection (v1 and v1alpha), gRPC health, /healthz for plain probes and
// metricsHandler at /metrics. With tr on, every PolicyService RPC has a
// server span; a caller's traceparent is trusted as its parent.
//
// A request body over [limits.PolicyRequestBytes] is refused before it is
// read; JSON is read strictly (unknown fields and enum values refused).
func Handler(svc policyv1connect.PolicyServiceHandler, metricsHandler http.Handler, tr telemetry.Tracing) http.Handler {
	return handler(svc, metricsHandler, tr, grpchealth.NewStaticChecker(policyv1connect.PolicyServiceName))
}

func handler(svc policyv1connect.PolicyServiceHandler, metricsHandler http.Handler, tr telemetry.Tracing, hc grpchealth.Checker) http.Handler {
	mux := http.NewServeMux()
	opts := append(limits.StrictJSON(), connect.WithReadMaxBytes(limits.PolicyRequestBytes))
	if tr.On() {
		// Metrics stay Prometheus's (/metrics); only spans here.
		ic, err := otelconnect.NewInterceptor(otelconnect.WithTracerProvider(tr.Provider),
			otelconnect.WithPropagator(tr.Propagator), otelconnect.WithoutMetrics(), otelconnect.WithTrustRemote())
		if err != nil {
			// Only for invalid options, which these are not.
			panic(fmt.Sprintf("app: otelconnect interceptor: %v", err))
		}
		opts = append(opts, connect.WithInterceptors(ic))
	}
	mux.Handle(policyv1connect.NewPolicyServiceHandler(svc, opts...))
	reflector := grpcreflect.NewStaticReflector(policyv1connect.PolicyServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle(grpchealth.NewHandler(hc))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /metrics", metricsHandler)
	return limits.Body("policy API", limits.PolicyRequestBytes, mux)
}

// secretsHTTPClient is the client of the secrets API and the base URL to
// call it at: over https it presents the service's client certificate for
// the secrets service (--secrets-cert, --secrets-key) and trusts
// --secrets-ca. url may list the replicas' APIs, comma-separated: a call
// moves on to the next when one cannot be reached.
func secretsHTTPClient(url string, m material.Config) (*http.Client, string, error) {
	if !strings.HasPrefix(url, "https://") {
		if strings.Contains(url, ",") {
			hc, base, err := material.ReplicatedHTTPClient(url, nil)
			if err != nil {
				return nil, "", fmt.Errorf("--secrets-server: %w", err)
			}
			return hc, base, nil
		}
		return nil, url, nil
	}
	if m.CertFile == "" || m.KeyFile == "" || m.CAFile == "" {
		return nil, "", fmt.Errorf("the secrets service's API %s asks callers for a certificate: give --secrets-cert, --secrets-key and --secrets-ca (the policy service holds viewer and secrets-admin there)", url)
	}
	// The certificate and the CA are read again when their files change.
	client, err := material.HTTPClientFromFiles(material.Files{Cert: m.CertFile, Key: m.KeyFile, CA: m.CAFile})
	if err != nil {
		return nil, "", fmt.Errorf("configuring the client of the secrets API: %w", err)
	}
	hc, base, err := material.Replicated(client, url)
	if err != nil {
		return nil, "", fmt.Errorf("--secrets-server: %w", err)
	}
	return hc, base, nil
}
