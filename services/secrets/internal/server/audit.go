package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/trace"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/audit"
)

// SecretsOption configures [Secrets].
type SecretsOption func(*Secrets)

// WithDependents has deletes refused while d finds resources that use the
// secret, or cannot tell.
func WithDependents(d Dependents) SecretsOption {
	return func(s *Secrets) { s.dependents = d }
}

// WithAudit records every put and delete in w: an attempt record before the
// backend write (no record, no write) and an outcome record after.
func WithAudit(w *audit.Writer) SecretsOption {
	return func(s *Secrets) { s.audit = w }
}

// Kinds of secrets in audit records.
const (
	auditKindAlias      = "alias"
	auditKindTruststore = "truststore"
)

// audited records the attempt of a write from peer and returns the function
// that records its outcome (the version written, or the error). An error
// means the write must not be made.
func (s *Secrets) audited(ctx context.Context, peer string, rec audit.Record) (func(version string, err error), error) {
	if s.audit == nil {
		return func(string, error) {}, nil
	}
	rec.ID = audit.NewID()
	rec.Actor = audit.ActorFrom(audit.WithPeer(ctx, peer))
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		rec.TraceID = sc.TraceID().String()
	}
	if err := s.audit.Attempt(ctx, rec); err != nil {
		s.log.Error("write refused: the audit trail does not take records", "action", rec.Action, "kind", rec.Kind, "name", rec.Name, "error", err)
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w; nothing was stored: retry once the audit stream takes records again", err))
	}
	return func(version string, err error) {
		rec.Result, rec.Version = audit.ResultOK, version
		if err != nil {
			rec.Result, rec.Version, rec.Error = audit.ResultFailed, "", err.Error()
		}
		s.audit.Outcome(ctx, rec)
	}, nil
}

// digest is the SHA-256, lowercase hex, of parts, each length-prefixed so
// that no two lists of parts share a digest.
func digest(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(strconv.Itoa(len(p)) + ":" + p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// aliasDigest covers an alias's public parts as put: never its key.
func aliasDigest(m *secretsv1.PutAliasRequest) string {
	p := m.GetPki()
	return digest(m.GetKeystore(), m.GetAlias(), m.GetUsage().String(), m.GetCertificatePem(),
		p.GetRole(), p.GetCommonName(), strings.Join(p.GetAltNames(), ","), p.GetTtl().AsDuration().String())
}

func truststoreDigest(m *secretsv1.PutTruststoreRequest) string {
	return digest(m.GetName(), m.GetCertificatesPem())
}
