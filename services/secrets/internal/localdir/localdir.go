// Package localdir keeps keystores and truststores as PEM files in a
// directory, the local stack's default backend:
//
//	<dir>/keystores/<keystore>/<alias>/cert.pem   chain, leaf first
//	<dir>/keystores/<keystore>/<alias>/key.pem    private key (mode 0600)
//	<dir>/keystores/<keystore>/<alias>/usage      optional: "server" or "client"
//	<dir>/truststores/<name>.pem                  CA bundle
//
// A secret's version is a hash of its files' contents, so an edit made by
// hand (or by another tool) is a new version that the service's poll sees.
package localdir

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/secretref"
	"keyway.dev/secrets/internal/secret"
)

// File names inside an alias's folder.
const (
	certFile  = "cert.pem"
	keyFile   = "key.pem"
	usageFile = "usage"
)

// Dir is a directory backend. Safe for concurrent use; writes replace files
// atomically (write, then rename).
type Dir struct {
	root string
}

// New opens (and creates) the directory.
func New(root string) (*Dir, error) {
	for _, sub := range []string{"keystores", "truststores"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o700); err != nil {
			return nil, fmt.Errorf("localdir: creating %s: %w", filepath.Join(root, sub), err)
		}
	}
	return &Dir{root: root}, nil
}

// Kind is BACKEND_LOCAL.
func (d *Dir) Kind() secretsv1.Backend { return secretsv1.Backend_BACKEND_LOCAL }

// Describe says where the files are, for logs.
func (d *Dir) Describe() string { return "local directory " + d.root }

func (d *Dir) aliasDir(ks, alias string) string {
	return filepath.Join(d.root, "keystores", ks, alias)
}

func (d *Dir) truststoreFile(name string) string {
	return filepath.Join(d.root, "truststores", name+".pem")
}

// List returns every alias and truststore with its content hash.
func (d *Dir) List(ctx context.Context) (map[secretref.Ref]string, error) {
	out := make(map[secretref.Ref]string)
	keystores, err := os.ReadDir(filepath.Join(d.root, "keystores"))
	if err != nil {
		return nil, fmt.Errorf("localdir: listing keystores: %w", err)
	}
	for _, ks := range keystores {
		if !ks.IsDir() || secretref.CheckName(ks.Name()) != nil {
			continue
		}
		aliases, err := os.ReadDir(filepath.Join(d.root, "keystores", ks.Name()))
		if err != nil {
			return nil, fmt.Errorf("localdir: listing keystore %q: %w", ks.Name(), err)
		}
		for _, a := range aliases {
			if !a.IsDir() || secretref.CheckName(a.Name()) != nil {
				continue
			}
			rec, err := d.GetAlias(ctx, ks.Name(), a.Name())
			if errors.Is(err, secret.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			out[secretref.Ref{Keystore: ks.Name(), Alias: a.Name()}] = rec.Revision
		}
	}
	stores, err := os.ReadDir(filepath.Join(d.root, "truststores"))
	if err != nil {
		return nil, fmt.Errorf("localdir: listing truststores: %w", err)
	}
	for _, f := range stores {
		name, ok := strings.CutSuffix(f.Name(), ".pem")
		if f.IsDir() || !ok || secretref.CheckName(name) != nil {
			continue
		}
		rec, err := d.GetTruststore(ctx, name)
		if errors.Is(err, secret.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[secretref.Ref{Truststore: name}] = rec.Revision
	}
	return out, nil
}

// GetAlias reads an alias's files. An alias folder without both PEM files
// does not exist yet (a writer may be halfway).
func (d *Dir) GetAlias(_ context.Context, ks, alias string) (*secret.AliasRecord, error) {
	dir := d.aliasDir(ks, alias)
	cert, certInfo, err := readFile(filepath.Join(dir, certFile))
	if err != nil {
		return nil, err
	}
	key, keyInfo, err := readFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, err
	}
	usage, _, err := readFile(filepath.Join(dir, usageFile))
	if err != nil && !errors.Is(err, secret.ErrNotFound) {
		return nil, err
	}
	version := contentHash(cert, key, usage)
	rec := &secret.AliasRecord{
		Keystore:       ks,
		Alias:          alias,
		Version:        version,
		Revision:       version,
		CertificatePEM: string(cert),
		Key:            secret.NewPrivateKey(key),
		Usage:          secret.ParseUsage(strings.TrimSpace(string(usage))),
		UpdateTime:     later(certInfo.ModTime(), keyInfo.ModTime()),
	}
	clear(key)
	return rec, nil
}

// Fields names the files, for messages about stored values.
func (d *Dir) Fields() secret.Fields {
	return secret.Fields{Certificate: certFile, Key: keyFile, Bundle: "the truststore file"}
}

// GetTruststore reads a truststore's file.
func (d *Dir) GetTruststore(_ context.Context, name string) (*secret.TruststoreRecord, error) {
	data, info, err := readFile(d.truststoreFile(name))
	if err != nil {
		return nil, err
	}
	version := contentHash(data)
	return &secret.TruststoreRecord{Name: name, Version: version, Revision: version, CertificatesPEM: string(data), UpdateTime: info.ModTime()}, nil
}

// PutAlias writes an alias's files.
func (d *Dir) PutAlias(_ context.Context, rec *secret.AliasRecord) (secret.Stamp, error) {
	if rec.PKI != nil {
		return secret.Stamp{}, errors.New("localdir: PKI aliases need the Vault backend")
	}
	dir := d.aliasDir(rec.Keystore, rec.Alias)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return secret.Stamp{}, fmt.Errorf("localdir: creating %s: %w", dir, err)
	}
	usage := []byte(secret.UsageName(rec.Usage) + "\n")
	// The key first: a reader that sees the new certificate finds its key.
	if err := writeFile(filepath.Join(dir, keyFile), rec.Key.PEM(), 0o600); err != nil {
		return secret.Stamp{}, err
	}
	if err := writeFile(filepath.Join(dir, usageFile), usage, 0o600); err != nil {
		return secret.Stamp{}, err
	}
	if err := writeFile(filepath.Join(dir, certFile), []byte(rec.CertificatePEM), 0o644); err != nil {
		return secret.Stamp{}, err
	}
	v := contentHash([]byte(rec.CertificatePEM), rec.Key.PEM(), usage)
	return secret.Stamp{Version: v, Revision: v, UpdateTime: time.Now()}, nil
}

// PutTruststore writes a truststore's file.
func (d *Dir) PutTruststore(_ context.Context, rec *secret.TruststoreRecord) (secret.Stamp, error) {
	if err := writeFile(d.truststoreFile(rec.Name), []byte(rec.CertificatesPEM), 0o644); err != nil {
		return secret.Stamp{}, err
	}
	v := contentHash([]byte(rec.CertificatesPEM))
	return secret.Stamp{Version: v, Revision: v, UpdateTime: time.Now()}, nil
}

// DeleteAlias removes an alias's folder (and its keystore's, once empty).
func (d *Dir) DeleteAlias(_ context.Context, ks, alias string) error {
	dir := d.aliasDir(ks, alias)
	if _, err := os.Stat(filepath.Join(dir, certFile)); errors.Is(err, fs.ErrNotExist) {
		return secret.ErrNotFound
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("localdir: removing %s: %w", dir, err)
	}
	_ = os.Remove(filepath.Join(d.root, "keystores", ks)) // only succeeds when empty
	return nil
}

// DeleteTruststore removes a truststore's file.
func (d *Dir) DeleteTruststore(_ context.Context, name string) error {
	err := os.Remove(d.truststoreFile(name))
	if errors.Is(err, fs.ErrNotExist) {
		return secret.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("localdir: removing truststore %q: %w", name, err)
	}
	return nil
}

func readFile(path string) ([]byte, fs.FileInfo, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, secret.ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("localdir: reading %s: %w", path, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("localdir: reading %s: %w", path, err)
	}
	return data, info, nil
}

// writeFile replaces path atomically.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("localdir: writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("localdir: writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("localdir: writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("localdir: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("localdir: writing %s: %w", path, err)
	}
	return nil
}

// contentHash is the version of a secret: the first 16 hex digits of the
// SHA-256 of its parts, each length-prefixed.
func contentHash(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
