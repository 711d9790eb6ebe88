// Package server is the secrets service's RPC boundary: SecretsService
// (the API: put, get, list and delete keystores' aliases and truststores,
// never a private key in an answer) and MaterialService (key material for
// proxy nodes, mounted only on the internal mTLS listener). Invalid input
// becomes INVALID_ARGUMENT with a google.rpc.BadRequest field violation per
// problem, each naming the field and the fix.
//
// Answers tell the truth about what is served: an alias or truststore
// whose backend version was rejected says so (status, rejection) next to
// the version still served, and a delete of a secret the configuration
// uses is refused, naming the resources.
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

	"keyway.dev/internal/audit"
	"keyway.dev/internal/limits"
	"keyway.dev/internal/secretref"

	"keyway.dev/secrets/internal/dependents"
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
	// dependents answers which resources use a secret; nil: deletes are
	// not checked (tests of this package only; the service always sets it).
	dependents Dependents
}

// Dependents answers which resources of the configuration use a secret
// ([dependents.Finder]). Safe for concurrent use; an error means they could
// not be determined.
type Dependents interface {
	Of(ctx context.Context, ref secretref.Ref) ([]dependents.Dependent, error)
	// Bucket names the configuration bucket, for messages.
	Bucket() string
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
			r.Errors = append(r.Errors, validate.Violation{Field: "pki.role", Reason: validate.ReasonPKI, Message: message(err, store.ErrNotFound)})
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
		return connect.NewResponse(&secretsv1.PutAliasResponse{Alias: describeAlias(a, nil, s.store.Kind(), now), Warnings: r.Warnings}), nil
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
		return nil, invalid([]validate.Violation{{Field: "pki", Reason: validate.ReasonPKI, Message: message(err, store.ErrInvalid) +
			"; ask for names and a TTL the role allows, or change the role (vault read " + s.store.PKIMount() + "/roles/" + rec.PKI.Role + ")"}})
	}
	if err != nil {
		return nil, writeError(err)
	}
	s.log.Info("alias stored", "keystore", rec.Keystore, "alias", rec.Alias, "version", a.Version, "pki_role", pkiRole(rec))
	return connect.NewResponse(&secretsv1.PutAliasResponse{Alias: describeAlias(a, nil, s.store.Kind(), s.now()), Warnings: r.Warnings}), nil
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
		return connect.NewResponse(&secretsv1.PutTruststoreResponse{Truststore: describeTruststore(t, nil, s.store.Kind(), now), Warnings: r.Warnings}), nil
	}
	done, err := s.audited(ctx, req.Peer().Addr, audit.Record{Action: audit.ActionSecretPut, Kind: auditKindTruststore, Name: rec.Name, Digest: truststoreDigest(m)})
	if err != nil {
		return nil, err
	}
	t, err := s.store.PutTruststore(ctx, rec)
	if err != nil {
		done("", err)
		return nil, writeError(err)
	}
	done(t.Record.Version, nil)
	s.log.Info("truststore stored", "truststore", rec.Name, "version", t.Record.Version, "certificates", len(t.Certs))
	return connect.NewResponse(&secretsv1.PutTruststoreResponse{Truststore: describeTruststore(t, nil, s.store.Kind(), s.now()), Warnings: r.Warnings}), nil
}

// GetAlias describes an alias.
func (s *Secrets) GetAlias(ctx context.Context, req *connect.Request[secretsv1.GetAliasRequest]) (*connect.Response[secretsv1.GetAliasResponse], error) {
	if err := names(req.Msg.GetKeystore(), req.Msg.GetAlias()); err != nil {
		return nil, err
	}
	ref := secretref.Ref{Keystore: req.Msg.GetKeystore(), Alias: req.Msg.GetAlias()}
	a, err := s.store.Alias(ctx, ref.Keystore, ref.Alias)
	rej := s.store.Rejection(ref)
	if err != nil && !(rej != nil && errors.Is(err, store.ErrInvalid)) {
		return nil, apiError(err)
	}
	// A rejected alias is described, with or without a version served.
	return connect.NewResponse(&secretsv1.GetAliasResponse{Alias: describeAliasEntry(store.AliasEntry{Ref: ref, Serving: a, Rejected: rej}, s.store.Kind(), s.now())}), nil
}

// GetTruststore describes a truststore.
func (s *Secrets) GetTruststore(ctx context.Context, req *connect.Request[secretsv1.GetTruststoreRequest]) (*connect.Response[secretsv1.GetTruststoreResponse], error) {
	if err := truststoreName(req.Msg.GetName()); err != nil {
		return nil, err
	}
	ref := secretref.Ref{Truststore: req.Msg.GetName()}
	t, err := s.store.Truststore(ctx, ref.Truststore)
	rej := s.store.Rejection(ref)
	if err != nil && !(rej != nil && errors.Is(err, store.ErrInvalid)) {
		return nil, apiError(err)
	}
	return connect.NewResponse(&secretsv1.GetTruststoreResponse{Truststore: describeTruststoreEntry(store.TruststoreEntry{Ref: ref, Serving: t, Rejected: rej}, s.store.Kind(), s.now())}), nil
}

// ListKeystores lists every keystore with its aliases.
func (s *Secrets) ListKeystores(_ context.Context, _ *connect.Request[secretsv1.ListKeystoresRequest]) (*connect.Response[secretsv1.ListKeystoresResponse], error) {
	now := s.now()
	resp := &secretsv1.ListKeystoresResponse{}
	var cur *secretsv1.Keystore
	for _, e := range s.store.AliasEntries() {
		if cur == nil || cur.Name != e.Ref.Keystore {
			cur = &secretsv1.Keystore{Name: e.Ref.Keystore}
			resp.Keystores = append(resp.Keystores, cur)
		}
		cur.Aliases = append(cur.Aliases, describeAliasEntry(e, s.store.Kind(), now))
	}
	return connect.NewResponse(resp), nil
}

// ListTruststores lists every truststore.
func (s *Secrets) ListTruststores(_ context.Context, _ *connect.Request[secretsv1.ListTruststoresRequest]) (*connect.Response[secretsv1.ListTruststoresResponse], error) {
	now := s.now()
	resp := &secretsv1.ListTruststoresResponse{}
	for _, e := range s.store.TruststoreEntries() {
		resp.Truststores = append(resp.Truststores, describeTruststoreEntry(e, s.store.Kind(), now))
	}
	return connect.NewResponse(resp), nil
}

// DeleteAlias deletes an alias, unless resources use it.
func (s *Secrets) DeleteAlias(ctx context.Context, req *connect.Request[secretsv1.DeleteAliasRequest]) (*connect.Response[secretsv1.DeleteAliasResponse], error) {
	if err := names(req.Msg.GetKeystore(), req.Msg.GetAlias()); err != nil {
		return nil, err
	}
	ref := secretref.Ref{Keystore: req.Msg.GetKeystore(), Alias: req.Msg.GetAlias()}
	rec := audit.Record{Action: audit.ActionSecretDelete, Kind: auditKindAlias, Name: ref.Name()}
	if err := s.checkUnused(ctx, ref, req.Msg.GetForce(), &rec); err != nil {
		return nil, err
	}
	done, err := s.audited(ctx, req.Peer().Addr, rec)
	if err != nil {
		return nil, err
	}
	err = s.store.DeleteAlias(ctx, ref.Keystore, ref.Alias)
	done("", err)
	if err != nil {
		return nil, apiError(err)
	}
	s.log.Info("alias deleted", "keystore", ref.Keystore, "alias", ref.Alias, "forced", rec.Action == audit.ActionSecretForceDelete)
	return connect.NewResponse(&secretsv1.DeleteAliasResponse{}), nil
}

// DeleteTruststore deletes a truststore, unless resources use it.
func (s *Secrets) DeleteTruststore(ctx context.Context, req *connect.Request[secretsv1.DeleteTruststoreRequest]) (*connect.Response[secretsv1.DeleteTruststoreResponse], error) {
	if err := truststoreName(req.Msg.GetName()); err != nil {
		return nil, err
	}
	ref := secretref.Ref{Truststore: req.Msg.GetName()}
	rec := audit.Record{Action: audit.ActionSecretDelete, Kind: auditKindTruststore, Name: ref.Truststore}
	if err := s.checkUnused(ctx, ref, req.Msg.GetForce(), &rec); err != nil {
		return nil, err
	}
	done, err := s.audited(ctx, req.Peer().Addr, rec)
	if err != nil {
		return nil, err
	}
	err = s.store.DeleteTruststore(ctx, ref.Truststore)
	done("", err)
	if err != nil {
		return nil, apiError(err)
	}
	s.log.Info("truststore deleted", "truststore", ref.Truststore, "forced", rec.Action == audit.ActionSecretForceDelete)
	return connect.NewResponse(&secretsv1.DeleteTruststoreResponse{}), nil
}

// maxNamedDependents bounds how many resources a refusal names.
const maxNamedDependents = 20

// checkUnused refuses the delete of ref while resources of the
// configuration use it, and when whether they do cannot be told (fail
// closed). With force it lets the delete through and turns rec into a
// forced delete that records what was found.
func (s *Secrets) checkUnused(ctx context.Context, ref secretref.Ref, force bool, rec *audit.Record) error {
	if s.dependents == nil {
		return nil
	}
	what := describeRef(ref)
	deps, err := s.dependents.Of(ctx, ref)
	switch {
	case err != nil && force:
		rec.Action, rec.Detail = audit.ActionSecretForceDelete, "forced while its users could not be determined: "+err.Error()
		s.log.Warn("forced delete of a secret whose users could not be determined", "ref", ref.String(), "error", err)
		return nil
	case err != nil:
		s.log.Warn("delete refused: cannot tell whether the secret is in use", "ref", ref.String(), "error", err)
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf(
			"cannot tell whether %s is in use: the secrets service reads the resources that use secrets from the configuration bucket %s in NATS, and that failed (%w); nothing was deleted: delete it again once NATS answers (force, keywayctl secrets delete --force, deletes it without the check)",
			what, s.dependents.Bucket(), err))
	case len(deps) == 0:
		return nil
	}
	users := make([]string, 0, min(len(deps), maxNamedDependents))
	for i, d := range deps {
		if i == maxNamedDependents {
			users = append(users, fmt.Sprintf("and %d more", len(deps)-i))
			break
		}
		users = append(users, d.String())
	}
	if force {
		rec.Action, rec.Detail = audit.ActionSecretForceDelete, "forced while in use by "+strings.Join(users, ", ")
		s.log.Warn("forced delete of a secret in use", "ref", ref.String(), "users", strings.Join(users, ", "))
		return nil
	}
	s.log.Info("delete refused: the secret is in use", "ref", ref.String(), "users", strings.Join(users, ", "))
	return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
		"%s is still used by %s; delete or re-point those first (their proxy nodes would keep the material they hold, and no new node could load them)",
		what, strings.Join(users, ", ")))
}

func describeRef(ref secretref.Ref) string {
	return ref.Kind() + " " + ref.Name()
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
		Alias:          describeAlias(a, m.store.Rejection(secretref.Ref{Keystore: a.Record.Keystore, Alias: a.Record.Alias}), m.store.Kind(), m.now()),
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
		Truststore:      describeTruststore(t, m.store.Rejection(secretref.Ref{Truststore: t.Record.Name}), m.store.Kind(), m.now()),
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

// describeAliasEntry describes an alias as listed: what is served (if
// anything) and the rejection (if any).
func describeAliasEntry(e store.AliasEntry, kind secretsv1.Backend, now time.Time) *secretsv1.Alias {
	if e.Serving != nil {
		return describeAlias(e.Serving, e.Rejected, kind, now)
	}
	return &secretsv1.Alias{Keystore: e.Ref.Keystore, Alias: e.Ref.Alias, Backend: kind, Status: secretsv1.Status_STATUS_REJECTED, Rejection: describeRejection(e.Rejected)}
}

func describeAlias(a *store.Alias, rej *store.Rejection, kind secretsv1.Backend, now time.Time) *secretsv1.Alias {
	rec := a.Record
	out := &secretsv1.Alias{
		Keystore: rec.Keystore, Alias: rec.Alias, Backend: kind, Version: a.Version, Usage: rec.Usage,
		Status: secretsv1.Status_STATUS_OK,
	}
	if rej != nil {
		out.Status, out.Rejection = secretsv1.Status_STATUS_REJECTED, describeRejection(rej)
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

func describeTruststoreEntry(e store.TruststoreEntry, kind secretsv1.Backend, now time.Time) *secretsv1.Truststore {
	if e.Serving != nil {
		return describeTruststore(e.Serving, e.Rejected, kind, now)
	}
	return &secretsv1.Truststore{Name: e.Ref.Truststore, Backend: kind, Status: secretsv1.Status_STATUS_REJECTED, Rejection: describeRejection(e.Rejected)}
}

func describeTruststore(t *store.Truststore, rej *store.Rejection, kind secretsv1.Backend, now time.Time) *secretsv1.Truststore {
	out := &secretsv1.Truststore{Name: t.Record.Name, Backend: kind, Version: t.Record.Version, Status: secretsv1.Status_STATUS_OK}
	if rej != nil {
		out.Status, out.Rejection = secretsv1.Status_STATUS_REJECTED, describeRejection(rej)
	}
	if !t.Record.UpdateTime.IsZero() {
		out.UpdateTime = timestamppb.New(t.Record.UpdateTime)
	}
	for _, c := range t.Certs {
		out.Certificates = append(out.Certificates, secret.Describe(c, now))
	}
	return out
}

func describeRejection(r *store.Rejection) *secretsv1.Rejection {
	if r == nil {
		return nil
	}
	return &secretsv1.Rejection{Version: r.Version, Reason: string(r.Reason), Message: r.Message, Time: timestamppb.New(r.Time)}
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

// writeError maps the store's errors of a put: a backend that did not take
// the value is named as the secrets service's backend, so that the caller
// knows which part failed (not the policy service, not the CLI).
func writeError(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return connect.NewError(connect.CodeUnavailable, errors.New("secrets service: "+message(err, store.ErrUnavailable)))
	}
	return apiError(err)
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
