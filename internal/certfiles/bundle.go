package certfiles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// Bundle is a set of CA certificates read from a PEM file — the internal CA
// that verifies a service's peers, or an API's callers' CAs (--client-ca) —
// and read again when the file changes,
// at most once per check interval, at a handshake. A file that does not
// parse, or holds no certificate, keeps the last good set.
//
// Rotating the CA without a failed connection takes an overlap: first the
// bundle holds the old and the new CA (both are accepted), then the
// certificates are reissued by the new CA, then the old CA leaves the
// bundle. Each step is taken by every process at its next handshake after
// the file changed. Safe for concurrent use.
type Bundle struct {
	file string
	checker

	cur   atomic.Pointer[bundleState]
	stamp fileStamp // of the file loaded; under mu
}

// bundleState is one parse of the file. Immutable.
type bundleState struct {
	pool  *x509.CertPool
	certs []*x509.Certificate
	// server is the server configuration made for this pool by
	// [ServerConfig]; built once per pool.
	server atomic.Pointer[tls.Config]
}

type fileStamp struct {
	size int64
	mod  time.Time
}

// LoadBundle reads the CA bundle; it fails when the file cannot be read or
// holds no PEM certificate.
func LoadBundle(file string, opts ...Option) (*Bundle, error) {
	b := &Bundle{file: file, checker: checker{settings: newSettings(opts)}}
	st, err := statFile(file)
	if err != nil {
		return nil, err
	}
	state, err := readBundle(file)
	if err != nil {
		return nil, err
	}
	b.cur.Store(state)
	b.stamp, b.checkedAt = st, b.now()
	return b, nil
}

// Pool is the current set as a pool, read again first when the check
// interval has passed and the file changed.
func (b *Bundle) Pool() *x509.CertPool { return b.state().pool }

// Certificates are the current CAs; they do not look at the file.
func (b *Bundle) Certificates() []*x509.Certificate { return b.cur.Load().certs }

func (b *Bundle) state() *bundleState {
	b.maybeReload()
	return b.cur.Load()
}

func (b *Bundle) maybeReload() { b.maybeCheck(b.check) }

// Reload looks at the file now, whatever the check interval, and loads it
// when it changed: what a SIGHUP asks for. On an error the set in force
// stays, and the error says why the file was refused.
func (b *Bundle) Reload() error { return b.checkNow(b.check) }

// check loads the file when its stamp changed; b.mu is held.
func (b *Bundle) check() error {
	st, err := statFile(b.file)
	if err != nil {
		b.failures.Add(1)
		b.lastErr = err
		return err
	}
	if st == b.stamp {
		return nil
	}
	next, err := readBundle(b.file)
	if err != nil {
		// Perhaps half written: the stamp is not kept, so the next check
		// reads the file again.
		b.failures.Add(1)
		b.lastErr = err
		return err
	}
	b.stamp = st
	if slices.EqualFunc(next.certs, b.cur.Load().certs, func(x, y *x509.Certificate) bool { return x.Equal(y) }) {
		return nil // touched, not changed
	}
	b.cur.Store(next)
	b.reloads.Add(1)
	b.lastErr = nil
	return nil
}

func statFile(file string) (fileStamp, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return fileStamp{}, fmt.Errorf("CA bundle: %w", err)
	}
	return fileStamp{size: fi.Size(), mod: fi.ModTime()}, nil
}

// maxBundleBytes bounds the file: a bundle of internal CAs is a few KiB.
const maxBundleBytes = 1 << 20

func readBundle(file string) (*bundleState, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the CA bundle %s: %w", file, err)
	}
	if len(data) > maxBundleBytes {
		return nil, fmt.Errorf("the CA bundle %s is %d bytes, over %d: is it the right file?", file, len(data), maxBundleBytes)
	}
	st := &bundleState{pool: x509.NewCertPool()}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("the CA bundle %s: certificate %d: %w", file, len(st.certs)+1, err)
		}
		st.certs = append(st.certs, c)
		st.pool.AddCert(c)
	}
	if len(st.certs) == 0 {
		return nil, fmt.Errorf("the CA bundle %s holds no PEM certificate", file)
	}
	return st, nil
}

// ServerConfig is base for a server that verifies its clients against
// the bundle: each handshake gets base with ClientCAs set to the bundle's
// current pool (a copy made once per version of the bundle). base's own
// ClientCAs and GetConfigForClient are ignored.
func (b *Bundle) ServerConfig(base *tls.Config) *tls.Config {
	base = base.Clone()
	base.GetConfigForClient = nil
	return &tls.Config{
		MinVersion: base.MinVersion,
		NextProtos: base.NextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			st := b.state()
			if cfg := st.server.Load(); cfg != nil {
				return cfg, nil
			}
			cfg := base.Clone()
			cfg.ClientCAs = st.pool
			st.server.CompareAndSwap(nil, cfg)
			return st.server.Load(), nil
		},
	}
}

// DialTLS is a dial function for a client that verifies its servers
// against the bundle (http.Transport.DialTLSContext): each connection is
// made with base, RootCAs set to the bundle's current pool, and ServerName,
// when base has none, the host dialled; crypto/tls verifies the chain and
// the name as it always does. (RootCAs of a config in use cannot change;
// a new config per connection can.)
func (b *Bundle) DialTLS(base *tls.Config, dialer *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	base = base.Clone()
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		cfg := base.Clone()
		cfg.RootCAs = b.Pool()
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, fmt.Errorf("certfiles: dialling %q: %w", addr, err)
			}
			cfg.ServerName = host
		}
		d := &tls.Dialer{NetDialer: dialer, Config: cfg}
		return d.DialContext(ctx, network, addr)
	}
}
