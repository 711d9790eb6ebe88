// Package secretsclient is what a consumer of the secrets service needs: an
// mTLS client for MaterialService (the internal port that hands out key
// material), and the layout of the NATS KV bucket in which the service
// publishes a [secretsv1.SecretVersion] whenever a secret changes.
//
// The bucket carries references, versions and fingerprints, never key
// material: a consumer watches it, and when the version of a secret it uses
// changes, fetches the material over MaterialService.
package secretsclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/internal/limits"
)

// Bucket is the NATS JetStream KV bucket in which the secrets service
// publishes one [secretsv1.SecretVersion] per secret.
const Bucket = "keyway-secret-versions"

// DefaultInternalURL is MaterialService's address in the local stack.
const DefaultInternalURL = "https://127.0.0.1:8092"

// Key prefixes of the bucket: aliases are "alias.<keystore>.<alias>",
// truststores "truststore.<name>".
const (
	AliasPrefix      = "alias."
	TruststorePrefix = "truststore."
)

// maxNameLen bounds keystore, alias and truststore names.
const maxNameLen = limits.SecretNameBytes

// NameRule says what a keystore, alias or truststore name may hold.
const NameRule = "names are letters, digits, hyphens and underscores, at most 64 characters"

// CheckName reports what is wrong with a keystore, alias or truststore
// name, or nil. Names become bucket key tokens and Vault path segments, so
// dots and slashes are refused.
func CheckName(name string) error {
	if name == "" {
		return errors.New("is empty; " + NameRule)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%s is %d characters long; %s", limits.Quote(name), len(name), NameRule)
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return fmt.Errorf("%s holds %q; %s", limits.Quote(name), r, NameRule)
		}
	}
	return nil
}

// AliasKey is the bucket key of an alias of a keystore.
func AliasKey(keystore, alias string) string {
	return AliasPrefix + keystore + "." + alias
}

// TruststoreKey is the bucket key of a truststore.
func TruststoreKey(name string) string {
	return TruststorePrefix + name
}

// Ref names a secret: a keystore and alias, or a truststore.
type Ref struct {
	Keystore   string
	Alias      string
	Truststore string
}

// String is the reference as people read it: "keystore/alias" or
// "truststore/name".
func (r Ref) String() string {
	if r.Truststore != "" {
		return "truststore/" + r.Truststore
	}
	return r.Keystore + "/" + r.Alias
}

// Key is the reference's bucket key.
func (r Ref) Key() string {
	if r.Truststore != "" {
		return TruststoreKey(r.Truststore)
	}
	return AliasKey(r.Keystore, r.Alias)
}

// ParseKey is the inverse of [AliasKey] and [TruststoreKey].
func ParseKey(key string) (Ref, error) {
	if rest, ok := strings.CutPrefix(key, AliasPrefix); ok {
		ks, alias, ok := strings.Cut(rest, ".")
		if ok && CheckName(ks) == nil && CheckName(alias) == nil {
			return Ref{Keystore: ks, Alias: alias}, nil
		}
	}
	if name, ok := strings.CutPrefix(key, TruststorePrefix); ok && CheckName(name) == nil {
		return Ref{Truststore: name}, nil
	}
	return Ref{}, fmt.Errorf("secretsclient: key %q is neither alias.<keystore>.<alias> nor truststore.<name>", key)
}

// RefOf names the secret a SecretVersion describes.
func RefOf(v *secretsv1.SecretVersion) Ref {
	return Ref{Keystore: v.GetKeystore(), Alias: v.GetAlias(), Truststore: v.GetTruststore()}
}

// Encode is the bucket value of a SecretVersion: its protobuf encoding.
func Encode(v *secretsv1.SecretVersion) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("secretsclient: encoding the version of %s: %w", RefOf(v), err)
	}
	return b, nil
}

// Decode reads a bucket value. A delete marker has no value; check the
// entry's operation before decoding.
func Decode(value []byte) (*secretsv1.SecretVersion, error) {
	var v secretsv1.SecretVersion
	if err := proto.Unmarshal(value, &v); err != nil {
		return nil, fmt.Errorf("secretsclient: decoding a secret version: %w", err)
	}
	if (v.GetTruststore() == "") == (v.GetKeystore() == "" || v.GetAlias() == "") {
		return nil, errors.New("secretsclient: secret version names neither one alias nor one truststore")
	}
	return &v, nil
}

// Files are the PEM files of a MaterialService client: its certificate
// (issued to a proxy node by the internal CA) and key, and the CA that
// issued the secrets service's internal certificate.
type Files struct {
	Cert string
	Key  string
	CA   string
}

// TLSConfig loads the files into a client tls.Config (TLS 1.3, HTTP/2 by
// ALPN).
func TLSConfig(f Files) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, errors.New("secretsclient: a client certificate, its key and the internal CA are all required")
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("secretsclient: loading the client certificate %s and key %s: %w", f.Cert, f.Key, err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("secretsclient: reading the internal CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("secretsclient: %s holds no PEM certificate", f.CA)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		Certificates: []tls.Certificate{pair},
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// HTTPClient is an HTTP client that speaks TLS with tlsConf (HTTP/2 when
// the server offers it).
func HTTPClient(tlsConf *tls.Config) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConf.Clone()
	transport.ForceAttemptHTTP2 = true
	transport.TLSHandshakeTimeout = 10 * time.Second
	return &http.Client{Transport: transport}
}

// New returns a MaterialService client for baseURL ("https://host:port")
// over mTLS with tlsConf.
func New(baseURL string, tlsConf *tls.Config, opts ...connect.ClientOption) secretsv1connect.MaterialServiceClient {
	return secretsv1connect.NewMaterialServiceClient(HTTPClient(tlsConf), strings.TrimSuffix(baseURL, "/"), opts...)
}

// NewFromFiles is [New] with the TLS configuration loaded from files.
func NewFromFiles(baseURL string, f Files, opts ...connect.ClientOption) (secretsv1connect.MaterialServiceClient, error) {
	tlsConf, err := TLSConfig(f)
	if err != nil {
		return nil, err
	}
	return New(baseURL, tlsConf, opts...), nil
}
