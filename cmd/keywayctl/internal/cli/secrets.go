package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"keyway.dev/keywayctl/internal/output"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"
)

// DefaultSecretsServer is the secrets service's API under `make run`.
const DefaultSecretsServer = "https://127.0.0.1:8082" //nolint:gosec // an address, not a credential

// SecretsServerEnv names the environment variable that overrides
// [DefaultSecretsServer].
const SecretsServerEnv = "KEYWAY_SECRETS_SERVER"

// secretsGlobals are the flags of every `secrets` command.
type secretsGlobals struct {
	*globals
	server string
}

// secretTarget is what a secrets command acts on: an alias of a keystore,
// or a truststore.
type secretTarget struct {
	keystore, alias, truststore string
}

func (t *secretTarget) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.keystore, "keystore", "", "keystore name (with --alias)")
	cmd.Flags().StringVar(&t.alias, "alias", "", "alias in the keystore")
	cmd.Flags().StringVar(&t.truststore, "truststore", "", "truststore name (instead of --keystore and --alias)")
}

func (t *secretTarget) check() error {
	switch {
	case t.truststore != "" && (t.keystore != "" || t.alias != ""):
		return errors.New("give --keystore and --alias, or --truststore, not both")
	case t.truststore != "":
		return nil
	case t.keystore == "" || t.alias == "":
		return errors.New("give --keystore and --alias (an alias), or --truststore NAME")
	}
	return nil
}

func (t *secretTarget) String() string {
	if t.truststore != "" {
		return "truststore/" + t.truststore
	}
	return "alias " + t.keystore + "/" + t.alias
}

func newSecretsCommand(g *globals) *cobra.Command {
	sg := &secretsGlobals{globals: g}
	server := g.io.Getenv(SecretsServerEnv)
	if server == "" {
		server = DefaultSecretsServer
	}
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Keystores (aliases: certificate and key) and truststores of the secrets service",
		Long: `The secrets service keeps key pairs as aliases of keystores, and CA bundles as
truststores, in Vault (KV v2 or PKI) or a local directory. Bindings refer to
them by name; proxy nodes fetch the material over mTLS. Private keys are never
shown: get and list show certificates, versions and expiry.`,
		Example: `  keywayctl secrets put --keystore edge --alias gw --cert gw.crt --key gw.key
  keywayctl secrets put --keystore edge --alias web --cert web.crt --key web.key --usage server
  keywayctl secrets put --keystore edge --alias short --pki-role gw --common-name gw.example.com --ttl 24h
  keywayctl secrets put --truststore upstream-cas --cert ca.pem
  keywayctl secrets list
  keywayctl secrets get --keystore edge --alias gw -o yaml
  keywayctl secrets delete --truststore upstream-cas`,
	}
	cmd.PersistentFlags().StringVar(&sg.server, "secrets-server", server, "secrets service API URL (env "+SecretsServerEnv+")")
	cmd.AddCommand(sg.putCommand(), sg.getCommand(), sg.listCommand(), sg.deleteCommand())
	return cmd
}

// client connects to the secrets service's API.
func (sg *secretsGlobals) client() (secretsv1connect.SecretsServiceClient, error) {
	s, err := sg.settings()
	if err != nil {
		return nil, err
	}
	base, hc, opts, err := connection(s.source(settingSecretsServer.flag), s.SecretsServer, DefaultSecretsServer, sg.protocol, s)
	if err != nil {
		return nil, err
	}
	sg.server = base
	return secretsv1connect.NewSecretsServiceClient(hc, base, opts...), nil
}

// flagOf is the command-line flag a request field comes from.
var flagOf = map[string]string{
	"keystore":         "--keystore",
	"alias":            "--alias",
	"name":             "--truststore",
	"certificate_pem":  "--cert",
	"certificates_pem": "--cert",
	"private_key_pem":  "--key",
	"usage":            "--usage",
	"pki":              "--pki-role",
	"pki.role":         "--pki-role",
	"pki.common_name":  "--common-name",
	"pki.alt_names":    "--alt-name",
	"pki.ttl":          "--ttl",
}

// rpcError explains a failed call; field violations are printed one a line
// with the flag they concern.
func (sg *secretsGlobals) rpcError(err error, what string) error {
	var ce *connect.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: cannot connect to %s: is the secrets service running? (make run starts it; --secrets-server or %s points elsewhere)", what, sg.server, SecretsServerEnv)
	case connect.CodeOf(err) == connect.CodeUnimplemented:
		return fmt.Errorf("%s: %s does not serve keyway.secrets.v1.SecretsService: is --secrets-server the secrets service's API URL?", what, sg.server)
	case connect.CodeOf(err) == connect.CodeInvalidArgument && errors.As(err, &ce):
		var n int
		for _, d := range ce.Details() {
			v, derr := d.Value()
			if derr != nil {
				continue
			}
			if br, ok := v.(*errdetails.BadRequest); ok {
				for _, fv := range br.GetFieldViolations() {
					n++
					field := fv.GetField()
					if f, ok := flagOf[field]; ok {
						field = f
					}
					fmt.Fprintf(sg.io.Stderr, "error: %s: %s\n", field, fv.GetDescription())
				}
			}
		}
		if n > 0 {
			return fmt.Errorf("%s: %s; nothing was stored", what, plural(n, "problem"))
		}
	case connect.CodeOf(err) == connect.CodeNotFound && errors.As(err, &ce):
		return errors.New(ce.Message())
	case connect.CodeOf(err) == connect.CodeDeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: no answer from the secrets service at %s within %s: is it running there? (--timeout sets the limit)", what, sg.server, sg.timeout)
	case (connect.CodeOf(err) == connect.CodeUnavailable || connect.CodeOf(err) == connect.CodeFailedPrecondition) && errors.As(err, &ce):
		// The service's message names the part that failed (Vault, NATS)
		// and what became of the request.
		return fmt.Errorf("%s: %s", what, ce.Message())
	}
	if aerr := authError(err, what, "the secrets service", sg.server); aerr != nil {
		return aerr
	}
	return sg.globals.rpcError(err, what)
}

func (sg *secretsGlobals) putCommand() *cobra.Command {
	var (
		t                        secretTarget
		certFile, keyFile, usage string
		pkiRole, commonName      string
		altNames                 []string
		ttl                      time.Duration
		dryRun                   bool
	)
	cmd := &cobra.Command{
		Use:   "put (--keystore KS --alias A (--cert FILE --key FILE | --pki-role ROLE --common-name CN) | --truststore NAME --cert FILE)",
		Short: "Store an alias (certificate and key, or a Vault PKI role) or a truststore",
		Long: `Put validates and stores a new version of an alias or a truststore. An alias's
key must match its certificate, RSA keys have at least 2048 bits, and the
certificate must be valid now; a SAN is required only with --usage server.
With --pki-role the alias is issued by Vault PKI and renewed before it
expires. Nothing is stored when anything is wrong.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := t.check(); err != nil {
				return err
			}
			client, err := sg.client()
			if err != nil {
				return err
			}
			ctx, cancel := sg.withTimeout(cmd.Context())
			defer cancel()
			if t.truststore != "" {
				if certFile == "" {
					return errors.New("a truststore needs --cert FILE (one or more CA certificates, PEM)")
				}
				pem, err := readPEM("--cert", certFile, sg.io.Stdin)
				if err != nil {
					return err
				}
				resp, err := client.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: t.truststore, CertificatesPem: pem, DryRun: dryRun}))
				if err != nil {
					return sg.rpcError(err, "storing "+t.String())
				}
				printWarnings(sg.io.Stderr, resp.Msg.GetWarnings())
				ts := resp.Msg.GetTruststore()
				verb := "stored, version " + ts.GetVersion()
				if dryRun {
					verb = "valid (dry run, nothing stored)"
				}
				fmt.Fprintf(sg.io.Stdout, "truststore/%s %s: %s\n", ts.GetName(), verb, plural(len(ts.GetCertificates()), "certificate"))
				return nil
			}
			req := &secretsv1.PutAliasRequest{Keystore: t.keystore, Alias: t.alias, DryRun: dryRun}
			switch usage {
			case "", "client":
				req.Usage = secretsv1.Usage_USAGE_CLIENT
			case "server":
				req.Usage = secretsv1.Usage_USAGE_SERVER
			default:
				return fmt.Errorf("--usage %q: want client or server", usage)
			}
			switch {
			case pkiRole != "" && (certFile != "" || keyFile != ""):
				return errors.New("give --cert and --key, or --pki-role, not both: a PKI alias is issued by Vault")
			case pkiRole != "":
				req.Pki = &secretsv1.PKISpec{Role: pkiRole, CommonName: commonName, AltNames: altNames}
				if ttl > 0 {
					req.Pki.Ttl = durationpb.New(ttl)
				}
			case certFile == "" || keyFile == "":
				return errors.New("an alias needs --cert FILE and --key FILE, or --pki-role ROLE --common-name CN")
			default:
				if req.CertificatePem, err = readPEM("--cert", certFile, sg.io.Stdin); err != nil {
					return err
				}
				if req.PrivateKeyPem, err = readPEM("--key", keyFile, sg.io.Stdin); err != nil {
					return err
				}
			}
			resp, err := client.PutAlias(ctx, connect.NewRequest(req))
			if err != nil {
				return sg.rpcError(err, "storing "+t.String())
			}
			printWarnings(sg.io.Stderr, resp.Msg.GetWarnings())
			a := resp.Msg.GetAlias()
			verb := "stored, version " + a.GetVersion()
			if dryRun {
				verb = "valid (dry run, nothing stored)"
			}
			line := fmt.Sprintf("alias %s/%s %s", a.GetKeystore(), a.GetAlias(), verb)
			if leaf := firstCert(a.GetChain()); leaf != nil {
				line += fmt.Sprintf("; %s expires %s (%s), fingerprint %s", leaf.GetSubject(), leaf.GetNotAfter().AsTime().UTC().Format(time.RFC3339), stateName(leaf.GetState()), leaf.GetSha256Fingerprint())
			}
			if rt := a.GetRenewTime(); rt != nil {
				line += "; renews at " + rt.AsTime().UTC().Format(time.RFC3339)
			}
			fmt.Fprintln(sg.io.Stdout, line)
			return nil
		},
	}
	t.flags(cmd)
	f := cmd.Flags()
	f.StringVar(&certFile, "cert", "", "certificate chain (leaf first), or CA bundle for a truststore; PEM file, - for stdin")
	f.StringVar(&keyFile, "key", "", "the certificate's private key, PEM file")
	f.StringVar(&usage, "usage", "client", "what the alias's certificate is for: client or server (server needs a SAN)")
	f.StringVar(&pkiRole, "pki-role", "", "issue the alias from this Vault PKI role instead of --cert and --key")
	f.StringVar(&commonName, "common-name", "", "with --pki-role: the certificate's common name")
	f.StringSliceVar(&altNames, "alt-name", nil, "with --pki-role: subject alternative names (repeat or comma-separate)")
	f.DurationVar(&ttl, "ttl", 0, "with --pki-role: certificate lifetime (the role's default when unset)")
	f.BoolVar(&dryRun, "dry-run", false, "validate only; store nothing")
	return cmd
}

// readPEM reads a PEM file given to flag; "-" is stdin. Either is read up
// to maxPEMFile (1 MiB, what the secrets API takes in one request).
func readPEM(flag, path string, stdin io.Reader) (string, error) {
	var (
		b   []byte
		err error
	)
	if path == "-" {
		if b, err = io.ReadAll(io.LimitReader(stdin, maxPEMFile+1)); err == nil && len(b) > maxPEMFile {
			err = fmt.Errorf("standard input is over 1 MiB; the secrets API takes 1 MiB per request: give the chain and the key alone")
		}
	} else {
		b, err = readBounded(path, maxPEMFile)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	return string(b), nil
}

func printWarnings(w io.Writer, warnings []string) {
	for _, m := range warnings {
		fmt.Fprintf(w, "warning: %s\n", m)
	}
}

func firstCert(cs []*secretsv1.Certificate) *secretsv1.Certificate {
	if len(cs) == 0 {
		return nil
	}
	return cs[0]
}

func (sg *secretsGlobals) getCommand() *cobra.Command {
	var (
		t      secretTarget
		format string
	)
	cmd := &cobra.Command{
		Use:   "get (--keystore KS --alias A | --truststore NAME)",
		Short: "Describe an alias or a truststore: certificates, versions, expiry (never a key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := t.check(); err != nil {
				return err
			}
			f, err := secretsFormat(format)
			if err != nil {
				return err
			}
			client, err := sg.client()
			if err != nil {
				return err
			}
			ctx, cancel := sg.withTimeout(cmd.Context())
			defer cancel()
			now := sg.io.Now()
			if t.truststore != "" {
				resp, err := client.GetTruststore(ctx, connect.NewRequest(&secretsv1.GetTruststoreRequest{Name: t.truststore}))
				if err != nil {
					return sg.rpcError(err, "getting "+t.String())
				}
				ts := resp.Msg.GetTruststore()
				if f == output.Table {
					return writeSecretsTable(sg.io.Stdout, nil, []*secretsv1.Truststore{ts}, now)
				}
				return writeMessage(sg.io.Stdout, ts, f)
			}
			resp, err := client.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: t.keystore, Alias: t.alias}))
			if err != nil {
				return sg.rpcError(err, "getting "+t.String())
			}
			a := resp.Msg.GetAlias()
			if f == output.Table {
				return writeSecretsTable(sg.io.Stdout, []*secretsv1.Alias{a}, nil, now)
			}
			return writeMessage(sg.io.Stdout, a, f)
		},
	}
	t.flags(cmd)
	cmd.Flags().StringVarP(&format, "output", "o", "table", "output format: table, yaml or json")
	return cmd
}

func (sg *secretsGlobals) listCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every alias of every keystore, and every truststore, with expiry",
		Long: `List shows every alias (one row per alias: its leaf certificate) and every
truststore (one row per truststore: the CA that expires first). STATE is
valid, expiring (less than 30 days left, or a third of the lifetime for
short-lived certificates), expired or not-yet-valid.

STATUS is ok when VERSION is the backend's current version, and rejected when
the backend holds a newer version the service refused (written straight into
Vault or the directory, and breaking the rules of a put: a key that does not
match, an expired certificate, an RSA key under 2048 bits, PEM that does not
parse). VERSION is then still the version served, "-" if none; a line under
the table says which version was refused and why.

-o json prints {"keystores": [...], "truststores": [...]}; each carries status
and rejection {version, reason, message, time}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := secretsFormat(format)
			if err != nil {
				return err
			}
			client, err := sg.client()
			if err != nil {
				return err
			}
			ctx, cancel := sg.withTimeout(cmd.Context())
			defer cancel()
			ks, err := client.ListKeystores(ctx, connect.NewRequest(&secretsv1.ListKeystoresRequest{}))
			if err != nil {
				return sg.rpcError(err, "listing keystores")
			}
			ts, err := client.ListTruststores(ctx, connect.NewRequest(&secretsv1.ListTruststoresRequest{}))
			if err != nil {
				return sg.rpcError(err, "listing truststores")
			}
			if f == output.Table {
				var aliases []*secretsv1.Alias
				for _, k := range ks.Msg.GetKeystores() {
					aliases = append(aliases, k.GetAliases()...)
				}
				if len(aliases) == 0 && len(ts.Msg.GetTruststores()) == 0 {
					fmt.Fprintln(sg.io.Stdout, "No aliases or truststores. Add one with 'keywayctl secrets put'.")
					return nil
				}
				return writeSecretsTable(sg.io.Stdout, aliases, ts.Msg.GetTruststores(), sg.io.Now())
			}
			return writeListing(sg.io.Stdout, ks.Msg, ts.Msg, f)
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "table", "output format: table, yaml or json")
	return cmd
}

func (sg *secretsGlobals) deleteCommand() *cobra.Command {
	var (
		t     secretTarget
		force bool
	)
	cmd := &cobra.Command{
		Use:   "delete (--keystore KS --alias A | --truststore NAME) [--force]",
		Short: "Delete an alias or a truststore, with all its versions",
		Long: `Delete removes an alias or a truststore with all its versions. A secret that a
PolicyBinding or a Listener references is not deleted: the answer names those
resources (delete or re-point them first). When the secrets service cannot
read the configuration (NATS away), it cannot tell, and refuses too.

--force deletes anyway; the audit record (action secret.delete.forced) names
the resources that still used it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := t.check(); err != nil {
				return err
			}
			client, err := sg.client()
			if err != nil {
				return err
			}
			ctx, cancel := sg.withTimeout(cmd.Context())
			defer cancel()
			if t.truststore != "" {
				_, err = client.DeleteTruststore(ctx, connect.NewRequest(&secretsv1.DeleteTruststoreRequest{Name: t.truststore, Force: force}))
			} else {
				_, err = client.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: t.keystore, Alias: t.alias, Force: force}))
			}
			if err != nil {
				return sg.rpcError(err, "deleting "+t.String())
			}
			fmt.Fprintf(sg.io.Stdout, "%s deleted\n", t.String())
			return nil
		},
	}
	t.flags(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "delete even when resources use it, or when that cannot be told (recorded in the audit trail)")
	return cmd
}

func secretsFormat(s string) (output.Format, error) {
	f, err := output.ParseFormat(s)
	if err != nil || f == output.Name {
		return "", fmt.Errorf("unknown output format %q; want table, yaml or json", s)
	}
	return f, nil
}

// writeMessage prints one message as JSON or YAML (protojson field names).
func writeMessage(w io.Writer, m proto.Message, f output.Format) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	return writeJSONAs(w, b, f)
}

func writeListing(w io.Writer, ks *secretsv1.ListKeystoresResponse, ts *secretsv1.ListTruststoresResponse, f output.Format) error {
	kb, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(ks)
	if err != nil {
		return err
	}
	tb, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(ts)
	if err != nil {
		return err
	}
	var k, t map[string]json.RawMessage
	if err := json.Unmarshal(kb, &k); err != nil {
		return err
	}
	if err := json.Unmarshal(tb, &t); err != nil {
		return err
	}
	b, err := json.MarshalIndent(map[string]json.RawMessage{"keystores": k["keystores"], "truststores": t["truststores"]}, "", "  ")
	if err != nil {
		return err
	}
	return writeJSONAs(w, b, f)
}

// writeJSONAs prints JSON as is, or converted to YAML.
func writeJSONAs(w io.Writer, b []byte, f output.Format) error {
	if f == output.JSON {
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err := w.Write(buf.Bytes())
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return err
	}
	blockYAML(&doc)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	return enc.Close()
}

// writeSecretsTable prints aliases (one row each, for the leaf) and
// truststores (one row each, for the CA that expires first), then one line
// per rejected version.
func writeSecretsTable(w io.Writer, aliases []*secretsv1.Alias, stores []*secretsv1.Truststore, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	var rejected []string
	if len(aliases) > 0 {
		fmt.Fprintln(tw, "KEYSTORE\tALIAS\tBACKEND\tVERSION\tUSAGE\tSUBJECT\tEXPIRES\tSTATE\tSTATUS\tFINGERPRINT")
		for _, a := range aliases {
			leaf := firstCert(a.GetChain())
			subject, expires, state, fp := "-", "-", "-", "-"
			if leaf != nil {
				subject, state, fp = leaf.GetSubject(), stateName(leaf.GetState()), short(leaf.GetSha256Fingerprint())
				expires = expiresIn(leaf, now)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.GetKeystore(), a.GetAlias(), backendName(a.GetBackend()),
				orDash(a.GetVersion()), usageName(a.GetUsage()), subject, expires, state, statusName(a.GetStatus()), fp)
			if r := a.GetRejection(); r != nil {
				rejected = append(rejected, rejectionLine("alias "+a.GetKeystore()+"/"+a.GetAlias(), a.GetBackend(), a.GetVersion(), r))
			}
		}
	}
	if len(stores) > 0 {
		if len(aliases) > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintln(tw, "TRUSTSTORE\tBACKEND\tVERSION\tCERTIFICATES\tFIRST-EXPIRY\tSTATE\tSTATUS")
		for _, t := range stores {
			var first *secretsv1.Certificate
			for _, c := range t.GetCertificates() {
				if first == nil || c.GetNotAfter().AsTime().Before(first.GetNotAfter().AsTime()) {
					first = c
				}
			}
			expires, state := "-", "-"
			if first != nil {
				expires, state = expiresIn(first, now), stateName(first.GetState())
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", t.GetName(), backendName(t.GetBackend()), orDash(t.GetVersion()), len(t.GetCertificates()), expires, state, statusName(t.GetStatus()))
			if r := t.GetRejection(); r != nil {
				rejected = append(rejected, rejectionLine("truststore "+t.GetName(), t.GetBackend(), t.GetVersion(), r))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rejected) > 0 {
		fmt.Fprintln(w)
	}
	for _, l := range rejected {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	return nil
}

// rejectionLine says which backend version of a secret was refused, why,
// and what is served instead.
func rejectionLine(what string, b secretsv1.Backend, serving string, r *secretsv1.Rejection) string {
	store := "backend"
	switch b {
	case secretsv1.Backend_BACKEND_VAULT_KV, secretsv1.Backend_BACKEND_VAULT_PKI:
		store = "Vault"
	case secretsv1.Backend_BACKEND_LOCAL:
		store = "directory"
	}
	serves := "serving version " + serving
	if serving == "" {
		serves = "serving no version"
	}
	return fmt.Sprintf("%s: %s version %s rejected (%s) since %s; %s: %s", what, store, orDash(r.GetVersion()), r.GetReason(),
		r.GetTime().AsTime().UTC().Format(time.RFC3339), serves, r.GetMessage())
}

func statusName(s secretsv1.Status) string {
	switch s {
	case secretsv1.Status_STATUS_OK:
		return "ok"
	case secretsv1.Status_STATUS_REJECTED:
		return "rejected"
	}
	return "-"
}

func expiresIn(c *secretsv1.Certificate, now time.Time) string {
	at := c.GetNotAfter().AsTime()
	d := at.Sub(now)
	if d < 0 {
		return at.UTC().Format("2006-01-02") + " (" + output.Span(-d) + " ago)"
	}
	return at.UTC().Format("2006-01-02") + " (in " + output.Span(d) + ")"
}

// short is the start of a fingerprint, enough to tell certificates apart
// in a table.
func short(fp string) string {
	if len(fp) > 16 {
		return fp[:16] + "…"
	}
	return fp
}

func stateName(s secretsv1.State) string {
	switch s {
	case secretsv1.State_STATE_VALID:
		return "valid"
	case secretsv1.State_STATE_EXPIRING:
		return "expiring"
	case secretsv1.State_STATE_EXPIRED:
		return "expired"
	case secretsv1.State_STATE_NOT_YET_VALID:
		return "not-yet-valid"
	}
	return "-"
}

func backendName(b secretsv1.Backend) string {
	switch b {
	case secretsv1.Backend_BACKEND_LOCAL:
		return "local"
	case secretsv1.Backend_BACKEND_VAULT_KV:
		return "vault-kv"
	case secretsv1.Backend_BACKEND_VAULT_PKI:
		return "vault-pki"
	}
	return "-"
}

func usageName(u secretsv1.Usage) string {
	if u == secretsv1.Usage_USAGE_SERVER {
		return "server"
	}
	return "client"
}

// blockYAML turns JSON's flow style into YAML's block style, and
// multi-line strings into literal blocks.
func blockYAML(n *yaml.Node) {
	n.Style = 0
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && strings.Contains(n.Value, "\n") {
		n.Style = yaml.LiteralStyle
	}
	for _, c := range n.Content {
		blockYAML(c)
	}
}
