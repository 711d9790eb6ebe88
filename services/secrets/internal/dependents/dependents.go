// Package dependents tells which resources of the configuration use an
// alias or a truststore, so that the secrets service refuses to delete a
// secret in use, as the policy service refuses to delete a Service that a
// Route names.
//
// The secrets service does not own the resources: the policy service writes
// them into the configuration bucket (keyway-config) of NATS JetStream KV.
// Each question reads the bucket afresh (one ordered consumer over the
// PolicyBinding and Listener keys, last value per key), rather than from a
// view kept by a watch, so that an answer never lags a write the policy
// service has made: the policy service deletes the keys it moved out of a
// resource only after the resource is stored without them.
//
// What cannot be read is not guessed: an error means the dependents are
// unknown, and the caller refuses the delete. A bucket that does not exist
// holds no resource, so nothing depends on any secret.
package dependents

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
)

// DefaultTimeout bounds one question.
const DefaultTimeout = 5 * time.Second

// maxEntries bounds how many resources one question reads. The policy
// service's own limits keep a configuration far below it; a bucket past it
// is not trusted to have been read whole.
const maxEntries = 100_000

// Dependent is one use of a secret by a resource.
type Dependent struct {
	// Resource is the resource that references the secret.
	Resource model.Ref
	// Field is where, below the resource
	// ("policyBinding.spec.config.certificate").
	Field string
}

// String is "PolicyBinding/orders-mtls (policyBinding.spec.config.certificate)".
func (d Dependent) String() string { return d.Resource.String() + " (" + d.Field + ")" }

// Finder answers which resources use a secret. Safe for concurrent use.
type Finder struct {
	js      jetstream.JetStream
	nc      *nats.Conn
	bucket  string
	timeout time.Duration
}

// New returns a Finder over the configuration bucket named bucket
// (configkv.Bucket when empty), read through js.
func New(js jetstream.JetStream, bucket string) *Finder {
	return &Finder{js: js, nc: js.Conn(), bucket: cmp.Or(bucket, configkv.Bucket), timeout: DefaultTimeout}
}

// Bucket is the configuration bucket read.
func (f *Finder) Bucket() string { return f.bucket }

// Of returns the resources that reference ref, sorted by resource and
// field. A non-nil error means they could not be determined; it says why,
// naming NATS and the bucket.
func (f *Finder) Of(ctx context.Context, ref secretref.Ref) ([]Dependent, error) {
	if !f.nc.IsConnected() {
		return nil, fmt.Errorf("dependents: not connected to NATS: the configuration bucket %s cannot be read", f.bucket)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	kv, err := f.js.KeyValue(ctx, f.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, f.readError(err)
	}
	keys := []string{configkv.KindPrefix(model.KindPolicyBinding) + "*", configkv.KindPrefix(model.KindListener) + "*"}
	w, err := kv.WatchFiltered(ctx, keys, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, f.readError(err)
	}
	defer func() { _ = w.Stop() }()
	var out []Dependent
	for n := 0; ; n++ {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return nil, f.readError(ctx.Err())
		case got, open := <-w.Updates():
			if !open {
				return nil, f.readError(errors.New("the watch closed before the last resource"))
			}
			e = got
		}
		if e == nil {
			break // every current value has been read
		}
		if n >= maxEntries {
			return nil, f.readError(fmt.Errorf("more than %d resources", maxEntries))
		}
		out = append(out, uses(e, ref)...)
	}
	slices.SortFunc(out, func(a, b Dependent) int {
		return cmp.Or(strings.Compare(a.Resource.String(), b.Resource.String()), strings.Compare(a.Field, b.Field))
	})
	return out, nil
}

func (f *Finder) readError(err error) error {
	return fmt.Errorf("dependents: reading the configuration bucket %s in NATS: %w", f.bucket, err)
}

// uses lists the references of the resource stored in e to ref. A value
// that does not decode is the policy service's to refuse: nodes skip it,
// so it uses nothing.
func uses(e jetstream.KeyValueEntry, ref secretref.Ref) []Dependent {
	res, err := configkv.Decode(e.Value(), e.Revision())
	if err != nil {
		return nil
	}
	var out []Dependent
	for _, u := range model.SecretUses(res) {
		switch {
		case ref.Truststore != "" && u.Truststore == ref.Truststore,
			ref.Truststore == "" && u.Alias != nil && u.Alias.Keystore == ref.Keystore && u.Alias.Alias == ref.Alias:
			out = append(out, Dependent{Resource: configkv.RefOf(res), Field: u.Field})
		}
	}
	return out
}
