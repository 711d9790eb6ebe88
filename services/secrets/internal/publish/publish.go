// Package publish writes SecretVersions into the NATS JetStream KV bucket
// keyway-secret-versions (see [secretref.Bucket]): one key per secret, a delete
// marker when a secret is deleted. Values never carry key material; they are
// built from [secretsv1.SecretVersion], which has no field for it.
package publish

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/retry"

	"keyway.dev/internal/secretref"
)

// Bucket is the versions bucket. Safe for concurrent use.
type Bucket struct {
	kv jetstream.KeyValue
	nc *nats.Conn
}

// ErrDisconnected is returned while the NATS connection is down: a write
// fails at once instead of waiting for its timeout.
var ErrDisconnected = errors.New("publish: not connected to NATS")

// Open creates (or opens) the bucket.
func Open(ctx context.Context, js jetstream.JetStream, name string, replicas int) (*Bucket, error) {
	if name == "" {
		name = secretref.Bucket
	}
	kv, err := retry.Provision(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      name,
			Description: "Keyway secret versions: references, versions and fingerprints, never keys",
			History:     5,
			Replicas:    replicas,
			Storage:     jetstream.FileStorage,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("publish: opening bucket %q: %w", name, err)
	}
	return &Bucket{kv: kv, nc: js.Conn()}, nil
}

// Put stores value under key unless the bucket holds it already.
func (b *Bucket) Put(ctx context.Context, key string, value []byte) error {
	if !b.nc.IsConnected() {
		return ErrDisconnected
	}
	if e, err := b.kv.Get(ctx, key); err == nil && string(e.Value()) == string(value) {
		return nil
	}
	if _, err := b.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("publish: putting %s: %w", key, err)
	}
	return nil
}

// Delete puts a delete marker on key.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if !b.nc.IsConnected() {
		return ErrDisconnected
	}
	if err := b.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("publish: deleting %s: %w", key, err)
	}
	return nil
}

// Keys lists the live keys of the bucket.
func (b *Bucket) Keys(ctx context.Context) ([]string, error) {
	keys, err := b.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("publish: listing keys: %w", err)
	}
	var out []string
	for k := range keys.Keys() {
		out = append(out, k)
	}
	return out, nil
}
