// Package certfiles keeps a key pair that lives in files — a service's own
// certificate for its internal mTLS port, its API port, or for the secrets
// service — and the CA bundle that verifies its peers or callers, and reads them again when the
// files change, so that rotating them (cert-manager renewing a Kubernetes
// Secret, an operator replacing the files) needs no restart.
//
// As ghostunnel's certloader does, the files are parsed fully and checked
// (the key matches the certificate) before the new pair replaces the old
// one in a single atomic swap; a bad or half-written pair keeps the last
// good one served, and the next handshake tries again. The files are looked
// at, at most, once per check interval, on a handshake: nothing polls.
package certfiles

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckInterval is how often, at most, the files are looked at.
const DefaultCheckInterval = time.Second

// KeyPair is a certificate and key read from files, re-read when they
// change. Safe for concurrent use.
type KeyPair struct {
	certFile, keyFile string
	checker

	cur   atomic.Pointer[loaded]
	stamp stamp // of the files loaded; under mu
}

type loaded struct {
	cert *tls.Certificate
}

// stamp is what says the files changed: their size and modification time
// (a Kubernetes Secret volume swaps a symlink; os.Stat follows it).
type stamp struct {
	certSize, keySize int64
	certMod, keyMod   time.Time
}

// settings are what Options adjust, for a KeyPair and a Bundle alike.
type settings struct {
	interval time.Duration
	now      func() time.Time
}

// checker is what a KeyPair and a Bundle share: their files are checked at
// most once an interval, one check at a time, and counted.
type checker struct {
	settings
	mu        sync.Mutex // serialises checks
	checkedAt time.Time
	lastErr   error
	reloads   atomic.Uint64
	failures  atomic.Uint64
}

// maybeCheck runs check (with mu held) when the interval has passed since
// the last one and no other check is running; otherwise the caller goes on
// with what is loaded.
func (c *checker) maybeCheck(check func() error) {
	if !c.mu.TryLock() {
		return // another handshake is checking; use what is loaded
	}
	defer c.mu.Unlock()
	now := c.now()
	if now.Sub(c.checkedAt) < c.interval {
		return
	}
	c.checkedAt = now
	_ = check()
}

// checkNow runs check (with mu held) whatever the interval.
func (c *checker) checkNow(check func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkedAt = c.now()
	return check()
}

// Stats says how often what the files hold was replaced, and how often a
// change to them could not be loaded (and the last such error, nil once
// good files are loaded again).
func (c *checker) Stats() (reloads, failures uint64, lastErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reloads.Load(), c.failures.Load(), c.lastErr
}

func newSettings(opts []Option) settings {
	s := settings{interval: DefaultCheckInterval, now: time.Now}
	for _, o := range opts {
		o(&s)
	}
	return s
}

// Option adjusts a KeyPair or a Bundle.
type Option func(*settings)

// WithCheckInterval sets how often, at most, the files are looked at; 0
// looks at every handshake.
func WithCheckInterval(d time.Duration) Option { return func(s *settings) { s.interval = d } }

// Load reads the key pair; it fails when the files cannot be read, do not
// parse, or the key does not match the certificate.
func Load(certFile, keyFile string, opts ...Option) (*KeyPair, error) {
	k := &KeyPair{certFile: certFile, keyFile: keyFile, checker: checker{settings: newSettings(opts)}}
	st, err := k.stat()
	if err != nil {
		return nil, err
	}
	cert, err := k.read()
	if err != nil {
		return nil, err
	}
	k.cur.Store(&loaded{cert: cert})
	k.stamp, k.checkedAt = st, k.now()
	return k, nil
}

// Certificate is the current key pair, read again first when the check
// interval has passed and the files changed.
func (k *KeyPair) Certificate() *tls.Certificate {
	k.maybeReload()
	return k.cur.Load().cert
}

// GetCertificate serves the current pair as a server's certificate
// (tls.Config.GetCertificate).
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.Certificate(), nil
}

// GetClientCertificate presents the current pair as a client's certificate
// (tls.Config.GetClientCertificate).
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.Certificate(), nil
}

// Leaf is the current certificate, parsed: what metrics of its expiry read.
// It does not look at the files.
func (k *KeyPair) Leaf() *x509.Certificate { return k.cur.Load().cert.Leaf }

func (k *KeyPair) maybeReload() { k.maybeCheck(k.check) }

// Reload looks at the files now, whatever the check interval, and loads
// them when they changed: what a SIGHUP asks for. On an error the pair in
// force stays, and the error says why the files were refused.
func (k *KeyPair) Reload() error { return k.checkNow(k.check) }

// check loads the files when their stamp changed; k.mu is held.
func (k *KeyPair) check() error {
	st, err := k.stat()
	if err != nil {
		k.failed(err)
		return err
	}
	if st == k.stamp {
		return nil
	}
	cert, err := k.read()
	if err != nil {
		// Perhaps half written: the stamp is not kept, so the next
		// check reads the files again.
		k.failed(err)
		return err
	}
	k.stamp = st
	if old := k.cur.Load().cert; bytes.Equal(old.Certificate[0], cert.Certificate[0]) {
		return nil // the files were touched, not changed
	}
	k.cur.Store(&loaded{cert: cert})
	k.reloads.Add(1)
	k.lastErr = nil
	return nil
}

func (k *KeyPair) failed(err error) {
	k.failures.Add(1)
	k.lastErr = err
}

func (k *KeyPair) stat() (stamp, error) {
	c, err := os.Stat(k.certFile)
	if err != nil {
		return stamp{}, fmt.Errorf("certificate file: %w", err)
	}
	kf, err := os.Stat(k.keyFile)
	if err != nil {
		return stamp{}, fmt.Errorf("key file: %w", err)
	}
	return stamp{certSize: c.Size(), keySize: kf.Size(), certMod: c.ModTime(), keyMod: kf.ModTime()}, nil
}

// read loads and checks the pair: tls.X509KeyPair refuses a key that does
// not match the certificate; Leaf is set.
func (k *KeyPair) read() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(k.certFile)
	if err != nil {
		return nil, fmt.Errorf("reading the certificate %s: %w", k.certFile, err)
	}
	keyPEM, err := os.ReadFile(k.keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the key %s: %w", k.keyFile, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading the certificate %s and key %s: %w", k.certFile, k.keyFile, err)
	}
	if pair.Leaf == nil {
		return nil, errors.New("the certificate has no leaf")
	}
	return &pair, nil
}
