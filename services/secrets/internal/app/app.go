// Package app wires the secrets service: the backend (a local directory,
// or Vault KV v2 with PKI), the store that follows it, the NATS bucket it
// publishes versions into, and two listeners: the API (SecretsService over
// Connect, gRPC and gRPC-Web over TLS to authenticated callers, with
// reflection, health and /metrics) and the internal mTLS port that alone
// serves MaterialService, to callers with the node role.
package app

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/hashicorp/vault/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/internal/access"
	"keyway.dev/internal/audit"
	"keyway.dev/internal/certevents"
	"keyway.dev/internal/certfiles"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/failover"
	"keyway.dev/internal/limits"
	"keyway.dev/internal/model"
	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/secretref"
	"keyway.dev/secrets/internal/dependents"
	"keyway.dev/secrets/internal/leader"
	"keyway.dev/secrets/internal/localdir"
	"keyway.dev/secrets/internal/metrics"
	"keyway.dev/secrets/internal/pki"
	"keyway.dev/secrets/internal/publish"
	"keyway.dev/secrets/internal/server"
	"keyway.dev/secrets/internal/store"
	"keyway.dev/secrets/internal/vaultauth"
	"keyway.dev/secrets/internal/vaultkv"
)

// Config is what the secrets service needs to run.
type Config struct {
	// Listen is the API address.
	Listen string
	// Access is the API's TLS and access control (see package access):
	// without TLS files and a policy the service refuses to start, unless
	// InsecureNoAuth is set and Listen is a loopback address. With a
	// policy, MaterialService also needs the node role.
	Access access.Options
	// InternalListen is the mTLS address of MaterialService; empty serves
	// no material.
	InternalListen string
	// InternalCert and InternalKey are the internal listener's certificate
	// and key files; InternalClientCA holds the CAs whose client
	// certificates it accepts.
	InternalCert, InternalKey, InternalClientCA string

	NATSURL  string
	Bucket   string
	Replicas int
	// ConfigBucket is the policy service's configuration bucket
	// (configkv.Bucket when empty), read to refuse deleting a secret that
	// resources use.
	ConfigBucket string

	// Backend is "local" or "vault".
	Backend string
	// Dir is the local backend's directory.
	Dir string
	// VaultAddr is Vault's address; VaultAuth says how the service logs in
	// (AppRole or Kubernetes in production; a static token, VAULT_TOKEN,
	// in development).
	VaultAddr string
	VaultAuth vaultauth.Config
	// VaultKVMount and VaultPrefix place the secrets in KV v2;
	// VaultPKIMount is the PKI mount.
	VaultKVMount, VaultPrefix, VaultPKIMount string

	Store store.Config
	// Audit is the audit stream's configuration (limits); the service and
	// the replicas (Replicas) are filled in.
	Audit audit.Config
	Log   *slog.Logger
	// OnListen, if set, is called with the bound addresses once both
	// listeners serve (tests listen on port 0); internal is nil without
	// an internal listener.
	OnListen func(api, internal net.Addr)
	// NATS is the NATS connection's TLS and user (package natsconn); its
	// URL, when empty, is NATSURL.
	NATS natsconn.Config
	// LeaderBucket is the bucket of the lease that elects, among the
	// replicas, the one that issues and renews Vault PKI certificates
	// (package leader); empty runs no election: this service is the
	// leader (one replica). LeaderTTL is the lease's TTL
	// (leader.DefaultTTL when zero).
	LeaderBucket string
	LeaderTTL    time.Duration
	// ExpiryThresholds are the times left under which the service's own
	// certificates (api-server, internal-server) are announced on
	// certevents.Subject, once per certificate and threshold; nil:
	// certevents.DefaultThresholds. ExpiryInterval is how often they are
	// looked at (zero: certevents.DefaultOwnInterval).
	ExpiryThresholds []time.Duration
	ExpiryInterval   time.Duration
}

// Run serves until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	guard, err := access.NewServer(cfg.Access, cfg.Listen, log)
	if err != nil {
		return err
	}
	var internalTLS *tls.Config
	own := map[string]func() *x509.Certificate{"api-server": guard.Certificate}
	if cfg.InternalListen != "" {
		var pair *certfiles.KeyPair
		if internalTLS, pair, err = ServerTLS(cfg.InternalCert, cfg.InternalKey, cfg.InternalClientCA); err != nil {
			return err
		}
		own["internal-server"] = pair.Leaf
	}
	backend, issuer, session, err := openBackend(ctx, cfg, log)
	if err != nil {
		return err
	}

	natsCfg := cfg.NATS
	natsCfg.URL, natsCfg.Name = cmp.Or(natsCfg.URL, cfg.NATSURL), "keyway-secrets"
	nc, err := natsconn.Connect(ctx, natsCfg, log, natsconn.Handlers{
		Disconnected: func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected; versions are published once it is back", "error", err)
			}
		},
		Reconnected: func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) },
	})
	if err != nil {
		return fmt.Errorf("connecting to NATS at %s: %w", natsCfg.URL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("opening JetStream: %w", err)
	}
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	bucket, err := publish.Open(openCtx, js, cfg.Bucket, cfg.Replicas)
	cancel()
	if err != nil {
		return fmt.Errorf("opening the versions bucket (is NATS with JetStream at %s?): %w", cfg.NATSURL, err)
	}

	ac := cfg.Audit
	ac.Service = audit.ServiceSecrets
	if ac.Replicas == 0 {
		ac.Replicas = cfg.Replicas
	}
	openCtx, cancel = context.WithTimeout(ctx, 30*time.Second)
	aw, err := audit.Open(openCtx, js, ac, log)
	cancel()
	if err != nil {
		return fmt.Errorf("opening the audit stream (is NATS with JetStream at %s?): %w", cfg.NATSURL, err)
	}
	defer aw.Close()

	m := metrics.New()
	m.Register(aw.Collectors()...)
	expiryEvents := certevents.NewEventsCounter()
	m.Register(certfiles.Collector(own), expiryEvents)
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	expiryDone := make(chan struct{})
	go func() {
		defer close(expiryDone)
		certevents.WatchOwn(runCtx, certevents.Own{
			Service: "secrets", Thresholds: cfg.ExpiryThresholds, Interval: cfg.ExpiryInterval, Certificates: own,
			Publish: nc.Publish, Counter: expiryEvents, Log: log,
		})
	}()
	defer func() { stopRun(); <-expiryDone }()
	storeCfg := cfg.Store
	var (
		st    *store.Store
		lease *leader.Lease
	)
	if cfg.LeaderBucket != "" && issuer != nil {
		openCtx, cancel = context.WithTimeout(ctx, 30*time.Second)
		lease, err = leader.Open(openCtx, js, leader.Config{Bucket: cfg.LeaderBucket, Replicas: cfg.Replicas, TTL: cfg.LeaderTTL, Log: log,
			OnChange: func(leading bool) {
				m.SetLeader(leading)
				if leading {
					st.Wake() // issue what waits for a certificate, renew what is due
				}
			}})
		cancel()
		if err != nil {
			return fmt.Errorf("opening the PKI leader lease (is NATS with JetStream at %s?): %w", cfg.NATSURL, err)
		}
		storeCfg.Leader = lease.Leader
	} else {
		m.SetLeader(true) // no election: this service issues
	}
	st = store.New(backend, issuer, bucket, m, log, storeCfg)
	m.SetSource(st)
	if lease != nil {
		// Campaign before the load, so that a leader issues what has no
		// certificate and a follower waits for it. At a clean stop the
		// lease is released before NATS is closed.
		done := lease.Start(runCtx)
		defer func() { stopRun(); <-done }()
	}
	loadCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := st.Load(loadCtx); err != nil {
		log.Warn("secrets backend not reachable at start; serving nothing until it answers", "backend", backend.Describe(), "error", err)
	}
	cancel()
	go st.Run(runCtx)
	ready := st.BackendError
	if session != nil {
		m.Register(session.Collectors()...)
		go session.Run(runCtx)
		ready = func() error { return cmp.Or(session.Err(), st.BackendError()) }
	}

	apiLn, err := guard.Listen(cfg.Listen)
	if err != nil {
		return err
	}
	guard.ReloadOnSIGHUP(ctx)
	servers := []*http.Server{{
		Handler: guard.Handler(access.SecretsAPI(), APIHandler(server.NewSecrets(st, log, server.WithAudit(aw),
			server.WithDependents(dependents.New(js, cfg.ConfigBucket))), ready, m.Handler())),
		Protocols:         guard.Protocols(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
	listeners := []net.Listener{apiLn}
	var internalAddr net.Addr
	if internalTLS != nil {
		ln, err := net.Listen("tcp", cfg.InternalListen)
		if err != nil {
			apiLn.Close()
			return fmt.Errorf("listening on %s: %w", cfg.InternalListen, err)
		}
		internalAddr = ln.Addr()
		listeners = append(listeners, tls.NewListener(ln, internalTLS))
		material := MaterialHandler(server.NewMaterial(st, log))
		if g := guard.Guard(); g != nil {
			material = g.Middleware(access.MaterialAPI(), material)
		}
		servers = append(servers, &http.Server{
			Handler:           material,
			ReadHeaderTimeout: 10 * time.Second,
			// Handshake failures (no or an untrusted client certificate)
			// are the client's problem; log them at debug.
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		})
	}
	log.Info("secrets service serving", "addr", apiLn.Addr().String(), "url", guard.Scheme()+"://"+apiLn.Addr().String(), "internal", addrString(internalAddr),
		"backend", backend.Describe(), "nats", nc.ConnectedUrlRedacted(), "bucket", bucketName(cfg.Bucket), "config_bucket", cmp.Or(cfg.ConfigBucket, configkv.Bucket), "poll_interval", cfg.Store.PollInterval, "leader_bucket", leaderBucket(lease, cfg.LeaderBucket))
	if cfg.OnListen != nil {
		cfg.OnListen(apiLn.Addr(), internalAddr)
	}
	errc := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { errc <- srv.Serve(listeners[i]) }()
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// leaderBucket names the lease's bucket for the log; empty when no
// election runs.
func leaderBucket(lease *leader.Lease, bucket string) string {
	if lease == nil {
		return ""
	}
	return bucket
}

func bucketName(b string) string {
	if b == "" {
		return secretref.Bucket
	}
	return b
}

// openBackend builds the configured backend; with Vault, also the PKI
// issuer and the session that keeps the service logged in.
func openBackend(ctx context.Context, cfg Config, log *slog.Logger) (store.Backend, store.Issuer, *vaultauth.Session, error) {
	switch cfg.Backend {
	case "local", "":
		if cfg.Dir == "" {
			return nil, nil, nil, errors.New("--dir is required with the local backend (KEYWAY_SECRETS_DIR)")
		}
		d, err := localdir.New(cfg.Dir)
		if err != nil {
			return nil, nil, nil, err
		}
		return d, nil, nil, nil
	case "vault":
		client, err := VaultClient(cfg.VaultAddr)
		if err != nil {
			return nil, nil, nil, err
		}
		session, err := vaultauth.New(ctx, client, cfg.VaultAuth, log)
		if err != nil {
			return nil, nil, nil, err
		}
		return vaultkv.New(client, vaultkv.Config{Mount: cfg.VaultKVMount, Prefix: cfg.VaultPrefix}), pki.New(client, cfg.VaultPKIMount), session, nil
	}
	return nil, nil, nil, fmt.Errorf("--backend %q: want local or vault", cfg.Backend)
}

// VaultClient is a vault/api client for addr, not yet logged in (package
// vaultauth does that). Retries are off: the store's poll is the retry,
// and a Vault that is down must not hold a poll for seconds. addr may list
// the servers of a Vault cluster, comma-separated: a request goes to the
// one that answered last and moves on to the next when it cannot be
// reached (a standby forwards it to the active node), so the loss of any
// one server, the active one included, costs no more than its election.
func VaultClient(addr string) (*api.Client, error) {
	vc := api.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("configuring the Vault client: %w", vc.Error)
	}
	if addr == "" {
		addr = vc.Address
	}
	addrs := failover.Split(addr)
	tr, err := failover.New(addrs, vc.HttpClient.Transport)
	if err != nil && len(addrs) > 1 {
		return nil, fmt.Errorf("--vault-addr: %w", err)
	}
	if err != nil {
		// One address the transport does not take (unix://): as given.
		vc.Address = addr
		vc.MaxRetries = 0
		vc.Timeout = 10 * time.Second
		client, err := api.NewClient(vc)
		if err != nil {
			return nil, fmt.Errorf("configuring the Vault client for %s: %w", vc.Address, err)
		}
		return client, nil
	}
	// A standby whose active node has just died answers 307 to that
	// node's address for as long as the election takes. The Vault client
	// follows one redirect, then takes the second 307 for an answer with
	// nothing in it: an empty list, every secret "deleted". A redirect is
	// no answer here; with every server redirecting, the request fails.
	tr.Passing = failover.Redirect
	vc.HttpClient.Transport = tr
	vc.Address = addrs[0]
	vc.MaxRetries = 0
	vc.Timeout = 10 * time.Second
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("configuring the Vault client for %s: %w", vc.Address, err)
	}
	return client, nil
}

// ServerTLS is the internal listener's configuration: its certificate and
// the CA bundle that verifies clients, both read again when their files
// change (a renewed certificate is served, and a rotated bundle trusted,
// at the next handshake, with no restart), and a client certificate that
// chains to a CA of the bundle is required.
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, *certfiles.KeyPair, error) {
	if certFile == "" || keyFile == "" || clientCAFile == "" {
		return nil, nil, errors.New("the internal listener serves key material over mTLS only: give --internal-cert, --internal-key and --internal-client-ca (or --internal-listen '' to serve no material)")
	}
	pair, err := certfiles.Load(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("the internal certificate --internal-cert and key --internal-key: %w", err)
	}
	bundle, err := certfiles.LoadBundle(clientCAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--internal-client-ca: %w", err)
	}
	return bundle.ServerConfig(&tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: pair.GetCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		NextProtos:     model.DefaultALPN(),
	}), pair, nil
}

// APIHandler serves SecretsService (Connect, gRPC, gRPC-Web), reflection,
// health, /healthz and /metrics. It never mounts MaterialService. ready is
// nil while the backend answers and the service is logged in to it,
// otherwise why not.
func APIHandler(svc secretsv1connect.SecretsServiceHandler, ready func() error, metricsHandler http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(secretsv1connect.NewSecretsServiceHandler(svc, append(limits.StrictJSON(), connect.WithReadMaxBytes(limits.SecretsRequestBytes))...))
	reflector := grpcreflect.NewStaticReflector(secretsv1connect.SecretsServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle(grpchealth.NewHandler(&health{ready: ready}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "backend unavailable: %v\nserving the last fetched material\n", err)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", metricsHandler)
	// A body over the limit is refused before it is read.
	return limits.Body("secrets API", limits.SecretsRequestBytes, mux)
}

// MaterialHandler serves MaterialService only; mount it behind a listener
// that requires and verifies client certificates.
func MaterialHandler(svc secretsv1connect.MaterialServiceHandler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(secretsv1connect.NewMaterialServiceHandler(svc))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "a verified client certificate is required", http.StatusUnauthorized)
			return
		}
		leaf := r.TLS.VerifiedChains[0][0]
		mux.ServeHTTP(w, r.WithContext(server.WithClientName(r.Context(), leaf.Subject.String())))
	})
}

// health answers gRPC health checks: the server ("") is serving while the
// process runs; SecretsService is NOT_SERVING while the backend does not
// answer or the service is not logged in to it (reads are served from the
// last fetched material, writes fail).
type health struct{ ready func() error }

func (h *health) Check(_ context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	switch req.Service {
	case "":
		return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
	case secretsv1connect.SecretsServiceName:
		if h.ready() != nil {
			return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
		}
		return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %s", limits.Quote(req.Service)))
}
