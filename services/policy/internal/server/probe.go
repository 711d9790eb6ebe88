package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/common/failure"
	"keyway.dev/common/model"
	"keyway.dev/common/outbound"
)

// probeTimeout bounds the dial and the handshake of one probe.
const probeTimeout = 5 * time.Second

// wantProbe applies the request's probe mode: on for dry runs unless turned
// off, off for applies unless asked for.
func wantProbe(req *policyv1.ApplyRequest) bool {
	switch req.GetProbe() {
	case policyv1.ProbeMode_PROBE_MODE_ON:
		return true
	case policyv1.ProbeMode_PROBE_MODE_OFF:
		return false
	}
	return req.GetDryRun()
}

// probe handshakes with every endpoint of every Service that a tls-outbound
// binding of the request targets, all at once, with the binding's context.
// It returns the results per resource index, one violation per failed
// endpoint, at the binding's config, and a warning per binding not probed.
//
// The probe dials nothing but those endpoints: the targeted Service's, as
// the request gives it or as stored; no other field of a request names
// where to dial. The handshakes are spent from caller's budget
// ([probeLimiter]); a caller over budget gets a ResourceExhausted error,
// and nothing is dialled.
//
// A binding that references the secrets service is probed with the material
// fetched from MaterialService, the same the proxy nodes will fetch; without
// the internal port configured it is not probed, and says so.
func (s *Server) probe(ctx context.Context, caller string, objs []model.Object, path string) (map[int][]*policyv1.ProbeResult, []model.Violation, []model.Violation, error) {
	var skipped []model.Violation
	inRequest := map[string]*model.Service{}
	for _, o := range objs {
		if o.Service != nil {
			inRequest[o.Service.Name] = o.Service
		}
	}
	type job struct {
		index    int
		binding  *model.Binding
		endpoint string
		dialer   *outbound.Dialer
	}
	var jobs []job
	var violations []model.Violation
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
		tlsCtx := b.Outbound
		if tlsCtx.References() {
			resolved, warning, err := s.resolve(ctx, tlsCtx)
			if err != nil {
				violations = append(violations, model.Violation{Field: configField(i), Message: fmt.Sprintf("live probe: %v", err)})
				continue
			}
			if resolved == nil {
				skipped = append(skipped, model.Violation{Field: configField(i), Message: warning})
				continue
			}
			tlsCtx = resolved
		}
		d, err := outbound.NewDialer(svc.Name, tlsCtx, outbound.Options{HandshakeTimeout: probeTimeout, DialTimeout: probeTimeout, Tracer: s.tracer, Protocol: svc.Protocol})
		if err != nil {
			violations = append(violations, model.Violation{Field: configField(i), Message: fmt.Sprintf("live probe: %v", err)})
			continue
		}
		for _, ep := range svc.Endpoints {
			jobs = append(jobs, job{index: i, binding: b, endpoint: ep, dialer: d})
		}
	}
	if err := s.probeLimit.allow(caller, len(jobs)); err != nil {
		s.log.Info("live probe refused: caller over its budget", "caller", caller, "endpoints", len(jobs))
		return nil, nil, nil, err
	}
	results := make([]*policyv1.ProbeResult, len(jobs))
	var wg sync.WaitGroup
	for j, jb := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := cmp.Or(path, jb.binding.Outbound.ProbePath)
			r, perr := jb.dialer.Probe(ctx, jb.endpoint, p)
			var reason failure.Reason
			if perr != nil {
				reason = perr.Reason
			}
			s.obs.ObserveProbe(reason)
			results[j] = probeResult(jb.endpoint, r, perr)
			results[j].ServerName = jb.dialer.ServerName(jb.endpoint)
		}()
	}
	wg.Wait()
	byIndex := map[int][]*policyv1.ProbeResult{}
	for j, jb := range jobs {
		r := results[j]
		byIndex[jb.index] = append(byIndex[jb.index], r)
		if !r.Ok {
			violations = append(violations, model.Violation{
				Field: configField(jb.index),
				Message: fmt.Sprintf("live probe of Service %q at %s (SNI %q) failed: %s: %s; fix: %s",
					jb.binding.Target.Name, jb.endpoint, r.ServerName, r.Reason, r.Detail, r.Fix),
			})
		}
	}
	return byIndex, violations, skipped, nil
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

func configField(i int) string {
	return fmt.Sprintf("resources[%d].policyBinding.spec.config", i)
}

func probeResult(endpoint string, r *outbound.Result, perr *outbound.Error) *policyv1.ProbeResult {
	if perr != nil {
		return &policyv1.ProbeResult{
			Endpoint: endpoint, Reason: string(perr.Reason),
			Detail: perr.Detail, Fix: perr.Reason.Fix(),
		}
	}
	out := &policyv1.ProbeResult{
		Endpoint: endpoint, ServerName: r.ServerName, Ok: true,
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
