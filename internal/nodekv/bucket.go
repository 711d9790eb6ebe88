package nodekv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/retry"
)

// Open returns the node bucket, creating it with MaxAge ttl when it does not
// exist. An existing bucket keeps its own MaxAge: the first to create it
// decides, so every node and policy replica should be given the same ttl.
// The bucket keeps one revision per key and writes a delete marker when a
// key ages out, so watchers see a dead node go.
func Open(ctx context.Context, js jetstream.JetStream, bucket string, ttl time.Duration) (jetstream.KeyValue, error) {
	return OpenReplicas(ctx, js, bucket, ttl, 1)
}

// OpenReplicas is [Open] creating the bucket with that many replicas in a
// NATS cluster (the policy service and the proxy nodes pass their
// --replicas).
func OpenReplicas(ctx context.Context, js jetstream.JetStream, bucket string, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	if bucket == "" {
		bucket = Bucket
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("nodekv: opening bucket %q: %w", bucket, err)
	}
	kv, err = retry.Provision(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "Keyway proxy nodes: one key per live node, dropped after MaxAge without a heartbeat",
			History:     1,
			TTL:         ttl,
			Storage:     jetstream.FileStorage,
			Replicas:    max(1, replicas),
			// A marker when a key ages out, so that watchers hear of it.
			LimitMarkerTTL: ttl,
		})
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, bucket) // created meanwhile by another node
	}
	if err != nil {
		return nil, fmt.Errorf("nodekv: creating bucket %q: %w", bucket, err)
	}
	return kv, nil
}

// TTL is the bucket's MaxAge: how long a node stays listed after its last
// heartbeat.
func TTL(ctx context.Context, kv jetstream.KeyValue) (time.Duration, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("nodekv: reading the status of bucket %q: %w", kv.Bucket(), err)
	}
	return st.TTL(), nil
}
