// Package registry keeps a proxy node's entry in the node bucket (see
// [nodekv]): the node's status is written at start, after every snapshot
// the node publishes (so a rollout is seen as soon as the node serves it,
// not at the next heartbeat), and on every heartbeat, which keeps the key
// younger than the bucket's MaxAge. The certificates the node serves go to
// a key of their own, written before the status when they changed and on
// every heartbeat: a change then writes a status of a few hundred bytes,
// not a list of a thousand certificates. Both keys are deleted on a clean
// stop; a node that dies stops heartbeating and ages out.
package registry

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "keyway.dev/gen/keyway/node/v1"

	"keyway.dev/internal/nodekv"
)

// Options configure [Run].
type Options struct {
	// KV is the node bucket.
	KV jetstream.KeyValue
	// ID is the node id; the key is nodekv.Key(ID).
	ID string
	// Heartbeat is the interval between writes when nothing changes.
	// Default nodekv.DefaultHeartbeat.
	Heartbeat time.Duration
	// Status returns the node's status as of now; Run sets its
	// heartbeat time. Called from Run's goroutine only.
	Status func() *nodev1.NodeStatus
	// Changed returns a channel closed when the status changes (the
	// configuration watcher's next publish).
	Changed func() <-chan struct{}
	// Connected, if set, says whether NATS is reachable: a node that
	// stops while it is not does not wait to delete its key (it ages
	// out instead).
	Connected func() bool
	Logger    *slog.Logger
}

// maxStatusBytes bounds an encoded status, well under NATS's default
// maximum payload (1 MiB): a node with thousands of upstreams lists the
// certificates that fit, and says how many it left out.
const maxStatusBytes = 256 << 10

// fit trims st's certificates until its encoding is at most limit bytes,
// and records the cut as an error of the key "certificates".
func fit(st *nodev1.NodeStatus, limit int) ([]byte, error) {
	b, err := nodekv.Encode(st)
	if err != nil || len(b) <= limit {
		return b, err
	}
	all := st.Certificates
	// The average size of one listed certificate decides the cut.
	per := max(1, (len(b)-proto.Size(&nodev1.NodeStatus{Id: st.Id}))/max(1, len(all)))
	keep := min(len(all), limit/2/per)
	for {
		st.Certificates = all[:keep]
		st.Errors = append(st.Errors[:len(st.Errors):len(st.Errors)], &nodev1.NodeError{
			Key:     "certificates",
			Message: fmt.Sprintf("%d of %d certificates listed: the status would exceed %d bytes", keep, len(all), limit),
			Time:    timestamppb.Now(),
		})
		if b, err = nodekv.Encode(st); err != nil || len(b) <= limit || keep == 0 {
			return b, err
		}
		st.Errors = st.Errors[:len(st.Errors)-1]
		keep /= 2
	}
}

// writeTimeout bounds one write, so that a NATS outage does not hold up
// the next heartbeat.
const writeTimeout = 5 * time.Second

// Run writes the node's status until ctx ends, then deletes its key (with a
// short deadline of its own: ctx has ended by then). Writes that fail are
// logged, once per outage, and retried at the next change or heartbeat.
func Run(ctx context.Context, opts Options) {
	opts.Heartbeat = cmp.Or(opts.Heartbeat, nodekv.DefaultHeartbeat)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, certsKey := nodekv.Key(opts.ID), nodekv.CertsKey(opts.ID)
	failing := false
	var written []byte // the certificates last written
	put := func(key string, b []byte) error {
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		defer cancel()
		_, err := opts.KV.Put(wctx, key, b)
		return err
	}
	write := func(heartbeat bool) {
		st := opts.Status()
		certs := &nodev1.NodeStatus{Id: st.GetId(), Certificates: st.Certificates}
		st.Certificates = nil
		st.HeartbeatTime = timestamppb.Now()
		cb, err := fit(certs, maxStatusBytes)
		if err == nil && (heartbeat || !bytes.Equal(cb, written)) {
			if err = put(certsKey, cb); err == nil {
				written = cb
			}
		}
		var b []byte
		if err == nil {
			b, err = fit(st, maxStatusBytes)
		}
		if err == nil {
			err = put(key, b)
		}
		switch {
		case err != nil && ctx.Err() != nil:
		case err != nil && !failing:
			failing = true
			log.Warn("cannot write the node status; retrying at each change and heartbeat", "bucket", opts.KV.Bucket(), "key", key, "error", err)
		case err == nil && failing:
			failing = false
			log.Info("node status written again", "bucket", opts.KV.Bucket(), "key", key, "revision", st.GetRevision())
		}
	}
	tick := time.NewTicker(opts.Heartbeat)
	defer tick.Stop()
	heartbeat := true
	for {
		changed := opts.Changed()
		write(heartbeat)
		heartbeat = false
		select {
		case <-ctx.Done():
			if opts.Connected != nil && !opts.Connected() {
				log.Warn("NATS is not reachable: the node leaves the node bucket when its key ages out", "key", key)
				return
			}
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
			defer cancel()
			for _, k := range []string{key, certsKey} {
				if err := opts.KV.Delete(dctx, k); err != nil {
					log.Warn("cannot remove the node from the node bucket; it ages out", "key", k, "error", err)
				}
			}
			return
		case <-changed:
		case <-tick.C:
			heartbeat = true
		}
	}
}
