package secretref

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
)

// Bucket is the NATS JetStream KV bucket in which the secrets service
// publishes one [secretsv1.SecretVersion] per secret, whenever a secret
// changes. It carries references, versions and fingerprints, never key
// material: a consumer watches it, and when the version of a secret it uses
// changes, fetches the material from MaterialService (package material).
const Bucket = "keyway-secret-versions"

// Key prefixes of the bucket: aliases are "alias.<keystore>.<alias>",
// truststores "truststore.<name>". Keys are stored data: they do not
// change.
const (
	AliasPrefix      = "alias."
	TruststorePrefix = "truststore."
)

// AliasKey is the bucket key of an alias of a keystore.
func AliasKey(keystore, alias string) string {
	return AliasPrefix + keystore + "." + alias
}

// TruststoreKey is the bucket key of a truststore.
func TruststoreKey(name string) string {
	return TruststorePrefix + name
}

// Key is the reference's bucket key.
func (r Ref) Key() string {
	if r.Truststore != "" {
		return TruststoreKey(r.Truststore)
	}
	return AliasKey(r.Keystore, r.Alias)
}

// ParseKey is the inverse of [Ref.Key].
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
	return Ref{}, fmt.Errorf("secretref: key %q is neither alias.<keystore>.<alias> nor truststore.<name>", key)
}

// Of names the secret a SecretVersion describes.
func Of(v *secretsv1.SecretVersion) Ref {
	return Ref{Keystore: v.GetKeystore(), Alias: v.GetAlias(), Truststore: v.GetTruststore()}
}

// EncodeVersion is the bucket value of a SecretVersion: its protobuf
// encoding.
func EncodeVersion(v *secretsv1.SecretVersion) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("secretref: encoding the version of %s: %w", Of(v), err)
	}
	return b, nil
}

// DecodeVersion reads a bucket value. A delete marker has no value; check
// the entry's operation before decoding.
func DecodeVersion(value []byte) (*secretsv1.SecretVersion, error) {
	var v secretsv1.SecretVersion
	if err := proto.Unmarshal(value, &v); err != nil {
		return nil, fmt.Errorf("secretref: decoding a secret version: %w", err)
	}
	if (v.GetTruststore() == "") == (v.GetKeystore() == "" || v.GetAlias() == "") {
		return nil, errors.New("secretref: secret version names neither one alias nor one truststore")
	}
	return &v, nil
}
