// Package vaultauth keeps the secrets service logged in to Vault as
// production runs it: with AppRole or Kubernetes auth, the token renewed by
// the Vault API's [api.LifetimeWatcher], a new login when renewal ends (the
// token reached its max TTL, or was revoked), and a revoked token noticed
// within one check interval rather than at its next renewal.
//
// A static token (VAULT_TOKEN, --vault-auth=token) is for development: it is
// renewed while Vault allows, but cannot be replaced, so when it ends the
// service reports it and fails closed until it is restarted with a new one.
package vaultauth

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
	"github.com/prometheus/client_golang/prometheus"

	"keyway.dev/internal/limits"
	"keyway.dev/internal/retry"
)

// Methods are the values of --vault-auth.
const (
	MethodToken      = "token"
	MethodAppRole    = "approle"
	MethodKubernetes = "kubernetes"
)

// DefaultKubernetesTokenFile is where a pod's projected service-account
// token is mounted.
const DefaultKubernetesTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token" //nolint:gosec // a path, not a credential

// Config says how the service logs in to Vault.
type Config struct {
	// Method is token, approle or kubernetes.
	Method string
	// Token is the static token of the token method; VAULT_TOKEN when empty.
	Token string

	// AppRole: the role ID and secret ID are read from files (as a platform
	// mounts them); SecretIDWrapped says the secret ID file holds a
	// response-wrapping token to unwrap instead.
	AppRoleMount, RoleIDFile, SecretIDFile string
	SecretIDWrapped                        bool

	// Kubernetes: the Vault role and the service-account token file.
	KubernetesMount, KubernetesRole, KubernetesTokenFile string

	// CheckInterval is how often the token is looked up, so that a revoked
	// token is noticed between renewals. Zero means one minute.
	CheckInterval time.Duration
}

// RegisterFlags adds --vault-auth and its companions to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Method, "vault-auth", MethodToken, "how to log in to Vault: token (VAULT_TOKEN; development), approle or kubernetes")
	fs.StringVar(&c.AppRoleMount, "vault-approle-mount", "approle", "mount of Vault's AppRole auth method")
	fs.StringVar(&c.RoleIDFile, "vault-approle-role-id-file", "", "file holding the AppRole role ID (--vault-auth=approle)")
	fs.StringVar(&c.SecretIDFile, "vault-approle-secret-id-file", "", "file holding the AppRole secret ID, or a response-wrapping token for it with --vault-approle-secret-id-wrapped")
	fs.BoolVar(&c.SecretIDWrapped, "vault-approle-secret-id-wrapped", false, "the secret ID file holds a response-wrapping token, unwrapped at each login")
	fs.StringVar(&c.KubernetesMount, "vault-kubernetes-mount", "kubernetes", "mount of Vault's Kubernetes auth method")
	fs.StringVar(&c.KubernetesRole, "vault-kubernetes-role", "", "Vault role to log in as (--vault-auth=kubernetes)")
	fs.StringVar(&c.KubernetesTokenFile, "vault-kubernetes-token-file", DefaultKubernetesTokenFile, "the pod's service-account token")
	fs.DurationVar(&c.CheckInterval, "vault-token-check-interval", time.Minute, "how often the Vault token is looked up, to notice a revoked token between renewals")
}

// Validate names the flag to fix when the configuration cannot log in.
func (c *Config) Validate() error {
	switch c.Method {
	case MethodToken:
	case MethodAppRole:
		if c.RoleIDFile == "" || c.SecretIDFile == "" {
			return errors.New("--vault-auth=approle needs --vault-approle-role-id-file and --vault-approle-secret-id-file")
		}
	case MethodKubernetes:
		if c.KubernetesRole == "" {
			return errors.New("--vault-auth=kubernetes needs --vault-kubernetes-role, the Vault role bound to this service account")
		}
	default:
		return fmt.Errorf("--vault-auth %s: want token, approle or kubernetes", limits.Quote(c.Method))
	}
	if c.CheckInterval < 0 {
		return errors.New("--vault-token-check-interval: want a positive duration such as 1m")
	}
	return nil
}

// Session keeps one Vault client logged in. Safe for concurrent use.
type Session struct {
	client *api.Client
	cfg    Config
	log    *slog.Logger

	logins   *prometheus.CounterVec
	failures *prometheus.CounterVec
	expiry   prometheus.Gauge

	mu     sync.Mutex
	secret *api.Secret // the current login's auth
	err    error       // why the service is not logged in; nil when it is
}

// New logs client in as cfg says, and fails when that first login fails:
// a service that cannot reach its secrets must not start as if it could.
func New(ctx context.Context, client *api.Client, cfg Config, log *slog.Logger) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = time.Minute
	}
	s := &Session{
		client: client, cfg: cfg, log: log,
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_secrets_vault_logins_total",
			Help: "Logins to Vault, by auth method (token, approle, kubernetes) and result (ok, error). A token login is its lookup at start.",
		}, []string{"method", "result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyway_secrets_vault_auth_failures_total",
			Help: "Ends of the Vault token other than a planned new login, by reason: renewal (a renewal failed), revoked (a lookup found the token gone), login (a login failed).",
		}, []string{"reason"}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyway_secrets_vault_token_expiry_timestamp_seconds",
			Help: "When the current Vault token expires unless renewed, as a Unix time; 0 for a token that does not expire.",
		}),
	}
	for _, r := range []string{"ok", "error"} {
		s.logins.WithLabelValues(cfg.Method, r)
	}
	for _, r := range []string{"renewal", "revoked", "login"} {
		s.failures.WithLabelValues(r)
	}
	if err := s.login(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Collectors are the session's metrics, for the service's registry.
func (s *Session) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.logins, s.failures, s.expiry}
}

// Err is nil while the service holds a live token, otherwise why not.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Run renews the token and logs in again when it ends, until ctx is done.
func (s *Session) Run(ctx context.Context) {
	b := retry.New(time.Second, time.Minute)
	for ctx.Err() == nil {
		ended := s.watch(ctx)
		if ctx.Err() != nil {
			return
		}
		if s.cfg.Method == MethodToken {
			s.fail(fmt.Errorf("the Vault token (VAULT_TOKEN) has ended: %w; start the service with a new token, or use --vault-auth=approle or kubernetes, which log in again", ended))
			s.waitRestored(ctx)
			continue
		}
		s.log.Info("vault token ended; logging in again", "method", s.cfg.Method, "why", ended)
		for {
			err := s.login(ctx)
			if err == nil {
				b.Reset()
				break
			}
			s.failures.WithLabelValues("login").Inc()
			s.fail(err)
			if !b.Wait(ctx) {
				return
			}
		}
	}
}

// watch renews the current token with a LifetimeWatcher and looks it up
// every check interval; it returns why the token ended.
func (s *Session) watch(ctx context.Context) error {
	s.mu.Lock()
	secret := s.secret
	s.mu.Unlock()

	var done <-chan error
	if secret.Auth != nil && secret.Auth.Renewable && secret.Auth.LeaseDuration > 0 {
		w, err := s.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
		if err != nil {
			return fmt.Errorf("watching the token's lifetime: %w", err)
		}
		go w.Start()
		defer w.Stop()
		done = w.DoneCh()
		go func() {
			for {
				select {
				case r, ok := <-w.RenewCh():
					if !ok {
						return
					}
					if r.Secret != nil && r.Secret.Auth != nil {
						s.setExpiry(r.Secret.Auth.LeaseDuration)
						s.log.Debug("vault token renewed", "ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	} else if secret.Auth != nil && secret.Auth.LeaseDuration > 0 {
		// Not renewable: it ends at its TTL.
		t := time.NewTimer(time.Duration(secret.Auth.LeaseDuration) * time.Second)
		defer t.Stop()
		ch := make(chan error, 1)
		go func() {
			select {
			case <-t.C:
				ch <- errors.New("its TTL ran out and it is not renewable")
			case <-ctx.Done():
			}
		}()
		done = ch
	}

	tick := time.NewTicker(s.cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-done:
			if err != nil {
				s.failures.WithLabelValues("renewal").Inc()
				return fmt.Errorf("renewing it failed: %w", err)
			}
			return errors.New("it reached its max TTL")
		case <-tick.C:
			if err := s.lookup(ctx); err != nil {
				if isDenied(err) {
					s.failures.WithLabelValues("revoked").Inc()
					s.log.Warn("vault token revoked or expired", "method", s.cfg.Method, "error", err)
					return fmt.Errorf("a lookup found it revoked or expired: %w", err)
				}
				// Vault unreachable: the token may well be fine; the
				// backend's own health says Vault is down.
				s.log.Debug("vault token lookup failed", "error", err)
			}
		}
	}
}

// waitRestored waits, for a static token that ended, until a lookup finds
// it live again (an operator renewed or re-created it) or ctx is done.
func (s *Session) waitRestored(ctx context.Context) {
	tick := time.NewTicker(s.cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if s.login(ctx) == nil {
				return
			}
		}
	}
}

// login logs in (or, for a static token, looks it up) and makes the result
// the client's token.
func (s *Session) login(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	secret, err := s.authenticate(ctx)
	if err == nil && (secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "") {
		err = errors.New("Vault answered the login without a token")
	}
	if err != nil {
		s.logins.WithLabelValues(s.cfg.Method, "error").Inc()
		return fmt.Errorf("logging in to Vault at %s with --vault-auth=%s: %w", s.client.Address(), s.cfg.Method, err)
	}
	s.logins.WithLabelValues(s.cfg.Method, "ok").Inc()
	s.client.SetToken(secret.Auth.ClientToken)
	s.setExpiry(secret.Auth.LeaseDuration)
	s.mu.Lock()
	s.secret, s.err = secret, nil
	s.mu.Unlock()
	s.log.Info("logged in to vault", "method", s.cfg.Method, "ttl", time.Duration(secret.Auth.LeaseDuration)*time.Second, "renewable", secret.Auth.Renewable)
	return nil
}

func (s *Session) authenticate(ctx context.Context) (*api.Secret, error) {
	switch s.cfg.Method {
	case MethodAppRole:
		roleID, err := readFile(s.cfg.RoleIDFile, "--vault-approle-role-id-file")
		if err != nil {
			return nil, err
		}
		secretID := &approle.SecretID{FromFile: s.cfg.SecretIDFile}
		var opts []approle.LoginOption
		opts = append(opts, approle.WithMountPath(s.cfg.AppRoleMount))
		if s.cfg.SecretIDWrapped {
			opts = append(opts, approle.WithWrappingToken())
		}
		auth, err := approle.NewAppRoleAuth(roleID, secretID, opts...)
		if err != nil {
			return nil, err
		}
		return s.client.Auth().Login(ctx, auth)
	case MethodKubernetes:
		auth, err := kubernetes.NewKubernetesAuth(s.cfg.KubernetesRole,
			kubernetes.WithServiceAccountTokenPath(s.cfg.KubernetesTokenFile),
			kubernetes.WithMountPath(s.cfg.KubernetesMount))
		if err != nil {
			return nil, err
		}
		return s.client.Auth().Login(ctx, auth)
	}
	token := s.cfg.Token
	if token == "" {
		token = s.client.Token() // VAULT_TOKEN, read by vault/api
	}
	if token == "" {
		return nil, errors.New("no Vault token: set VAULT_TOKEN, or use --vault-auth=approle or kubernetes")
	}
	s.client.SetToken(token)
	info, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, err
	}
	ttl, _ := info.TokenTTL()
	renewable, _ := info.TokenIsRenewable()
	return &api.Secret{Auth: &api.SecretAuth{ClientToken: token, Renewable: renewable, LeaseDuration: int(ttl.Seconds())}}, nil
}

// lookup asks Vault about the current token.
func (s *Session) lookup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
	return err
}

func (s *Session) fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
	s.log.Error("not logged in to vault; writes and new material fail until this is fixed", "error", err)
}

func (s *Session) setExpiry(leaseSeconds int) {
	if leaseSeconds <= 0 {
		s.expiry.Set(0)
		return
	}
	s.expiry.Set(float64(time.Now().Add(time.Duration(leaseSeconds) * time.Second).Unix()))
}

// isDenied reports whether err is Vault refusing the token (403), rather
// than Vault being unreachable.
func isDenied(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

// readFile reads a credential file, trimmed; the error names the flag and
// never the content.
func readFile(path, flagName string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s: %s is empty", flagName, path)
	}
	return v, nil
}
