// Package server is the RPC boundary of the policy service: it implements
// keyway.policy.v1.PolicyService over the store, and turns validation reports
// and store errors into Connect errors whose message and details tell the
// caller what to change.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/audit"
	"keyway.dev/internal/certs"
	"keyway.dev/internal/failure"
	"keyway.dev/internal/limits"
	"keyway.dev/internal/material"
	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
	"keyway.dev/policy/internal/inlinekeys"
	"keyway.dev/policy/internal/nodes"
	"keyway.dev/policy/internal/probelog"
	"keyway.dev/policy/internal/store"
)

// maxResources bounds one Apply request.
const maxResources = 1000

// Server implements [policyv1connect.PolicyServiceHandler].
// ViewWait bounds how long an Apply waits for this replica's view to show
// what it wrote (read-your-writes); past it the answer says the view lags.
const ViewWait = 2 * time.Second

type Server struct {
	store *store.Store
	nodes *nodes.View
	log   *slog.Logger
	now   func() time.Time
	// tracer traces the live probe's handshakes; nil: not traced.
	tracer trace.Tracer

	// writes serialises validate-then-write in Apply and Delete, so that
	// checks spanning resources (a binding's target exists; a deleted
	// Service has no dependents) hold when the write lands. Only the keys
	// written are revision-guarded in the store; across several policy
	// replicas the guard is per key. The live probe runs outside it: an
	// Apply validates, releases it while it probes, and takes it again to
	// write, validating again if anything was written meanwhile.
	writes sync.Mutex

	obs Observer

	// secrets answers validation's questions about references; nil when
	// no secrets service is configured (references are then refused).
	secrets secretref.Secrets
	// material fetches referenced key material for the live probe; nil
	// when the internal port is not configured (such bindings are not
	// probed, with a warning).
	material Material
	// keys holds the key pairs moved out of resources at apply; nil: inline
	// private keys are refused.
	keys KeyStore
	// probeLimit is each caller's budget of probe handshakes.
	probeLimit *probeLimiter
	// probeTimeout and probeDeadline bound the live probe of one endpoint
	// and of one Apply ([WithProbeBounds]).
	probeTimeout, probeDeadline time.Duration
	// audit is the audit trail ListAudit reads; nil: none.
	audit *audit.Writer
	// probes keeps each binding's last probe for the console; nil: not
	// kept.
	probes *probelog.Log
}

// Material fetches key material from the secrets service's
// MaterialService ([material.Client]). Safe for concurrent use.
type Material interface {
	Alias(ctx context.Context, ref secretref.Ref) (*material.Alias, error)
	Truststore(ctx context.Context, name string) (*material.Truststore, error)
}

// Option configures a Server.
type Option func(*Server)

// WithSecrets has Apply check references through secrets, and the live
// probe resolve them through mat (either may be nil).
func WithSecrets(secrets secretref.Secrets, mat Material) Option {
	return func(s *Server) {
		s.secrets = secrets
		if mat != nil {
			s.material = mat
		}
	}
}

// Observer is told how each Apply and each live probe ended: the
// service's metrics. Its methods must be safe for concurrent use.
type Observer interface {
	// ObserveApply reports one Apply request.
	ObserveApply(result ApplyResult, dryRun bool, elapsed time.Duration)
	// ObserveProbe reports one probe handshake with an endpoint; reason
	// is "" when it succeeded.
	ObserveProbe(reason failure.Reason)
}

// ApplyResult is how an Apply request ended.
type ApplyResult string

// The results of Apply.
const (
	// Applied: stored, or valid for a dry run.
	Applied ApplyResult = "applied"
	// Refused: invalid resources or a failed live probe (InvalidArgument).
	Refused ApplyResult = "refused"
	// Conflict: a revision mismatch or a racing write (Aborted).
	Conflict ApplyResult = "conflict"
	// Error: anything else (the store unavailable, a deadline).
	Error ApplyResult = "error"
)

type discardObserver struct{}

func (discardObserver) ObserveApply(ApplyResult, bool, time.Duration) {}
func (discardObserver) ObserveProbe(failure.Reason)                   {}

var _ policyv1connect.PolicyServiceHandler = (*Server)(nil)

// New returns a Server over st and the node view nv; obs (may be nil) is
// told how applies and probes end.
func New(st *store.Store, nv *nodes.View, log *slog.Logger, obs Observer, opts ...Option) *Server {
	if obs == nil {
		obs = discardObserver{}
	}
	s := &Server{store: st, nodes: nv, log: log, now: time.Now, obs: obs,
		probeLimit:   newProbeLimiter(DefaultProbeRate, DefaultProbeBurst),
		probeTimeout: DefaultProbeTimeout, probeDeadline: DefaultProbeDeadline}
	for _, o := range opts {
		o(s)
	}
	return s
}

// maxWait bounds Apply's wait and WatchRollout's timeout.
const maxWait = 10 * time.Minute

// defaultWatch is WatchRollout's timeout when none is given.
const defaultWatch = 30 * time.Second

// TraceProbes makes the live probe's handshakes [telemetry.SpanOutboundHandshake]
// spans of tracer (children of the RPC's span). Call it before serving.
func (s *Server) TraceProbes(tracer trace.Tracer) { s.tracer = tracer }

// Apply validates all resources of the request together and stores them, or
// stores nothing.
func (s *Server) Apply(ctx context.Context, req *connect.Request[policyv1.ApplyRequest]) (*connect.Response[policyv1.ApplyResponse], error) {
	start := time.Now()
	resp, err := s.apply(auditCall(ctx, audit.ActionApply, req.Peer().Addr), req)
	result := Error
	switch {
	case err == nil:
		result = Applied
	case connect.CodeOf(err) == connect.CodeInvalidArgument:
		result = Refused
	case connect.CodeOf(err) == connect.CodeAborted:
		result = Conflict
	}
	s.obs.ObserveApply(result, req.Msg.GetDryRun(), time.Since(start))
	return resp, err
}

func (s *Server) apply(ctx context.Context, req *connect.Request[policyv1.ApplyRequest]) (*connect.Response[policyv1.ApplyResponse], error) {
	resp, err := s.store1(ctx, req)
	if err != nil || req.Msg.GetWait() == nil || req.Msg.GetDryRun() {
		return resp, err
	}
	// Waiting happens outside the write lock: other applies go on. store1
	// checked the duration.
	wctx, cancel := context.WithTimeout(ctx, req.Msg.GetWait().AsDuration())
	defer cancel()
	r := resp.Msg
	r.Rollout = s.nodes.WaitChange(wctx, s.change(r.GetRevision(), applySince(r)))
	if ctx.Err() != nil {
		return nil, connect.NewError(connect.CodeCanceled, fmt.Errorf("applied at revision %d; the caller went away while waiting for the nodes: %w", r.GetRevision(), ctx.Err()))
	}
	s.log.Info("apply rollout", "revision", r.GetRevision(), "complete", r.Rollout.GetComplete(), "refusals", len(r.Rollout.GetRefusals()), "serving", len(r.Rollout.GetServing()), "pending", len(r.Rollout.GetPending()))
	return resp, nil
}

// store1 validates and stores the resources of one Apply.
func (s *Server) store1(ctx context.Context, req *connect.Request[policyv1.ApplyRequest]) (*connect.Response[policyv1.ApplyResponse], error) {
	if w := req.Msg.GetWait(); w != nil && (w.AsDuration() <= 0 || w.AsDuration() > maxWait) {
		return nil, invalid([]model.Violation{{Field: "wait", Message: fmt.Sprintf("%s is not a wait this service accepts; give a duration above 0 and at most %s", w.AsDuration(), maxWait)}})
	}
	resources := req.Msg.GetResources()
	switch {
	case len(resources) == 0:
		return nil, invalid([]model.Violation{{Field: "resources", Message: "no resources given; send at least one Service, Route or PolicyBinding"}})
	case len(resources) > maxResources:
		return nil, invalid([]model.Violation{{Field: "resources", Message: fmt.Sprintf("%d resources in one request; send at most %d per request", len(resources), maxResources)}})
	}
	// Sizes, and what the CLI requires, before any name of the request is
	// looked up, logged or quoted.
	if vs := checkRequest(req.Msg); len(vs) > 0 {
		s.log.Info("apply refused", "resources", len(resources), "problems", len(vs), "dry_run", req.Msg.GetDryRun())
		return nil, invalid(vs)
	}
	probe := wantProbe(req.Msg)
	if msg := model.CheckProbePath(req.Msg.GetProbePath()); probe && req.Msg.GetProbePath() != "" && msg != "" {
		return nil, invalid([]model.Violation{{Field: "probePath", Message: msg}})
	}
	s.writes.Lock()
	objs, report, err := s.validate(ctx, req.Msg)
	if err != nil {
		s.writes.Unlock()
		return nil, err
	}
	var probes map[int][]*policyv1.ProbeResult
	if probe {
		// The probe runs outside the write lock: it may take up to the
		// probe deadline, and other applies go on meanwhile. What it
		// validated against is checked again before the write.
		seen := s.store.Revision()
		targets := s.probeTargets(objs)
		s.writes.Unlock()
		out, err := s.probe(ctx, callerKey(ctx, req.Peer()), targets, req.Msg.GetProbePath())
		if err != nil {
			return nil, err
		}
		s.logProbes(targets, out, req.Msg.GetDryRun())
		if len(out.failed) > 0 {
			s.log.Info("apply refused by the live probe", "resources", len(resources), "failed", len(out.failed), "unreachable", len(out.warnings), "dry_run", req.Msg.GetDryRun())
			return nil, invalid(out.failed, append(report.Warnings, out.warnings...)...)
		}
		s.writes.Lock()
		if s.store.Revision() != seen {
			// Something was written meanwhile: validate again against
			// it, and refuse to store a probe of endpoints that are no
			// longer the Service's.
			if objs, report, err = s.validate(ctx, req.Msg); err != nil {
				s.writes.Unlock()
				return nil, err
			}
			if name := changedTarget(targets, s.probeTargets(objs)); name != "" {
				s.writes.Unlock()
				return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("Service %q changed while the live probe ran, so the probe no longer says anything about it; nothing was applied: apply again", name))
			}
		}
		report.Warnings = append(report.Warnings, out.warnings...)
		probes = out.results
	}
	defer s.writes.Unlock()
	// Store the resources as validated (kinds and apiVersions filled in),
	// keeping what the caller wrote, except inline private keys: those go
	// to the secrets service, and the resource references them.
	var moved movedKeys
	if !req.Msg.GetDryRun() && s.keys != nil {
		var err error
		if moved, err = s.moveKeys(ctx, resources, objs); err != nil {
			s.forget(moved.created)
			return nil, err
		}
	}
	for i, r := range resources {
		fillKind(r, objs[i].Ref().Kind)
	}
	outs, err := s.store.Write(ctx, resources, req.Msg.GetDryRun())
	if err != nil {
		s.forget(moved.created)
		return nil, storeError(err)
	}
	var last uint64
	resp := &policyv1.ApplyResponse{Results: make([]*policyv1.ApplyResult, len(resources))}
	for i, o := range outs {
		res := &policyv1.ApplyResult{Kind: o.Ref.Kind, Name: o.Ref.Name, Revision: o.Revision}
		switch {
		case req.Msg.GetDryRun():
			res.Action, res.Revision = policyv1.Action_ACTION_VALID, 0
		case !o.Changed:
			res.Action = policyv1.Action_ACTION_UNCHANGED
		case o.Created:
			res.Action = policyv1.Action_ACTION_CREATED
		default:
			res.Action = policyv1.Action_ACTION_UPDATED
		}
		prefix := fmt.Sprintf("resources[%d].", i)
		for _, w := range report.Warnings {
			if strings.HasPrefix(w.Field, prefix) {
				res.Warnings = append(res.Warnings, &policyv1.Warning{Field: w.Field, Message: w.Message})
			}
		}
		for _, c := range report.Certificates {
			if strings.HasPrefix(c.Field, prefix) {
				res.Certificates = append(res.Certificates, certificateInfo(c))
			}
		}
		res.Probes = probes[i]
		resp.Results[i] = res
		if o.Changed && o.Revision > last {
			last = o.Revision
		}
		if !req.Msg.GetDryRun() {
			resp.Revision = max(resp.Revision, o.Revision)
		}
		if o.Changed && !req.Msg.GetDryRun() {
			s.log.Info("applied", "resource", o.Ref.String(), "revision", o.Revision, "created", o.Created, "warnings", len(res.Warnings))
		}
	}
	// Read-your-writes for the next call on this replica: the view (used by
	// List and by validation of references) holds what was just written.
	// The write itself has landed either way, so a lagging view is a
	// warning, not a failure a client would retry.
	if last > 0 {
		// Bounded: while the stream's consumers move to a new leader the
		// view can lag for seconds, and the caller must get its
		// acknowledgement before its own deadline, or it takes a stored
		// apply for a failed one.
		vctx, cancel := context.WithTimeout(ctx, ViewWait)
		err := s.store.WaitRevision(vctx, last)
		cancel()
		if err != nil {
			s.log.Warn("view behind the store after an apply", "revision", last, "error", err)
			w := &policyv1.Warning{Message: fmt.Sprintf("stored at revision %d, but this policy replica's view has not caught up yet; a list right now may not show it", last)}
			for _, r := range resp.Results {
				r.Warnings = append(r.Warnings, w)
			}
		} else {
			// Keys replaced by this apply (a rotation) that nothing
			// references any more. Only against an up-to-date view.
			s.release(moved.previous, true)
		}
	}
	return connect.NewResponse(resp), nil
}

// validate restores the redacted keys of req's resources and validates them
// against what is stored: the objects, and the report, or the
// InvalidArgument error that lists every problem. Called under the write
// lock.
func (s *Server) validate(ctx context.Context, req *policyv1.ApplyRequest) ([]model.Object, model.Report, error) {
	resources := req.GetResources()
	if vs := s.restoreKeys(ctx, resources); len(vs) > 0 {
		return nil, model.Report{}, invalid(vs)
	}
	objs, report := model.ValidateContext(ctx, resources, model.Env{Catalog: s.store.Catalog(), Secrets: s.secrets, Now: s.now()})
	report.Errors = append(report.Errors, s.refuseInline(resources)...)
	if !report.OK() {
		s.log.Info("apply refused", "resources", len(resources), "problems", len(report.Errors), "dry_run", req.GetDryRun())
		return nil, model.Report{}, invalid(report.Errors, report.Warnings...)
	}
	return objs, report, nil
}

// Get returns one resource.
func (s *Server) Get(ctx context.Context, req *connect.Request[policyv1.GetRequest]) (*connect.Response[policyv1.GetResponse], error) {
	ref, err := refOf(req.Msg.GetKind(), req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	res, err := s.store.Get(ctx, ref)
	if err != nil {
		return nil, storeError(err)
	}
	return connect.NewResponse(&policyv1.GetResponse{Resource: redact(res)}), nil
}

// List returns the resources of one kind, or of all kinds.
func (s *Server) List(_ context.Context, req *connect.Request[policyv1.ListRequest]) (*connect.Response[policyv1.ListResponse], error) {
	kind := ""
	if req.Msg.GetKind() != "" {
		k, ok := model.ParseKind(req.Msg.GetKind())
		if !ok {
			return nil, invalidRequest([]model.Violation{{Field: "kind", Message: unknownKind(req.Msg.GetKind())}})
		}
		kind = k
	}
	resources := s.store.List(kind)
	for i, r := range resources {
		resources[i] = redact(r)
	}
	return connect.NewResponse(&policyv1.ListResponse{Resources: resources}), nil
}

// Delete removes one resource, unless other resources still name it.
func (s *Server) Delete(ctx context.Context, req *connect.Request[policyv1.DeleteRequest]) (*connect.Response[policyv1.DeleteResponse], error) {
	ref, err := refOf(req.Msg.GetKind(), req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	s.writes.Lock()
	defer s.writes.Unlock()
	var previous []secretref.Ref
	if stored, err := s.store.Get(ctx, ref); err == nil {
		for _, mv := range inlinekeys.Refs(stored) {
			previous = append(previous, mv.Ref)
		}
	}
	if deps := s.store.Dependents(ref); len(deps) > 0 {
		names := make([]string, len(deps))
		for i, d := range deps {
			names[i] = d.String()
		}
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"%s is still used by %s; delete or re-point those first", ref, strings.Join(names, ", ")))
	}
	rev, err := s.store.Delete(auditCall(ctx, audit.ActionDelete, req.Peer().Addr), ref, req.Msg.GetExpectedRevision())
	if err != nil {
		return nil, storeError(err)
	}
	if err := s.store.WaitRevision(ctx, rev); err != nil {
		s.log.Warn("view behind the store after a delete; moved keys of the resource are kept", "revision", rev, "error", err)
	} else {
		s.release(previous, true)
	}
	s.log.Info("deleted", "resource", ref.String(), "revision", rev)
	return connect.NewResponse(&policyv1.DeleteResponse{Revision: rev, DeleteTime: timestamppb.New(s.now())}), nil
}

func refOf(kind, name string) (model.Ref, error) {
	var vs []model.Violation
	k, ok := model.ParseKind(kind)
	if !ok {
		vs = append(vs, model.Violation{Field: "kind", Message: unknownKind(kind)})
	}
	if p := model.NameProblem(name); p != "" {
		vs = append(vs, model.Violation{Field: "name", Message: p})
	}
	if len(vs) > 0 {
		return model.Ref{}, invalidRequest(vs)
	}
	return model.Ref{Kind: k, Name: name}, nil
}

func unknownKind(kind string) string {
	return fmt.Sprintf("%s is not a kind; use Service, Route, PolicyBinding or Listener", limits.Quote(kind))
}

// invalid is INVALID_ARGUMENT with one field violation per problem, and the
// warnings found beside them as a policyv1.Warnings detail. The message
// repeats the problems, one per line, for callers that print only messages.
func invalid(vs []model.Violation, warnings ...model.Violation) error {
	var b strings.Builder
	if len(vs) == 1 {
		b.WriteString("1 problem; nothing was applied")
	} else {
		fmt.Fprintf(&b, "%d problems; nothing was applied", len(vs))
	}
	br := &errdetails.BadRequest{}
	for _, v := range vs {
		fmt.Fprintf(&b, "\n%s: %s", v.Field, v.Message)
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Message})
	}
	err := connect.NewError(connect.CodeInvalidArgument, errors.New(b.String()))
	if d, derr := connect.NewErrorDetail(br); derr == nil {
		err.AddDetail(d)
	}
	if len(warnings) > 0 {
		ws := &policyv1.Warnings{}
		for _, w := range warnings {
			ws.Warnings = append(ws.Warnings, &policyv1.Warning{Field: w.Field, Message: w.Message})
		}
		if d, derr := connect.NewErrorDetail(ws); derr == nil {
			err.AddDetail(d)
		}
	}
	return err
}

func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, store.ErrConflict):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeUnavailable, err)
}

func certificateInfo(c model.CertificateInfo) *policyv1.CertificateInfo {
	fp := c.Fingerprint
	if fp == "" && c.Cert != nil {
		fp = certs.Fingerprint(c.Cert)
	}
	info := &policyv1.CertificateInfo{Field: c.Field, Sha256Fingerprint: fp, NotAfter: timestamppb.New(c.NotAfter)}
	if sum := c.Summary; sum != nil {
		info.Subject, info.Issuer, info.DnsNames = sum.Subject, sum.Issuer, sum.DNSNames
		info.NotBefore = timestamppb.New(sum.NotBefore)
	}
	if c.Cert != nil {
		info.Subject = c.Cert.Subject.String()
		info.Issuer = c.Cert.Issuer.String()
		info.DnsNames = c.Cert.DNSNames
		info.NotBefore = timestamppb.New(c.Cert.NotBefore)
		info.NotAfter = timestamppb.New(c.Cert.NotAfter)
	}
	return info
}

// fillKind sets apiVersion and kind where the caller left them empty.
func fillKind(r *policyv1.Resource, kind string) {
	var apiVersion, k *string
	switch x := r.GetKind().(type) {
	case *policyv1.Resource_Service:
		apiVersion, k = &x.Service.ApiVersion, &x.Service.Kind
	case *policyv1.Resource_Route:
		apiVersion, k = &x.Route.ApiVersion, &x.Route.Kind
	case *policyv1.Resource_PolicyBinding:
		apiVersion, k = &x.PolicyBinding.ApiVersion, &x.PolicyBinding.Kind
	case *policyv1.Resource_Listener:
		apiVersion, k = &x.Listener.ApiVersion, &x.Listener.Kind
	default:
		return
	}
	if *apiVersion == "" {
		*apiVersion = model.APIVersion
	}
	if *k == "" {
		*k = kind
	}
}

// ListNodes returns the live proxy nodes.
func (s *Server) ListNodes(context.Context, *connect.Request[policyv1.ListNodesRequest]) (*connect.Response[policyv1.ListNodesResponse], error) {
	return connect.NewResponse(&policyv1.ListNodesResponse{Nodes: s.nodes.Live()}), nil
}

// GetRollout says which live nodes serve a revision (0: the store's).
func (s *Server) GetRollout(_ context.Context, req *connect.Request[policyv1.GetRolloutRequest]) (*connect.Response[policyv1.GetRolloutResponse], error) {
	rev := cmp.Or(req.Msg.GetRevision(), s.store.Revision())
	return connect.NewResponse(&policyv1.GetRolloutResponse{Rollout: s.nodes.Check(s.change(rev, req.Msg.GetSince()))}), nil
}

// WatchRollout streams the rollout of a revision until it completes or the
// timeout passes. A timeout is not an error: the last message says how
// far it got.
func (s *Server) WatchRollout(ctx context.Context, req *connect.Request[policyv1.WatchRolloutRequest], stream *connect.ServerStream[policyv1.WatchRolloutResponse]) error {
	timeout := defaultWatch
	if t := req.Msg.GetTimeout(); t != nil {
		if timeout = t.AsDuration(); timeout <= 0 || timeout > maxWait {
			return invalid([]model.Violation{{Field: "timeout", Message: fmt.Sprintf("%s is not a timeout this service accepts; give a duration above 0 and at most %s, or none for %s", timeout, maxWait, defaultWatch)}})
		}
	}
	rev := cmp.Or(req.Msg.GetRevision(), s.store.Revision())
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var sendErr error
	s.nodes.Follow(wctx, s.change(rev, req.Msg.GetSince()), func(r *policyv1.Rollout) bool {
		sendErr = stream.Send(&policyv1.WatchRolloutResponse{Rollout: r})
		return sendErr == nil
	})
	if sendErr != nil {
		return fmt.Errorf("sending the rollout of revision %d: %w", rev, sendErr)
	}
	return nil
}
