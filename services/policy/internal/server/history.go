package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/audit"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/policy/internal/store"
)

// WithAudit has ListAudit read the audit trail w writes. The store records
// writes through [Journal].
func WithAudit(w *audit.Writer) Option {
	return func(s *Server) { s.audit = w }
}

// Journal is the store's audit trail: every write the store makes is
// recorded in w, an attempt record before it (no record, no write) and an
// outcome record after.
func Journal(w *audit.Writer) store.Journal { return journal{w} }

type journal struct{ w *audit.Writer }

type callKey struct{}

// call is the action a write serves and the ID its records share.
type call struct{ action, id string }

// auditCall marks ctx as the context of one write RPC from peer.
func auditCall(ctx context.Context, action, peer string) context.Context {
	return context.WithValue(audit.WithPeer(ctx, peer), callKey{}, call{action, audit.NewID()})
}

func (j journal) records(ctx context.Context, changes []store.Change) []audit.Record {
	c, ok := ctx.Value(callKey{}).(call)
	if !ok {
		c = call{id: audit.NewID()}
	}
	actor := audit.ActorFrom(ctx)
	var traceID string
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		traceID = sc.TraceID().String()
	}
	recs := make([]audit.Record, len(changes))
	for i, ch := range changes {
		action := c.action
		if action == "" {
			action = audit.ActionApply
			if ch.Delete {
				action = audit.ActionDelete
			}
		}
		recs[i] = audit.Record{
			ID: c.id, Actor: actor, Action: action, Kind: ch.Ref.Kind, Name: ch.Ref.Name,
			Revision: ch.Revision, Digest: ch.Digest, TraceID: traceID,
		}
	}
	return recs
}

func (j journal) Before(ctx context.Context, changes []store.Change) error {
	return j.w.Attempt(ctx, j.records(ctx, changes)...)
}

func (j journal) After(ctx context.Context, changes []store.Change, err error) {
	recs := j.records(ctx, changes)
	for i := range recs {
		recs[i].Result = audit.ResultOK
		if err != nil {
			recs[i].Result, recs[i].Error = audit.ResultFailed, err.Error()
		}
	}
	j.w.Outcome(ctx, recs...)
}

// History lists the revisions of a resource the bucket keeps, newest
// first, private keys redacted as Get redacts them.
func (s *Server) History(ctx context.Context, req *connect.Request[policyv1.HistoryRequest]) (*connect.Response[policyv1.HistoryResponse], error) {
	ref, err := refOf(req.Msg.GetKind(), req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	revs, err := s.store.History(ctx, ref)
	if err != nil {
		return nil, storeError(err)
	}
	resp := &policyv1.HistoryResponse{Revisions: make([]*policyv1.Revision, len(revs))}
	for i, r := range revs {
		out := &policyv1.Revision{Revision: r.Revision, CreateTime: timestamppb.New(r.Created), Digest: r.Digest, Operation: policyv1.Operation_OPERATION_PUT}
		if r.Delete {
			out.Operation = policyv1.Operation_OPERATION_DELETE
		}
		if r.Resource != nil {
			out.Resource = redact(r.Resource)
		}
		resp.Revisions[i] = out
	}
	return connect.NewResponse(resp), nil
}

// Rollback stores an earlier revision of a resource again, through Apply's
// validation, as a new revision.
func (s *Server) Rollback(ctx context.Context, req *connect.Request[policyv1.RollbackRequest]) (*connect.Response[policyv1.RollbackResponse], error) {
	ref, err := refOf(req.Msg.GetKind(), req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	to := req.Msg.GetToRevision()
	if to == 0 {
		return nil, invalid([]model.Violation{{Field: "to_revision", Message: fmt.Sprintf("no revision given; `keywayctl history %s %s` lists the revisions kept", ref.Kind, ref.Name)}})
	}
	rev, err := s.store.At(ctx, ref, to)
	if err != nil {
		return nil, storeError(err)
	}
	switch {
	case rev.Delete:
		return nil, invalid([]model.Violation{{Field: "to_revision", Message: fmt.Sprintf("revision %d deleted %s: there is nothing to restore; delete it instead, or pick a revision that stored it", to, ref)}})
	case rev.Resource == nil:
		return nil, invalid([]model.Violation{{Field: "to_revision", Message: fmt.Sprintf("revision %d of %s does not decode; pick another revision", to, ref)}})
	}
	res := proto.CloneOf(rev.Resource)
	md := configkv.Metadata(res)
	md.Revision, md.UpdateTime = 0, nil
	start := time.Now()
	ctx = auditCall(ctx, audit.ActionRollback, req.Peer().Addr)
	applied, err := s.store1(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{res}, DryRun: req.Msg.GetDryRun()}))
	result := Applied
	if err != nil {
		result = Error
		var ce *connect.Error
		if errors.As(err, &ce) {
			switch ce.Code() {
			case connect.CodeInvalidArgument:
				result = Refused
			case connect.CodeAborted:
				result = Conflict
			}
			// Say which revision no longer validates, and keep the
			// field violations.
			out := connect.NewError(ce.Code(), fmt.Errorf("rollback of %s to revision %d refused: %s", ref, to, ce.Message()))
			for _, d := range ce.Details() {
				out.AddDetail(d)
			}
			err = out
		}
	}
	s.obs.ObserveApply(result, req.Msg.GetDryRun(), time.Since(start))
	if err != nil {
		return nil, err
	}
	r := applied.Msg.GetResults()[0]
	if r.GetAction() != policyv1.Action_ACTION_UNCHANGED && !req.Msg.GetDryRun() {
		s.log.Info("rolled back", "resource", ref.String(), "to_revision", to, "revision", r.GetRevision())
	}
	return connect.NewResponse(&policyv1.RollbackResponse{Result: r}), nil
}

// Bounds of ListAudit.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

// ListAudit returns the newest records of the audit trail, oldest first.
func (s *Server) ListAudit(ctx context.Context, req *connect.Request[policyv1.ListAuditRequest]) (*connect.Response[policyv1.ListAuditResponse], error) {
	if s.audit == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("this policy service writes no audit trail; read the keyway-audit stream with the nats CLI"))
	}
	limit := int(req.Msg.GetLimit())
	switch {
	case limit == 0:
		limit = defaultAuditLimit
	case limit > maxAuditLimit:
		return nil, invalid([]model.Violation{{Field: "limit", Message: fmt.Sprintf("%d records asked for; ask for at most %d, and narrow with since", limit, maxAuditLimit)}})
	}
	var since time.Time
	if t := req.Msg.GetSince(); t != nil {
		since = t.AsTime()
	}
	entries, err := s.audit.Read(ctx, since, limit)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	resp := &policyv1.ListAuditResponse{Records: make([]*policyv1.AuditRecord, len(entries))}
	for i, e := range entries {
		r := e.Record
		resp.Records[i] = &policyv1.AuditRecord{
			Time: timestamppb.New(r.Time), ActorIdentity: r.Actor.Identity, ActorMethod: r.Actor.Method, ActorAddress: r.Actor.Addr,
			Service: r.Service, Action: r.Action, Kind: r.Kind, Name: r.Name, Revision: r.Revision, Digest: r.Digest,
			Result: r.Result, Error: r.Error, Id: r.ID, TraceId: r.TraceID, Sequence: e.Sequence, Version: r.Version,
		}
	}
	return connect.NewResponse(resp), nil
}
