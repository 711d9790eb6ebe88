package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/telemetry"
)

// write is one message of an apply's batch: a resource's new value and the
// revision its key was checked at.
type write struct {
	out          *Outcome // Revision is set once the batch is stored
	res          *policyv1.Resource
	value        []byte
	lastRevision uint64
}

// allowAtomicPublish turns on atomic batch publish (nats-server 2.12 and
// later) on the bucket's stream. A KV bucket is created without it, and
// CreateOrUpdateKeyValue rewrites the stream's whole configuration, turning
// it off again, so Open sets it each time. (Meanwhile another policy
// replica's apply is refused by the server, whole: nothing is stored.)
func allowAtomicPublish(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream) error {
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("store: reading the configuration of stream %q: %w", stream.CachedInfo().Config.Name, err)
	}
	if info.Config.AllowAtomicPublish {
		return nil
	}
	cfg := info.Config
	cfg.AllowAtomicPublish = true
	updated, err := js.UpdateStream(ctx, cfg)
	if err == nil && !updated.CachedInfo().Config.AllowAtomicPublish {
		err = errors.New("the server ignored allow_atomic")
	}
	if err != nil {
		return fmt.Errorf("store: allowing atomic batch publish on stream %q (applies of several resources are written as one batch; this needs nats-server 2.12 or later, and the policy user may call $JS.API.STREAM.UPDATE.%s): %w", cfg.Name, cfg.Name, err)
	}
	return nil
}

// publishBatch writes ws as one atomic batch and sets each one's revision.
// Each message is guarded by the revision its key was checked at. On a
// conflict, or on any error after which the batch is known not to be
// stored, nothing is stored; an ack lost in transit is resolved by reading
// the keys back.
//
// One message is atomic by itself and is published plainly: on one server
// the server stages an atomic batch in a file store of its own, synced to
// disk, which costs a single-resource apply ten times its latency.
func (s *Store) publishBatch(ctx context.Context, ws []write) (err error) {
	if len(ws) == 1 {
		w := ws[0]
		var rev uint64
		unanswered, err := s.attempts(ctx, refs(ws), func(actx context.Context) (err error) {
			rev, err = s.publish(actx, w.out.Ref, w.value, w.lastRevision, false)
			return err
		})
		var apiErr *jetstream.APIError
		if err != nil && (unanswered || !errors.Is(err, ErrConflict) && !errors.As(err, &apiErr)) {
			return s.resolveLostAck(context.WithoutCancel(ctx), ws, err)
		}
		w.out.Revision = rev
		return err
	}
	msgs := make([]*nats.Msg, len(ws))
	spans := make([]trace.Span, len(ws))
	for i, w := range ws {
		msg := nats.NewMsg(s.prefix + configkv.Key(w.out.Ref))
		msg.Data = w.value
		msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.lastRevision, 10))
		if s.tr.On() {
			var sctx context.Context
			sctx, spans[i] = s.tr.Tracer.Start(ctx, telemetry.SpanStorePut, trace.WithSpanKind(trace.SpanKindProducer),
				trace.WithAttributes(
					telemetry.AttrConfigKey.String(configkv.Key(w.out.Ref)),
					telemetry.AttrConfigOperation.String("put"),
					telemetry.AttrMessagingSystem.String("nats"),
					telemetry.AttrMessagingDestination.String(msg.Subject),
				))
			// The proxy nodes continue the trace from the message's headers.
			s.tr.InjectNATS(sctx, msg)
		}
		msgs[i] = msg
	}
	defer func() {
		for i, span := range spans {
			if span == nil {
				continue
			}
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			} else {
				span.SetAttributes(telemetry.AttrConfigRevision.Int64(int64(ws[i].out.Revision)))
			}
			span.End()
		}
	}()
	var ack *jetstreamext.BatchAck
	unanswered, err := s.attempts(ctx, refs(ws), func(actx context.Context) (err error) {
		ack, err = jetstreamext.PublishMsgBatch(actx, s.js, msgs)
		return err
	})
	if err == nil {
		// The server stores a batch's messages at consecutive sequences,
		// in order, and acknowledges the last.
		if ack.BatchSize != uint64(len(ws)) || ack.Sequence < uint64(len(ws)) {
			return fmt.Errorf("store: the server acknowledged a batch of %d messages ending at %d for %d resources; get them to see what is stored", ack.BatchSize, ack.Sequence, len(ws))
		}
		first := ack.Sequence - uint64(len(ws)) + 1
		for i := range ws {
			ws[i].out.Revision = first + uint64(i)
		}
		return nil
	}
	var apiErr *jetstream.APIError
	if !unanswered && errors.As(err, &apiErr) {
		if apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant {
			return s.batchConflict(ctx, ws)
		}
		// The server refused the batch: it stored none of it.
		return fmt.Errorf("store: writing %s: %w; nothing was stored", refs(ws), err)
	}
	// No answer (a timeout, a lost connection): the batch is stored whole
	// or not at all, and the keys say which.
	return s.resolveLostAck(context.WithoutCancel(ctx), ws, err)
}

// AttemptTimeout bounds one publish to the configuration stream. A
// publish sent while the stream elects a new leader (the server of the old
// one died) is answered by no one; sent again after this long it reaches
// the new leader, so an apply waits about as long as the election, not
// its caller's whole deadline.
const AttemptTimeout = 2 * time.Second

// attempts runs publish with [AttemptTimeout] each time until it is
// answered or ctx ends. unanswered reports whether an attempt went
// unanswered: it may have been stored all the same, so a conflict on a
// later attempt may be that attempt's own write, which the caller tells
// apart by reading the keys (resolveLostAck).
func (s *Store) attempts(ctx context.Context, what string, publish func(context.Context) error) (unanswered bool, err error) {
	for {
		actx, cancel := context.WithTimeout(ctx, AttemptTimeout)
		err = publish(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !isUnanswered(err) {
			return unanswered, err
		}
		unanswered = true
		s.log.Warn("no answer from the configuration stream; sending the write again", "resources", what, "error", err)
	}
}

// isUnanswered reports whether a publish ended without the stream's
// answer: it timed out, or no server took it.
func isUnanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// batchConflict names the resources whose stored revision moved since they
// were checked.
func (s *Store) batchConflict(ctx context.Context, ws []write) error {
	var moved []string
	for _, w := range ws {
		cur, err := s.current(context.WithoutCancel(ctx), w.out.Ref)
		if err != nil || cur.revision != w.lastRevision {
			moved = append(moved, w.out.Ref.String())
		}
	}
	if len(moved) == 0 {
		moved = []string{refs(ws)}
	}
	return conflict("%s changed while this apply was in progress; nothing was applied: re-apply", strings.Join(moved, ", "))
}

// resolveLostAck reads the keys of a batch whose acknowledgement did not
// come: all of them hold the batch (it was stored: their revisions are set
// and nil is returned), or none does (nothing was stored).
func (s *Store) resolveLostAck(ctx context.Context, ws []write, cause error) error {
	stored := 0
	revs := make([]uint64, len(ws))
	for i, w := range ws {
		cur, err := s.current(ctx, w.out.Ref)
		if err != nil {
			return fmt.Errorf("store: writing %s: %w; whether it was stored could not be read back (%w): get the resources and re-apply", refs(ws), cause, err)
		}
		if cur.revision != w.lastRevision && cur.res != nil && configkv.SameContent(cur.res, w.res) {
			stored++
			revs[i] = cur.revision
		}
	}
	switch stored {
	case len(ws):
		for i := range ws {
			ws[i].out.Revision = revs[i]
		}
		s.log.Warn("apply acknowledgement lost; the keys show it was stored", "resources", len(ws), "error", cause)
		return nil
	case 0:
		return fmt.Errorf("store: writing %s: %w; nothing was stored: retry", refs(ws), cause)
	}
	return fmt.Errorf("store: writing %s: %w; another writer changed some of them meanwhile: get the resources and re-apply", refs(ws), cause)
}

// refs lists the resources of a batch for a message.
func refs(ws []write) string {
	names := make([]string, len(ws))
	for i, w := range ws {
		names[i] = w.out.Ref.String()
	}
	return strings.Join(names, ", ")
}
