// Package vaultkv keeps keystores and truststores in Vault's KV v2 secrets
// engine, one secret per alias or truststore:
//
//	<mount>/keyway/keystores/<keystore>/<alias>
//	    certificate   chain, leaf first, PEM
//	    private_key   PEM
//	    usage         "client" or "server"
//	  or, for an alias issued from Vault PKI:
//	    pki_role, common_name, alt_names (comma-separated), ttl ("1h"), usage,
//	    and certificate and private_key: the certificate last issued for
//	    the binding (absent until the PKI leader has issued one)
//	<mount>/keyway/truststores/<name>
//	    certificates  CA bundle, PEM
//
// A secret's version is KV's version number, read from its metadata; a
// change made with `vault kv put` is a new version, which is how the
// service notices rotations made outside it. All calls take the caller's
// context.
package vaultkv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/secretref"
	"keyway.dev/secrets/internal/secret"
)

// Field names of the stored secrets.
const (
	fieldCertificate  = "certificate"
	fieldPrivateKey   = "private_key"
	fieldUsage        = "usage"
	fieldPKIRole      = "pki_role"
	fieldCommonName   = "common_name"
	fieldAltNames     = "alt_names"
	fieldTTL          = "ttl"
	fieldCertificates = "certificates"
)

// Config places the secrets in Vault.
type Config struct {
	// Mount is the KV v2 mount ("secret", dev mode's default).
	Mount string
	// Prefix is the folder under the mount ("keyway").
	Prefix string
}

// KV is the Vault KV v2 backend. Safe for concurrent use.
type KV struct {
	client *api.Client
	kv     *api.KVv2
	cfg    Config
}

// New returns the backend over client.
func New(client *api.Client, cfg Config) *KV {
	if cfg.Mount == "" {
		cfg.Mount = "secret"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "keyway"
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	return &KV{client: client, kv: client.KVv2(cfg.Mount), cfg: cfg}
}

// Kind is BACKEND_VAULT_KV.
func (k *KV) Kind() secretsv1.Backend { return secretsv1.Backend_BACKEND_VAULT_KV }

// Describe says where the secrets are, for logs.
func (k *KV) Describe() string {
	return fmt.Sprintf("vault %s, KV v2 %s/%s", k.client.Address(), k.cfg.Mount, k.cfg.Prefix)
}

func (k *KV) aliasPath(ks, alias string) string {
	return k.cfg.Prefix + "/keystores/" + ks + "/" + alias
}

func (k *KV) truststorePath(name string) string {
	return k.cfg.Prefix + "/truststores/" + name
}

// list returns the entries of a metadata folder (folders end in "/"); a
// missing folder is empty.
//
// Vault answers 404 both for a folder that holds nothing (with no error
// in the body) and for a path no mount serves yet ("no handler for
// route", as a standby that has just become active answers until it has
// set its mounts up). The Vault client reads both as an empty list; the
// second is an error here, or a failover would look like every secret
// being deleted.
func (k *KV) list(ctx context.Context, folder string) ([]string, error) {
	resp, err := k.raw(ctx, "LIST", k.cfg.Mount+"/metadata/"+folder)
	if resp != nil {
		defer resp.Body.Close()
	}
	if isAbsent(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vaultkv: listing %s/%s: %w", k.cfg.Mount, folder, err)
	}
	s, err := api.ParseSecret(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("vaultkv: listing %s/%s: reading the answer: %w", k.cfg.Mount, folder, err)
	}
	if s == nil || s.Data == nil {
		return nil, nil
	}
	raw, ok := s.Data["keys"].([]any)
	if !ok {
		return nil, nil
	}
	out := make([]string, 0, len(raw))
	for _, v := range raw {
		if name, ok := v.(string); ok {
			out = append(out, name)
		}
	}
	return out, nil
}

// raw sends one request and keeps what the Vault client's Logical calls
// drop: the errors of a 404.
func (k *KV) raw(ctx context.Context, method, path string) (*api.Response, error) {
	req := k.client.NewRequest(method, "/v1/"+path)
	//nolint:staticcheck // RawRequestWithContext is the one call that keeps a 404's errors.
	return k.client.RawRequestWithContext(ctx, req)
}

// isAbsent reports whether err is Vault's answer for a path that holds
// nothing under a mount that serves it: 404 with no error in the body.
func isAbsent(err error) bool {
	respErr, ok := errors.AsType[*api.ResponseError](err)
	return ok && respErr.StatusCode == http.StatusNotFound && len(respErr.Errors) == 0
}

// served asks again about a path the Vault client found missing, and
// returns an error unless Vault says it holds nothing there (see list).
func (k *KV) served(ctx context.Context, method, path string) error {
	resp, err := k.raw(ctx, method, path)
	if resp != nil {
		resp.Body.Close()
	}
	if err == nil || isAbsent(err) {
		return nil
	}
	return err
}

// revision is a secret's version and when it was written: a secret deleted
// and written again (or a Vault restored from an older state) starts again
// at version 1, and the time tells the two apart.
func revision(version int, created time.Time) string {
	return strconv.Itoa(version) + "@" + created.UTC().Format(time.RFC3339Nano)
}

// version reads a secret's current revision from its metadata; a secret
// whose current version is deleted or destroyed does not exist.
func (k *KV) version(ctx context.Context, path string) (string, error) {
	md, err := k.kv.GetMetadata(ctx, path)
	if errors.Is(err, api.ErrSecretNotFound) {
		if err := k.served(ctx, "GET", k.cfg.Mount+"/metadata/"+path); err != nil {
			return "", fmt.Errorf("vaultkv: reading the metadata of %s/%s: %w", k.cfg.Mount, path, err)
		}
		return "", secret.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("vaultkv: reading the metadata of %s/%s: %w", k.cfg.Mount, path, err)
	}
	if md == nil || md.CurrentVersion == 0 {
		return "", secret.ErrNotFound
	}
	v, ok := md.Versions[strconv.Itoa(md.CurrentVersion)]
	if ok && (v.Destroyed || !v.DeletionTime.IsZero()) {
		return "", secret.ErrNotFound
	}
	return revision(md.CurrentVersion, v.CreatedTime), nil
}

// List returns every alias and truststore with its revision: one LIST
// per folder and one metadata read per secret.
func (k *KV) List(ctx context.Context) (map[secretref.Ref]string, error) {
	out := make(map[secretref.Ref]string)
	keystores, err := k.list(ctx, k.cfg.Prefix+"/keystores")
	if err != nil {
		return nil, err
	}
	for _, ks := range keystores {
		ks, isDir := strings.CutSuffix(ks, "/")
		if !isDir || secretref.CheckName(ks) != nil {
			continue
		}
		aliases, err := k.list(ctx, k.cfg.Prefix+"/keystores/"+ks)
		if err != nil {
			return nil, err
		}
		for _, alias := range aliases {
			if strings.HasSuffix(alias, "/") || secretref.CheckName(alias) != nil {
				continue
			}
			v, err := k.version(ctx, k.aliasPath(ks, alias))
			if errors.Is(err, secret.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			out[secretref.Ref{Keystore: ks, Alias: alias}] = v
		}
	}
	stores, err := k.list(ctx, k.cfg.Prefix+"/truststores")
	if err != nil {
		return nil, err
	}
	for _, name := range stores {
		if strings.HasSuffix(name, "/") || secretref.CheckName(name) != nil {
			continue
		}
		v, err := k.version(ctx, k.truststorePath(name))
		if errors.Is(err, secret.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[secretref.Ref{Truststore: name}] = v
	}
	return out, nil
}

// readVersion returns one version of a secret (0: the current one); a
// version deleted or destroyed does not exist.
func (k *KV) readVersion(ctx context.Context, path string, version int) (map[string]any, secret.Stamp, error) {
	var (
		s   *api.KVSecret
		err error
	)
	if version > 0 {
		s, err = k.kv.GetVersion(ctx, path, version)
	} else {
		s, err = k.kv.Get(ctx, path)
	}
	if errors.Is(err, api.ErrSecretNotFound) {
		if err := k.served(ctx, "GET", k.cfg.Mount+"/metadata/"+path); err != nil {
			return nil, secret.Stamp{}, fmt.Errorf("vaultkv: reading %s/%s: %w", k.cfg.Mount, path, err)
		}
		return nil, secret.Stamp{}, secret.ErrNotFound
	}
	if err != nil {
		return nil, secret.Stamp{}, fmt.Errorf("vaultkv: reading %s/%s: %w", k.cfg.Mount, path, err)
	}
	if s == nil || len(s.Data) == 0 || s.VersionMetadata == nil {
		return nil, secret.Stamp{}, secret.ErrNotFound
	}
	if !s.VersionMetadata.DeletionTime.IsZero() || s.VersionMetadata.Destroyed {
		return nil, secret.Stamp{}, secret.ErrNotFound
	}
	return s.Data, stamp(s.VersionMetadata), nil
}

// str reads a string field; anything else is empty.
func str(data map[string]any, field string) string {
	s, _ := data[field].(string)
	return s
}

// GetAlias reads an alias.
func (k *KV) GetAlias(ctx context.Context, ks, alias string) (*secret.AliasRecord, error) {
	return k.getAlias(ctx, ks, alias, 0)
}

// GetAliasVersion reads an earlier version of an alias.
func (k *KV) GetAliasVersion(ctx context.Context, ks, alias string, version int) (*secret.AliasRecord, error) {
	if version < 1 {
		return nil, secret.ErrNotFound
	}
	return k.getAlias(ctx, ks, alias, version)
}

func (k *KV) getAlias(ctx context.Context, ks, alias string, version int) (*secret.AliasRecord, error) {
	path := k.aliasPath(ks, alias)
	data, st, err := k.readVersion(ctx, path, version)
	if err != nil {
		return nil, err
	}
	rec := &secret.AliasRecord{
		Keystore: ks, Alias: alias, Version: st.Version, Revision: st.Revision, UpdateTime: st.UpdateTime,
		Usage: secret.ParseUsage(str(data, fieldUsage)),
	}
	if role := str(data, fieldPKIRole); role != "" {
		b := &secret.PKIBinding{Role: role, CommonName: str(data, fieldCommonName)}
		for _, n := range strings.Split(str(data, fieldAltNames), ",") {
			if n = strings.TrimSpace(n); n != "" {
				b.AltNames = append(b.AltNames, n)
			}
		}
		if ttl := str(data, fieldTTL); ttl != "" {
			d, err := time.ParseDuration(ttl)
			if err != nil {
				return nil, fmt.Errorf("vaultkv: %s/%s: ttl %q is not a duration such as 1h (%w): %w", k.cfg.Mount, path, ttl, err, secret.ErrInvalidValue)
			}
			b.TTL = d
		}
		rec.PKI = b
	}
	// Missing or damaged fields are the store's to report, under these
	// field names (see Fields), with the rules of a put.
	rec.CertificatePEM = str(data, fieldCertificate)
	rec.Key = secret.NewPrivateKey([]byte(str(data, fieldPrivateKey)))
	return rec, nil
}

// Fields names the KV fields, for messages about stored values ("the
// private_key field does not match the certificate …").
func (k *KV) Fields() secret.Fields {
	return secret.Fields{Certificate: "the " + fieldCertificate + " field", Key: "the " + fieldPrivateKey + " field", Bundle: "the " + fieldCertificates + " field"}
}

// GetTruststore reads a truststore.
func (k *KV) GetTruststore(ctx context.Context, name string) (*secret.TruststoreRecord, error) {
	return k.getTruststore(ctx, name, 0)
}

// GetTruststoreVersion reads an earlier version of a truststore.
func (k *KV) GetTruststoreVersion(ctx context.Context, name string, version int) (*secret.TruststoreRecord, error) {
	if version < 1 {
		return nil, secret.ErrNotFound
	}
	return k.getTruststore(ctx, name, version)
}

func (k *KV) getTruststore(ctx context.Context, name string, version int) (*secret.TruststoreRecord, error) {
	path := k.truststorePath(name)
	data, st, err := k.readVersion(ctx, path, version)
	if err != nil {
		return nil, err
	}
	// An empty or missing field is the store's to report (see GetAlias).
	return &secret.TruststoreRecord{Name: name, Version: st.Version, Revision: st.Revision, CertificatesPEM: str(data, fieldCertificates), UpdateTime: st.UpdateTime}, nil
}

// PutAlias writes a new version of an alias.
func (k *KV) PutAlias(ctx context.Context, rec *secret.AliasRecord) (secret.Stamp, error) {
	return k.put(ctx, k.aliasPath(rec.Keystore, rec.Alias), aliasData(rec))
}

// PutAliasAt writes a new version of an alias only if its current version
// is still version (KV's check-and-set); otherwise it stores nothing and
// returns secret.ErrVersionChanged.
func (k *KV) PutAliasAt(ctx context.Context, rec *secret.AliasRecord, version string) (secret.Stamp, error) {
	v, err := strconv.Atoi(version)
	if err != nil {
		return secret.Stamp{}, fmt.Errorf("vaultkv: version %q of alias %s/%s is not a KV version", version, rec.Keystore, rec.Alias)
	}
	return k.put(ctx, k.aliasPath(rec.Keystore, rec.Alias), aliasData(rec), api.WithCheckAndSet(v))
}

func aliasData(rec *secret.AliasRecord) map[string]any {
	data := map[string]any{fieldUsage: secret.UsageName(rec.Usage)}
	if b := rec.PKI; b != nil {
		data[fieldPKIRole] = b.Role
		data[fieldCommonName] = b.CommonName
		data[fieldAltNames] = strings.Join(b.AltNames, ",")
		if b.TTL > 0 {
			data[fieldTTL] = b.TTL.String()
		}
		if rec.CertificatePEM == "" {
			return data // not issued yet
		}
	}
	data[fieldCertificate] = rec.CertificatePEM
	data[fieldPrivateKey] = string(rec.Key.PEM())
	return data
}

// PutTruststore writes a new version of a truststore.
func (k *KV) PutTruststore(ctx context.Context, rec *secret.TruststoreRecord) (secret.Stamp, error) {
	return k.put(ctx, k.truststorePath(rec.Name), map[string]any{fieldCertificates: rec.CertificatesPEM})
}

func (k *KV) put(ctx context.Context, path string, data map[string]any, opts ...api.KVOption) (secret.Stamp, error) {
	s, err := k.kv.Put(ctx, path, data, opts...)
	var re *api.ResponseError
	if len(opts) > 0 && errors.As(err, &re) && re.StatusCode == 400 && strings.Contains(strings.Join(re.Errors, " "), "check-and-set") {
		return secret.Stamp{}, fmt.Errorf("vaultkv: %s/%s was written since it was read: %w", k.cfg.Mount, path, secret.ErrVersionChanged)
	}
	if err != nil {
		return secret.Stamp{}, k.writeError(path, err)
	}
	if s == nil || s.VersionMetadata == nil {
		return secret.Stamp{}, fmt.Errorf("vaultkv: writing %s/%s: Vault answered without a version", k.cfg.Mount, path)
	}
	return stamp(s.VersionMetadata), nil
}

// writeError says what became of a failed write: certainly not stored
// (Vault unreachable, or its answer an error), or unknown (sent, and no
// answer came in time). The vault/api client does not retry (see
// app.VaultClient), so nothing writes the value later.
func (k *KV) writeError(path string, err error) error {
	var (
		re *api.ResponseError
		op *net.OpError
	)
	switch {
	case errors.As(err, &re):
		return &secret.NotStoredError{Err: fmt.Errorf("Vault at %s refused to write %s/%s (HTTP %d: %s)", k.client.Address(), k.cfg.Mount, path, re.StatusCode, strings.Join(re.Errors, "; "))}
	case errors.As(err, &op) && op.Op == "dial":
		return &secret.NotStoredError{Err: fmt.Errorf("Vault at %s is unreachable (%w)", k.client.Address(), op.Err)}
	}
	return fmt.Errorf("Vault at %s did not answer the write of %s/%s: %w", k.client.Address(), k.cfg.Mount, path, err)
}

func stamp(m *api.KVVersionMetadata) secret.Stamp {
	return secret.Stamp{Version: strconv.Itoa(m.Version), Revision: revision(m.Version, m.CreatedTime), UpdateTime: m.CreatedTime}
}

// DeleteAlias removes an alias with all its versions.
func (k *KV) DeleteAlias(ctx context.Context, ks, alias string) error {
	return k.delete(ctx, k.aliasPath(ks, alias))
}

// DeleteTruststore removes a truststore with all its versions.
func (k *KV) DeleteTruststore(ctx context.Context, name string) error {
	return k.delete(ctx, k.truststorePath(name))
}

func (k *KV) delete(ctx context.Context, path string) error {
	if _, err := k.version(ctx, path); err != nil {
		return err
	}
	if err := k.kv.DeleteMetadata(ctx, path); err != nil {
		return fmt.Errorf("vaultkv: deleting %s/%s: %w", k.cfg.Mount, path, err)
	}
	return nil
}
