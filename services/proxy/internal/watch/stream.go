package watch

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of JetStream atomic batches (nats-server 2.12 and later): every
// message of a batch carries its id, and the last also the commit marker.
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchCommit = "Nats-Batch-Commit"
)

// entry is a bucket entry as the watcher reads it: what
// jetstream.KeyValueEntry says, and the message's headers, which it does not
// carry (the batch an entry belongs to, the writer's trace context).
type entry struct {
	bucket, key string
	value       []byte
	rev         uint64
	created     time.Time
	delta       uint64
	op          jetstream.KeyValueOp
	header      nats.Header
}

func (e *entry) Bucket() string                  { return e.bucket }
func (e *entry) Key() string                     { return e.key }
func (e *entry) Value() []byte                   { return e.value }
func (e *entry) Revision() uint64                { return e.rev }
func (e *entry) Created() time.Time              { return e.created }
func (e *entry) Delta() uint64                   { return e.delta }
func (e *entry) Operation() jetstream.KeyValueOp { return e.op }

// Header returns the headers of the entry's message.
func (e *entry) Header() nats.Header { return e.header }

// headerOf returns e's message headers, or nil when e carries none.
func headerOf(e jetstream.KeyValueEntry) nats.Header {
	if h, ok := e.(interface{ Header() nats.Header }); ok {
		return h.Header()
	}
	return nil
}

// streamWatcher is a watch of a bucket that keeps message headers: the same
// ordered push consumer jetstream.KeyValue.WatchAll creates (so it needs the
// same NATS permissions, and survives a reconnect the same way), whose
// messages are turned into entries here. Like the KV watcher, it sends a nil
// entry once the values present when it started are delivered.
type streamWatcher struct {
	sub     *nats.Subscription
	updates chan jetstream.KeyValueEntry
	// done is closed by Stop: a callback blocked on updates gives up.
	done     chan struct{}
	stopOnce sync.Once

	mu          sync.Mutex
	initDone    bool
	initPending uint64
	received    uint64
}

func (s *streamWatcher) Updates() <-chan jetstream.KeyValueEntry { return s.updates }

func (s *streamWatcher) Stop() error {
	s.stopOnce.Do(func() { close(s.done) })
	return s.sub.Unsubscribe()
}

// heartbeat is how often the server sends the watch's consumer an idle
// heartbeat when the bucket does not change. The client restarts the
// consumer after two intervals without a message (nats.go's threshold), so
// a node whose consumer sat on a server that died follows the bucket again
// within 2–4 s instead of the 10–20 s of nats.go's default of 5 s. The cost
// is one ~100-byte message a second per node while the bucket is idle.
const heartbeat = time.Second

// requestWait bounds each JetStream API call of the watch: creating its
// consumer, and deleting the one a restarted watch leaves. While the
// cluster has no meta leader (its server just died) such a call goes
// unanswered; nats.go's default of 5 s per call held a restart for 10 s,
// where this lets the watch retry, with the Run loop's backoff, as soon as
// a leader is elected. A healthy cluster answers in milliseconds.
const requestWait = 2 * time.Second

// watchBucket watches every key of the bucket kv: the last value of each,
// then changes; or, with resumeFrom > 0, every entry from that revision on.
// As the KV watcher does, it sends a nil entry once the entries pending at
// the start are delivered.
func watchBucket(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, resumeFrom uint64) (*streamWatcher, error) {
	bucket := kv.Bucket()
	prefix := "$KV." + bucket + "."
	legacy, err := js.Conn().JetStream(nats.MaxWait(requestWait))
	if err != nil {
		return nil, fmt.Errorf("config: watching bucket %q: %w", bucket, err)
	}
	// The consumer's callback blocks on a full channel, as the KV
	// watcher's does: flow control then holds the server back.
	w := &streamWatcher{updates: make(chan jetstream.KeyValueEntry, 256), done: make(chan struct{})}
	update := func(m *nats.Msg) {
		meta, err := m.Metadata()
		if err != nil || !strings.HasPrefix(m.Subject, prefix) || len(m.Subject) == len(prefix) {
			return
		}
		e := &entry{
			bucket: bucket, key: m.Subject[len(prefix):], value: m.Data,
			rev: meta.Sequence.Stream, created: meta.Timestamp, delta: meta.NumPending,
			op: operation(m.Header), header: m.Header,
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		select {
		case w.updates <- e:
		case <-ctx.Done():
			return
		case <-w.done:
			return
		}
		if !w.initDone {
			w.received++
			if w.received >= w.initPending || meta.NumPending == 0 {
				w.initDone = true
				select {
				case w.updates <- nil:
				case <-ctx.Done():
				case <-w.done:
				}
			}
		}
	}
	opts := []nats.SubOpt{nats.BindStream("KV_" + bucket), nats.OrderedConsumer(), nats.IdleHeartbeat(heartbeat), nats.Context(ctx)}
	if resumeFrom > 0 {
		opts = append(opts, nats.StartSequence(resumeFrom))
	} else {
		opts = append(opts, nats.DeliverLastPerSubject())
	}
	// Under the lock: the callback must not run before initPending is set.
	w.mu.Lock()
	defer w.mu.Unlock()
	sub, err := legacy.Subscribe(prefix+">", update, opts...)
	if err != nil {
		return nil, fmt.Errorf("config: watching bucket %q: %w", bucket, err)
	}
	w.sub = sub
	pending, err := sub.InitialConsumerPending()
	if err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("config: watching bucket %q: %w", bucket, err)
	}
	if pending == 0 {
		w.initDone = true
		w.updates <- nil // the channel is empty: this does not block
	}
	w.initPending = pending
	return w, nil
}

// operation is what a KV message does to its key, read as the KV watcher
// reads it.
func operation(h nats.Header) jetstream.KeyValueOp {
	switch h.Get("KV-Operation") {
	case "DEL":
		return jetstream.KeyValueDelete
	case "PURGE":
		return jetstream.KeyValuePurge
	}
	switch h.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge", "Purge":
		return jetstream.KeyValuePurge
	case "Remove":
		return jetstream.KeyValueDelete
	}
	return jetstream.KeyValuePut
}

// batchOf returns the atomic batch e belongs to ("" if none) and whether e
// commits it.
func batchOf(e jetstream.KeyValueEntry) (id string, commit bool) {
	h := headerOf(e)
	if h == nil {
		return "", false
	}
	return h.Get(headerBatchID), h.Get(headerBatchCommit) != ""
}
