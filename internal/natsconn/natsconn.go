// Package natsconn connects Keyway's services to NATS the one way they all
// share: TLS verified against a given CA, a user of its own with a password
// read from a file, an inbox prefix of that user's (the server grants each
// user replies under its own prefix only), and reconnects that never stop,
// with jittered exponential waits so that a fleet does not retry in step.
//
// The users and what each may do are in package [keyway.dev/internal/natsperm].
package natsconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Reconnect waits: the first after BaseDelay, each next one doubled up to
// MaxDelay, and each drawn at random from the upper half of that span.
const (
	BaseDelay = 250 * time.Millisecond
	MaxDelay  = 8 * time.Second
)

// Config is how a service reaches NATS.
type Config struct {
	// URL is the server, or a comma-separated seed list of a cluster's.
	URL string
	// CAFile holds the PEM certificates of the CAs that sign the server's
	// certificate. Set, the connection is TLS (1.2 or later) and the
	// server's certificate is verified against these CAs only; empty, TLS
	// is used only when the URL says tls:// and then against the system's
	// roots.
	CAFile string
	// User is the NATS user; empty connects without a user.
	User string
	// PasswordFile holds the user's password (surrounding white space is
	// ignored). It is read again at every (re)connect, so a rotated
	// password is picked up without a restart.
	PasswordFile string
	// Name names the connection in the server's monitoring
	// (e.g. "keyway-policy").
	Name string
}

// RegisterFlags adds --nats-ca, --nats-user and --nats-password-file to fs,
// writing into c; envflag.Parse reads them from KEYWAY_NATS_CA,
// KEYWAY_NATS_USER and KEYWAY_NATS_PASSWORD_FILE. The URL flag (--nats)
// stays the service's own.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.CAFile, "nats-ca", "", "CA certificates (PEM) that sign the NATS server's certificate; set, the connection is TLS and verified")
	fs.StringVar(&c.User, "nats-user", "", "NATS user")
	fs.StringVar(&c.PasswordFile, "nats-password-file", "", "file holding the NATS user's password, re-read at every reconnect")
}

// Handlers are the service's own reactions to the connection's events. Each
// may be nil. They run on the client's callback goroutine, one at a time.
type Handlers struct {
	// Disconnected: the connection dropped (err is nil when it was closed
	// on purpose).
	Disconnected func(nc *nats.Conn, err error)
	// Reconnected: the connection is back; subscriptions are restored,
	// JetStream watches may need a restart.
	Reconnected func(nc *nats.Conn)
	// Closed: the connection is closed for good (only by Close).
	Closed func(nc *nats.Conn)
}

// InboxPrefix is the inbox prefix of a user's connections: "_INBOX.<user>",
// or nats.go's default "_INBOX" without a user. The server's permissions
// let a user subscribe under its own prefix only, so that no user reads the
// replies and JetStream deliveries of another.
func InboxPrefix(user string) string {
	if user == "" {
		return nats.InboxPrefix[:len(nats.InboxPrefix)-1]
	}
	return "_INBOX." + user
}

// Connect opens the connection described by cfg. It returns at once, even
// when the server cannot be reached yet: the client keeps trying, forever,
// and so after every later disconnect, including refused credentials (the
// password file may be fixed meanwhile). An unreachable server is logged
// at warn at each attempt; a refused handshake or password once (nats.go
// reports no more; the server logs each). The server's asynchronous errors
// are logged at warn too (a permission violation names the subject). ctx
// bounds only the checks done before connecting; the connection lives until
// the caller closes it.
//
// Errors are about the configuration: an unreadable or empty CA or password
// file, a password without a user.
func Connect(ctx context.Context, cfg Config, log *slog.Logger, h Handlers) (*nats.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natsconn: connecting to %s: %w", cfg.URL, err)
	}
	if log == nil {
		log = slog.Default()
	}
	opts, err := cfg.options(log)
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if h.Disconnected != nil {
				h.Disconnected(nc, err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			if h.Reconnected != nil {
				h.Reconnected(nc)
			}
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if h.Closed != nil {
				h.Closed(nc)
			}
		}),
	)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("natsconn: connecting to %s: %w", cfg.URL, err)
	}
	return nc, nil
}

// options are the nats.go options for cfg, without the event handlers.
func (c Config) options(log *slog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(c.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(ReconnectDelay),
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats connection attempt failed; retrying", "error", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("nats error", "subject", sub.Subject, "error", err)
				return
			}
			log.Warn("nats error", "error", err)
		}),
	}
	if c.CAFile != "" {
		tc, err := TLSConfig(c.CAFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	switch {
	case c.User == "" && c.PasswordFile != "":
		return nil, errors.New("natsconn: a NATS password file is given without a user: give --nats-user (KEYWAY_NATS_USER) too")
	case c.User != "" && c.PasswordFile == "":
		return nil, fmt.Errorf("natsconn: NATS user %q has no password: give --nats-password-file (KEYWAY_NATS_PASSWORD_FILE)", c.User)
	case c.User != "":
		if _, err := readPassword(c.PasswordFile); err != nil {
			return nil, err
		}
		user, file := c.User, c.PasswordFile
		opts = append(opts,
			nats.CustomInboxPrefix(InboxPrefix(user)),
			// Read at every attempt: a rotated password (a Kubernetes
			// Secret updated in place) is used at the next reconnect.
			nats.UserInfoHandler(func() (string, string) {
				pw, err := readPassword(file)
				if err != nil {
					log.Warn("reading the NATS password file; trying with an empty password", "user", user, "error", err)
				}
				return user, pw
			}),
		)
	}
	return opts, nil
}

// TLSConfig is the client TLS configuration for a server whose certificate
// one of the CAs in caFile (PEM) signs: TLS 1.2 or later, those CAs only.
func TLSConfig(caFile string) (*tls.Config, error) {
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("natsconn: reading the NATS CA file (--nats-ca): %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("natsconn: NATS CA file %s holds no PEM certificate: give the CA that signs the NATS server's certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func readPassword(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("natsconn: reading the NATS password file (--nats-password-file): %w", err)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("natsconn: NATS password file %s is empty", file)
	}
	return pw, nil
}

// ReconnectDelay is the wait before reconnect round attempts (1 for the
// first): BaseDelay doubled per round up to MaxDelay, drawn from the upper
// half of that so that clients that lost the same server spread out.
func ReconnectDelay(attempts int) time.Duration {
	d := MaxDelay
	if attempts < 16 {
		d = min(BaseDelay<<max(attempts-1, 0), MaxDelay)
	}
	return d/2 + rand.N(d/2+1)
}
