// Package server is the secrets service's RPC boundary: SecretsService
// (the API: put, get, list and delete keystores' aliases and truststores,
// never a private key in an answer) and MaterialService (key material for
// proxy nodes, mounted only on the internal mTLS listener). Invalid input
// becomes INVALID_ARGUMENT with a google.rpc.BadRequest field violation per
// problem, each naming the field and the fix.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/common/audit"
	"keyway.dev/common/limits"

	"keyway.dev/secrets/internal/secret"
	"keyway.dev/secrets/internal/store"
	"keyway.dev/secrets/internal/validate"
)

// Secrets implements [secretsv1connect.SecretsServiceHandler].
type Secrets struct {
	store *store.Store
	log   *slog.Logger
	now   func() time.Time
	// audit records writes; nil: not recorded.
	audit *audit.Writer
}

var _ secretsv1connect.SecretsServiceHandler = (*Secrets)(nil)

// NewSecrets returns the API over st.
func NewSecrets(st *store.Store, log *slog.Logger, opts ...SecretsOption) *Secrets {
	s := &Secrets{store: st, log: log, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// PutAlias validates and stores an alias.
func (s *Secrets) PutAlias(ctx context.Context, req *connect.Request[secretsv1.PutAliasRequest]) (*connect.Response[secretsv1.PutAliasResponse], error) {
	m := req.Msg
	now := s.now()
	r := validate.Alias(m, s.store.PKIAvailable(), now)
	if r.OK() && m.GetPki() != nil {
		if err := s.store.CheckRole(ctx, m.GetPki().GetRole()); errors.Is(err, store.ErrNotFound) {
			r.Errors = append(r.Errors, validate.Violation{Field: "pki.role", Message: message(err, store.ErrNotFound)})
		} else if err != nil {
			return nil, apiError(err)
		}
	}
	if !r.OK() {
		s.log.Info("put refused", "keystore", limits.Value(m.GetKeystore()), "alias", limits.Value(m.GetAlias()), "problems", len(r.Errors), "dry_run", m.GetDryRun())
		return nil, invalid(r.Errors)
	}
	rec := &secret.AliasRecord{
		Keystore: m.GetKeystore(), Alias: m.GetAlias(),
		CertificatePEM: m.GetCertificatePem(), Key: secret.NewPrivateKey([]byte(m.GetPrivateKeyPem())),
		Usage: m.GetUsage(),
	}
	if rec.Usage == secretsv1.Usage_USAGE_UNSPECIFIED {
		rec.Usage = secretsv1.Usage_USAGE_CLIENT
	}
	if p := m.GetPki(); p != nil {
		rec.PKI = &secret.PKIBinding{Role: p.GetRole(), CommonName: p.GetCommonName(), AltNames: p.GetAltNames(), TTL: p.GetTtl().AsDuration()}
	}
	if m.GetDryRun() {
		a := &store.Alias{Record: rec, ChainPEM: rec.CertificatePEM, Chain: r.Chain, IssuedAt: now}
		return connect.NewResponse(&secretsv1.PutAliasResponse{Alias: describeAlias(a, s.store.Kind(), now), Warnings: r.Warnings}), nil
	}
	done, err := s.audited(ctx, req.Peer().Addr, audit.Record{Action: audit.ActionSecretPut, Kind: auditKindAlias, Name: rec.Keystore + "/" + rec.Alias, Digest: aliasDigest(m)})
	if err != nil {
		return nil, err
	}
	a, err := s.store.PutAlias(ctx, rec)
	if err != nil {
		done("", err)
	} else {
		done(a.Version, nil)
	}
	if err != nil && rec.PKI != nil && errors.Is(err, store.ErrInvalid) {
		// Vault refused to issue: the role does not allow the names or
		// the TTL asked for.
		return nil, invalid([]validate.Violation{{Field: "pki", Message: message(err, store.ErrInvalid) +
			"; ask for names and a TTL the role allows, or change the role (vault read " + s.store.PKIMount() + "/roles/" + rec.PKI.Role + ")"}})
	}
	if err != nil {
		return nil, apiError(err)
	}
	s.log.Info("alias stored", "keystore", rec.Keystore, "alias", rec.Alias, "version", a.Version, "pki_role", pkiRole(rec))
	return connect.NewResponse(&secretsv1.PutAliasResponse{Alias: describeAlias(a, s.store.Kind(), s.now()), Warnings: r.Warnings}), nil
}

func pkiRole(rec *secret.AliasRecord) string {
	if rec.PKI == nil {
		return ""
	}
	return rec.PKI.Role
}

// PutTruststore validates and stores a truststore.
func (s *Secrets) PutTruststore(ctx context.Context, req *connect.Request[secretsv1.PutTruststoreRequest]) (*connect.Response[secretsv1.PutTruststoreResponse], error) {
	m := req.Msg
	now := s.now()
	r := validate.Truststore(m, now)
	if !r.OK() {
		s.log.Info("put refused", "truststore", limits.Value(m.GetName()), "problems", len(r.Errors), "dry_run", m.GetDryRun())
		return nil, invalid(r.Errors)
	}
	rec := &secret.TruststoreRecord{Name: m.GetName(), CertificatesPEM: m.GetCertificatesPem()}
	if m.GetDryRun() {
		t := &store.Truststore{Record: rec, Certs: r.Chain}
		return connect.NewResponse(&secretsv1.PutTruststoreResponse{Truststore: describeTruststore(t, s.store.Kind(), now), Warnings: r.Warnings}), nil
	}
	done, err := s.audited(ctx, req.Peer().Addr, audit.Record{Action: audit.ActionSecretPut, Kind: auditKindTruststore, Name: rec.Name, Digest: truststoreDigest(m)})
	if err != nil {
		return nil, err
	}
	t, err := s.store.PutTruststore(ctx, rec)
	if err != nil {
		done("", err)
		return nil, apiError(err)
	}
	done(t.Record.Version, nil)
	s.log.Info("truststore stored", "truststore", rec.Name, "version", t.Record.Version, "certificates", len(t.Certs))
	return connect.NewResponse(&secretsv1.PutTruststoreResponse{Truststore: describeTruststore(t, s.store.Kind(), s.now()), Warnings: r.Warnings}), nil
}

// GetAlias describes an alias.
func (s *Secrets) GetAlias(ctx context.Context, req *connect.Request[secretsv1.GetAliasRequest]) (*connect.Response[secretsv1.GetAliasResponse], error) {
	if err := names(req.Msg.GetKeystore(), req.Msg.GetAlias()); err != nil {
		return nil, err
	}
	a, err := s.store.Alias(ctx, req.Msg.GetKeystore(), req.Msg.GetAlias())
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&secretsv1.GetAliasResponse{Alias: describeAlias(a, s.store.Kind(), s.now())}), nil
}

// GetTruststore describes a truststore.
func (s *Secrets) GetTruststore(ctx context.Context, req *connect.Request[secretsv1.GetTruststoreRequest]) (*connect.Response[secretsv1.GetTruststoreResponse], error) {
	if err := truststoreName(req.Msg.GetName()); err != nil {
		return nil, err
	}
	t, err := s.store.Truststore(ctx, req.Msg.GetName())
	if err != nil {
		return nil, apiError(err)
	}
	return connect.NewResponse(&secretsv1.GetTruststoreResponse{Truststore: describeTruststore(t, s.store.Kind(), s.now())}), nil
}

// ListKeystores lists every keystore with its aliases.
func (s *Secrets) ListKeystores(_ context.Context, _ *connect.Request[secretsv1.ListKeystoresRequest]) (*connect.Response[secretsv1.ListKeystoresResponse], error) {
	now := s.now()
	resp := &secretsv1.ListKeystoresResponse{}
	var cur *secretsv1.Keystore
	for _, a := range s.store.Aliases() {
		if cur == nil || cur.Name != a.Record.Keystore {
			cur = &secretsv1.Keystore{Name: a.Record.Keystore}
			resp.Keystores = append(resp.Keystores, cur)
		}
		cur.Aliases = append(cur.Aliases, describeAlias(a, s.store.Kind(), now))
	}
	return connect.NewResponse(resp), nil
}

// ListTruststores lists every truststore.
func (s *Secrets) ListTruststores(_ context.Context, _ *connect.Request[secretsv1.ListTruststoresRequest]) (*connect.Response[secretsv1.ListTruststoresResponse], error) {
	now := s.now()
	resp := &secretsv1.ListTruststoresResponse{}
	for _, t := range s.store.Truststores() {
		resp.Truststores = append(resp.Truststores, describeTruststore(t, s.store.Kind(), now))
	}
	return connect.NewResponse(resp), nil
}

// DeleteAlias deletes an alias.
func (s *Secrets) DeleteAlias(ctx context.Context, req *connect.Request[secretsv1.DeleteAliasRequest]) (*connect.Response[secretsv1.DeleteAliasResponse], error) {
	if err := names(req.Msg.GetKeystore(), req.Msg.GetAlias()); err != nil {
		return nil, err
	}
	done, err := s.audited(ctx, req.Peer().Addr, audit.Record{Action: audit.ActionSecretDelete, Kind: auditKindAlias, Name: req.Msg.GetKeystore() + "/" + req.Msg.GetAlias()})
	if err != nil {
		return nil, err
	}
	err = s.store.DeleteAlias(ctx, req.Msg.GetKeystore(), req.Msg.GetAlias())
	done("", err)
	if err != nil {
		return nil, apiError(err)
	}
	s.log.Info("alias deleted", "keystore", req.Msg.GetKeystore(), "alias", req.Msg.GetAlias())
	return connect.NewResponse(&secretsv1.DeleteAliasResponse{}), nil
}

// DeleteTruststore deletes a truststore.
func (s *Secrets) DeleteTruststore(ctx context.Context, req *connect.Request[secretsv1.DeleteTruststoreRequest]) (*connect.Response[secretsv1.DeleteTruststoreResponse], error) {
	if err := truststoreName(req.Msg.GetName()); err != nil {
		return nil, err
	}
	done, err := s.audited(ctx, req.Peer().Addr, audit.Record{Action: audit.ActionSecretDelete, Kind: auditKindTruststore, Name: req.Msg.GetName()})
	if err != nil {
		return nil, err
	}
	err = s.store.DeleteTruststore(ctx, req.Msg.GetName())
	done("", err)
	if err != nil {
		return nil, apiError(err)
	}
	s.log.Info("truststore deleted", "truststore", req.Msg.GetName())
	return connect.NewResponse(&secretsv1.DeleteTruststoreResponse{}), nil
}

// Material implements [secretsv1connect.MaterialServiceHandler]. Mount it
// only behind client-certificate verification.
type Material struct {
	store *store.Store
	log   *slog.Logger
	now   func() time.Time
}

var _ secretsv1connect.MaterialServiceHandler = (*Material)(nil)

// NewMaterial returns the material service over st.
func NewMaterial(st *store.Store, log *slog.Logger) *Material {
	return &Material{store: st, log: log, now: time.Now}
}

// FetchAlias returns an alias with its chain and key.
func (m *Material) FetchAlias(ctx context.Context, req *connect.Request[secretsv1.FetchAliasRequest]) (*connect.Response[secretsv1.FetchAliasResponse], error) {
	if err := names(req.Msg.GetKeystore(), req.Msg.GetAlias()); err != nil {
		return nil, err
	}
	a, err := m.store.Alias(ctx, req.Msg.GetKeystore(), req.Msg.GetAlias())
	if err != nil {
		return nil, apiError(err)
	}
	m.log.Info("alias material fetched", "keystore", a.Record.Keystore, "alias", a.Record.Alias, "version", a.Version, "client", ClientName(ctx))
	return connect.NewResponse(&secretsv1.FetchAliasResponse{
		Alias:          describeAlias(a, m.store.Kind(), m.now()),
		CertificatePem: a.ChainPEM,
		PrivateKeyPem:  string(a.Key.PEM()),
	}), nil
}

// FetchTruststore returns a truststore's CA bundle.
func (m *Material) FetchTruststore(ctx context.Context, req *connect.Request[secretsv1.FetchTruststoreRequest]) (*connect.Response[secretsv1.FetchTruststoreResponse], error) {
	if err := truststoreName(req.Msg.GetName()); err != nil {
		return nil, err
	}
	t, err := m.store.Truststore(ctx, req.Msg.GetName())
	if err != nil {
		return nil, apiError(err)
	}
	m.log.Debug("truststore fetched", "truststore", t.Record.Name, "version", t.Record.Version, "client", ClientName(ctx))
	return connect.NewResponse(&secretsv1.FetchTruststoreResponse{
		Truststore:      describeTruststore(t, m.store.Kind(), m.now()),
		CertificatesPem: t.Record.CertificatesPEM,
	}), nil
}

type clientNameKey struct{}

// WithClientName records the verified client certificate's subject in ctx
// for logs.
func WithClientName(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, clientNameKey{}, name)
}

// ClientName is the subject recorded by [WithClientName].
func ClientName(ctx context.Context) string {
	n, _ := ctx.Value(clientNameKey{}).(string)
	return n
}

func describeAlias(a *store.Alias, kind secretsv1.Backend, now time.Time) *secretsv1.Alias {
	rec := a.Record
	out := &secretsv1.Alias{
		Keystore: rec.Keystore, Alias: rec.Alias, Backend: kind, Version: a.Version, Usage: rec.Usage,
	}
	if !a.IssuedAt.IsZero() {
		out.UpdateTime = timestamppb.New(a.IssuedAt)
	}
	if rec.PKI != nil {
		out.Backend = secretsv1.Backend_BACKEND_VAULT_PKI
		out.PkiRole = rec.PKI.Role
		if rec.PKI.TTL > 0 {
			out.PkiTtl = durationpb.New(rec.PKI.TTL)
		}
		if !a.RenewAt.IsZero() {
			out.RenewTime = timestamppb.New(a.RenewAt)
		}
	}
	for _, c := range a.Chain {
		out.Chain = append(out.Chain, secret.Describe(c, now))
	}
	return out
}

func describeTruststore(t *store.Truststore, kind secretsv1.Backend, now time.Time) *secretsv1.Truststore {
	out := &secretsv1.Truststore{Name: t.Record.Name, Backend: kind, Version: t.Record.Version}
	if !t.Record.UpdateTime.IsZero() {
		out.UpdateTime = timestamppb.New(t.Record.UpdateTime)
	}
	for _, c := range t.Certs {
		out.Certificates = append(out.Certificates, secret.Describe(c, now))
	}
	return out
}

func names(keystore, alias string) error {
	r := &validate.Report{}
	r.Name("keystore", "keystore", keystore)
	r.Name("alias", "alias", alias)
	if !r.OK() {
		return invalid(r.Errors)
	}
	return nil
}

func truststoreName(name string) error {
	r := &validate.Report{}
	r.Name("name", "truststore", name)
	if !r.OK() {
		return invalid(r.Errors)
	}
	return nil
}

// invalid is INVALID_ARGUMENT with one field violation per problem.
func invalid(vs []validate.Violation) error {
	var b strings.Builder
	if len(vs) == 1 {
		b.WriteString("1 problem")
	} else {
		fmt.Fprintf(&b, "%d problems", len(vs))
	}
	b.WriteString("; nothing was stored")
	br := &errdetails.BadRequest{}
	for _, v := range vs {
		fmt.Fprintf(&b, "\n%s: %s", v.Field, v.Message)
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Message})
	}
	err := connect.NewError(connect.CodeInvalidArgument, errors.New(b.String()))
	if d, derr := connect.NewErrorDetail(br); derr == nil {
		err.AddDetail(d)
	}
	return err
}

// message is err's text without the sentinel's prefix.
func message(err, sentinel error) string {
	return strings.TrimPrefix(err.Error(), sentinel.Error()+": ")
}

// apiError maps the store's errors to codes.
func apiError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, errors.New(message(err, store.ErrNotFound)))
	case errors.Is(err, store.ErrInvalid):
		return connect.NewError(connect.CodeFailedPrecondition, errors.New(message(err, store.ErrInvalid)))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	}
	return connect.NewError(connect.CodeUnavailable, errors.New(message(err, store.ErrUnavailable)))
}
