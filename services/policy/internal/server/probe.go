package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/failure"
	"keyway.dev/internal/model"
	"keyway.dev/internal/outbound"
	"keyway.dev/policy/internal/probelog"
)

// Bounds of the live probe. Every endpoint of a request is probed at once,
// each within DefaultProbeTimeout (TCP connection, TLS handshake, the HTTP
// request and its answer); the whole probe of one Apply, fetching
// referenced key material included, within DefaultProbeDeadline. keyway-policy's
// --probe-timeout and --probe-deadline change them ([WithProbeBounds]).
const (
	DefaultProbeTimeout  = 5 * time.Second
	DefaultProbeDeadline = 10 * time.Second
	// MaxProbeDeadline bounds both: the probe runs inside an Apply, which
	// a client waits for.
	MaxProbeDeadline = time.Minute
)

// WithProbeBounds sets the time the live probe gives each endpoint and
// each Apply. Values out of range (0 < timeout <= deadline <=
// [MaxProbeDeadline]) are refused by [CheckProbeBounds]; New keeps the
// defaults for them.
func WithProbeBounds(timeout, deadline time.Duration) Option {
	return func(s *Server) {
		if CheckProbeBounds(timeout, deadline) == nil {
			s.probeTimeout, s.probeDeadline = timeout, deadline
		}
	}
}

// CheckProbeBounds says what is wrong with a per-endpoint timeout and a
// per-Apply deadline for the live probe, naming the flags that set them.
func CheckProbeBounds(timeout, deadline time.Duration) error {
	switch {
	case timeout <= 0 || deadline <= 0:
		return fmt.Errorf("--probe-timeout %s, --probe-deadline %s: both must be above 0", timeout, deadline)
	case deadline > MaxProbeDeadline:
		return fmt.Errorf("--probe-deadline %s: at most %s (an Apply waits for the probe)", deadline, MaxProbeDeadline)
	case timeout > deadline:
		return fmt.Errorf("--probe-timeout %s is longer than --probe-deadline %s: an endpoint cannot have longer than the whole Apply", timeout, deadline)
	}
	return nil
}

// wantProbe applies the request's probe mode: on for dry runs unless turned
// off, off for applies unless asked for. PROBE_MODE_UNSPECIFIED keeps the
// meaning it has always had, so that an older client's plain apply stores
// without dialling anything; keywayctl sends ON or OFF explicitly.
func wantProbe(req *policyv1.ApplyRequest) bool {
	switch req.GetProbe() {
	case policyv1.ProbeMode_PROBE_MODE_ON:
		return true
	case policyv1.ProbeMode_PROBE_MODE_OFF:
		return false
	}
	return req.GetDryRun()
}

// probeTarget is one tls-outbound binding of a request to probe: where its
// Service's endpoints were, as validation saw them.
type probeTarget struct {
	index     int
	binding   *model.Binding
	service   string
	protocol  string
	endpoints []string
}

// probeTargets lists the tls-outbound bindings of objs with the endpoints
// of the Service each targets: the request's own Service of that name, else
// the stored one. The probe dials these endpoints and nothing else a request
// names. Called under the write lock, with the validated objects.
func (s *Server) probeTargets(objs []model.Object) []probeTarget {
	inRequest := map[string]*model.Service{}
	for _, o := range objs {
		if o.Service != nil {
			inRequest[o.Service.Name] = o.Service
		}
	}
	var out []probeTarget
	for i, o := range objs {
		b := o.Binding
		if b == nil || b.Outbound == nil {
			continue
		}
		svc, ok := inRequest[b.Target.Name]
		if !ok {
			if svc, ok = s.store.Service(b.Target.Name); !ok {
				continue // validation has already reported the missing Service
			}
		}
		out = append(out, probeTarget{index: i, binding: b, service: svc.Name, protocol: svc.Protocol, endpoints: slices.Clone(svc.Endpoints)})
	}
	return out
}

// changedTarget compares the targets probed with those of the same request
// validated again: it names the first Service whose endpoints are not the
// ones probed, or returns "".
func changedTarget(probed, now []probeTarget) string {
	for i, p := range probed {
		if i >= len(now) || now[i].index != p.index || now[i].service != p.service || !slices.Equal(now[i].endpoints, p.endpoints) {
			return p.service
		}
	}
	if len(now) > len(probed) {
		return now[len(probed)].service
	}
	return ""
}

// probeOutcome is what the live probe of one request found.
type probeOutcome struct {
	// results per resource index, one per endpoint.
	results map[int][]*policyv1.ProbeResult
	// failed: endpoints that answered and refused the binding's context
	// (or a binding that could not be probed for an error of its own);
	// one violation each, at the binding's config. The apply is refused.
	failed []model.Violation
	// warnings: bindings not probed (references without the internal
	// port) and endpoints that could not be reached. The apply goes on.
	warnings []model.Violation
}

// probe handshakes with every endpoint of targets, all at once, with each
// binding's context, within s.probeTimeout per endpoint and s.probeDeadline
// in all.
//
// An endpoint that answered and refused (untrusted certificate, client
// certificate refused at the handshake or by an HTTP refusal page, versions
// or ciphers that do not meet, a handshake that never completes) fails the
// apply. One that could not be reached at all (connection refused, no route,
// a name that does not resolve, a dial timeout) is a warning: the policy
// service may not see the network the proxy nodes see, and a probe that
// proves nothing must not block an apply.
//
// The probe dials nothing but the targets' endpoints. The handshakes are
// spent from caller's budget ([probeLimiter]); a caller over budget gets a
// ResourceExhausted error, and nothing is dialled.
//
// A binding that references the secrets service is probed with the material
// fetched from MaterialService, the same the proxy nodes will fetch; without
// the internal port configured it is not probed, and says so.
func (s *Server) probe(ctx context.Context, caller string, targets []probeTarget, path string) (*probeOutcome, error) {
	out := &probeOutcome{results: map[int][]*policyv1.ProbeResult{}}
	pctx, cancel := context.WithTimeout(ctx, s.probeDeadline)
	defer cancel()
	type job struct {
		target   *probeTarget
		endpoint string
		dialer   *outbound.Dialer
	}
	var jobs []job
	for ti := range targets {
		t := &targets[ti]
		tlsCtx := t.binding.Outbound
		if tlsCtx.References() {
			resolved, warning, err := s.resolve(pctx, tlsCtx)
			if err != nil {
				out.failed = append(out.failed, model.Violation{Field: configField(t.index), Message: fmt.Sprintf("live probe: %v", err)})
				continue
			}
			if resolved == nil {
				out.warnings = append(out.warnings, model.Violation{Field: configField(t.index), Message: warning})
				continue
			}
			tlsCtx = resolved
		}
		d, err := outbound.NewDialer(t.service, tlsCtx, outbound.Options{HandshakeTimeout: s.probeTimeout, DialTimeout: s.probeTimeout, Tracer: s.tracer, Protocol: t.protocol})
		if err != nil {
			out.failed = append(out.failed, model.Violation{Field: configField(t.index), Message: fmt.Sprintf("live probe: %v", err)})
			continue
		}
		for _, ep := range t.endpoints {
			jobs = append(jobs, job{target: t, endpoint: ep, dialer: d})
		}
	}
	endpoints := make([]string, len(jobs))
	for j, jb := range jobs {
		endpoints[j] = jb.endpoint
	}
	if err := s.probeLimit.allow(caller, endpoints); err != nil {
		s.log.Info("live probe refused: caller over its budget", "caller", caller, "endpoints", len(jobs))
		return nil, err
	}
	results := make([]*policyv1.ProbeResult, len(jobs))
	var wg sync.WaitGroup
	for j, jb := range jobs {
		wg.Go(func() {
			ectx, cancel := context.WithTimeout(pctx, s.probeTimeout)
			defer cancel()
			p := cmp.Or(path, jb.target.binding.Outbound.ProbePath)
			r, perr := jb.dialer.Probe(ectx, jb.endpoint, p)
			var reason failure.Reason
			if perr != nil {
				reason = perr.Reason
				if reason.Class() == failure.ClassTimeout {
					perr.Detail += fmt.Sprintf(" (the live probe gives each endpoint %s, and each apply %s)", s.probeTimeout, s.probeDeadline)
				}
			}
			s.obs.ObserveProbe(reason)
			results[j] = probeResult(jb.endpoint, r, perr)
			results[j].ServerName = jb.dialer.ServerName(jb.endpoint)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		// The caller went away (or its own deadline passed): what the
		// probe saw says nothing about the upstreams.
		code := connect.CodeCanceled
		if errors.Is(err, context.DeadlineExceeded) {
			code = connect.CodeDeadlineExceeded
		}
		return nil, connect.NewError(code, fmt.Errorf("the live probe was cut short: %w; nothing was applied", err))
	}
	var reached []string
	for j, jb := range jobs {
		r := results[j]
		i := jb.target.index
		out.results[i] = append(out.results[i], r)
		switch {
		case r.Ok:
			reached = append(reached, jb.endpoint)
		case !r.Reachable:
			out.warnings = append(out.warnings, model.Violation{
				Field: configField(i),
				Message: fmt.Sprintf("live probe could not reach Service %q at %s: %s: %s; not refused for that, since the proxy nodes may reach what the policy service cannot; if they cannot either: %s",
					jb.target.service, jb.endpoint, r.Reason, r.Detail, r.Fix),
			})
		default:
			out.failed = append(out.failed, model.Violation{
				Field: configField(i),
				Message: fmt.Sprintf("live probe of Service %q at %s (SNI %q) failed: %s: %s; fix: %s",
					jb.target.service, jb.endpoint, r.ServerName, r.Reason, r.Detail, r.Fix),
			})
		}
	}
	s.probeLimit.succeeded(caller, reached)
	return out, nil
}

// resolve fetches the material a context references. Without MaterialService
// configured it returns nil and the warning to give instead.
func (s *Server) resolve(ctx context.Context, o *model.OutboundTLS) (*model.OutboundTLS, string, error) {
	if s.material == nil {
		return nil, "live probe skipped: the binding references the secrets service, and this policy service cannot fetch key material (start keyway-policy with --secrets-internal-url, --secrets-cert, --secrets-key and --secrets-ca to probe such bindings); the references themselves were checked", nil
	}
	var cert *tls.Certificate
	var cas []*x509.Certificate
	if r := o.CertificateRef; r != nil {
		a, err := s.material.Alias(ctx, *r)
		if err != nil {
			return nil, "", fmt.Errorf("fetching keystore %q alias %q for the probe: %w", r.Keystore, r.Alias, err)
		}
		cert = a.Certificate
	}
	if o.Truststore != "" {
		ts, err := s.material.Truststore(ctx, o.Truststore)
		if err != nil {
			return nil, "", fmt.Errorf("fetching truststore %q for the probe: %w", o.Truststore, err)
		}
		cas = ts.CAs
	}
	return o.Resolve(cert, cas), "", nil
}

// WithProbeLog keeps each binding's last live probe in log (the operator
// console shows it).
func WithProbeLog(log *probelog.Log) Option {
	return func(s *Server) { s.probes = log }
}

// logProbes records what the probe of one request found, per binding.
func (s *Server) logProbes(targets []probeTarget, out *probeOutcome, dryRun bool) {
	if s.probes == nil {
		return
	}
	now := s.now()
	for _, t := range targets {
		rec := probelog.Record{Binding: t.binding.Name, Service: t.service, Time: now, DryRun: dryRun,
			Refused: len(out.failed) > 0, Results: out.results[t.index]}
		field := configField(t.index)
		for _, v := range slices.Concat(out.failed, out.warnings) {
			if v.Field == field {
				rec.Notes = append(rec.Notes, v.Message)
			}
		}
		s.probes.Add(rec)
	}
}

func configField(i int) string {
	return fmt.Sprintf("resources[%d].policyBinding.spec.config", i)
}

func probeResult(endpoint string, r *outbound.Result, perr *outbound.Error) *policyv1.ProbeResult {
	if perr != nil {
		return &policyv1.ProbeResult{
			Endpoint: endpoint, Reason: string(perr.Reason),
			Detail: perr.Detail, Fix: perr.Reason.Fix(),
			Reachable: perr.Reached(),
		}
	}
	out := &policyv1.ProbeResult{
		Endpoint: endpoint, ServerName: r.ServerName, Ok: true, Reachable: true,
		TlsVersion:                 tls.VersionName(r.Version),
		CipherSuite:                tls.CipherSuiteName(r.CipherSuite),
		Alpn:                       r.ALPN,
		ClientCertificateRequested: r.ClientCertificateRequested,
		ClientCertificateSent:      r.ClientCertificateSent,
		Elapsed:                    durationpb.New(r.Elapsed),
		HttpStatus:                 int32(r.HTTPStatus),
		HttpPath:                   r.HTTPPath,
	}
	if r.Peer != nil {
		out.PeerCertificate = certificateInfo(model.CertificateInfo{Cert: r.Peer, NotAfter: r.Peer.NotAfter})
	}
	return out
}
