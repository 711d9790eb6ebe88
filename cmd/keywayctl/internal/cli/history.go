package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"keyway.dev/keywayctl/internal/resource"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// parseDataFormat checks an -o value for history and audit: table, json or
// yaml.
func parseDataFormat(s string) (string, error) {
	switch f := strings.ToLower(s); f {
	case "table", "json", "yaml":
		return f, nil
	}
	return "", fmt.Errorf("unknown output format %q; want table, json or yaml", s)
}

// writeData prints v as indented JSON, or as YAML in the same field order.
func writeData(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == "json" {
		_, err = w.Write(append(b, '\n'))
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil { // JSON is YAML
		return err
	}
	plainStyle(&doc)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	return enc.Close()
}

// plainStyle drops the flow style and quotes that a JSON document parses
// with, so that the encoder picks YAML's block style and quotes only where
// needed; multi-line strings become literal blocks.
func plainStyle(n *yaml.Node) {
	n.Style = 0
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "\n") {
		n.Style = yaml.LiteralStyle
	}
	for _, c := range n.Content {
		plainStyle(c)
	}
}

// calledError is the caller's part of a refused call: the service's message,
// which names the problem and the fix.
func (g *globals) calledError(err error, what string, codes ...connect.Code) error {
	ce := new(connect.Error)
	if errors.As(err, &ce) {
		for _, c := range codes {
			if ce.Code() == c {
				return errors.New(ce.Message())
			}
		}
	}
	return g.rpcError(err, what)
}

// revisionJSON is one revision as history -o json|yaml prints it; resource
// is in the shape apply -f reads.
type revisionJSON struct {
	Revision  uint64          `json:"revision"`
	Created   string          `json:"created"`
	Operation string          `json:"operation"`
	Digest    string          `json:"digest,omitempty"`
	Resource  json.RawMessage `json:"resource,omitempty"`
}

func operation(op policyv1.Operation) string {
	switch op {
	case policyv1.Operation_OPERATION_PUT:
		return "put"
	case policyv1.Operation_OPERATION_DELETE:
		return "delete"
	}
	return "-"
}

func timestamp(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func newHistoryCommand(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "history KIND NAME",
		Short: "List the stored revisions of a resource",
		Long: `History lists the revisions of one resource that the store keeps (the last
16 writes of each resource), newest first, deletions included. KIND is
` + kindHelp + `; KIND/NAME works too.

Output formats (-o):
  table  REVISION CREATED OP DIGEST (the first 12 hex digits of the SHA-256
         of the stored bytes)
  json   {"items": [...]}, each with the resource as stored, in the shape
         apply -f reads (private keys redacted as get redacts them)
  yaml   the same as YAML

'keywayctl rollback KIND NAME --to-revision N' stores revision N again.`,
		Example: `  keywayctl history service orders
  keywayctl history pb/orders-mtls -o yaml`,
		Args: kindArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := parseDataFormat(format)
			if err != nil {
				return err
			}
			k, name, err := parseTarget(args, true)
			if err != nil {
				return err
			}
			client, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.withTimeout(cmd.Context())
			defer cancel()
			ref := k.Short() + "/" + name
			resp, err := client.History(ctx, connect.NewRequest(&policyv1.HistoryRequest{Kind: k.Name, Name: name}))
			if err != nil {
				return g.calledError(err, "reading the history of "+ref, connect.CodeNotFound, connect.CodeInvalidArgument)
			}
			revs := resp.Msg.GetRevisions()
			if f == "table" {
				tw := tabwriter.NewWriter(g.io.Stdout, 0, 8, 3, ' ', 0)
				fmt.Fprintln(tw, "REVISION\tCREATED\tOP\tDIGEST")
				for _, r := range revs {
					d := r.GetDigest()
					if len(d) > 12 {
						d = d[:12]
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", r.GetRevision(), timestamp(r.GetCreateTime()), operation(r.GetOperation()), orDash(d))
				}
				return tw.Flush()
			}
			items := make([]revisionJSON, len(revs))
			for i, r := range revs {
				items[i] = revisionJSON{Revision: r.GetRevision(), Created: timestamp(r.GetCreateTime()), Operation: operation(r.GetOperation()), Digest: r.GetDigest()}
				if res := r.GetResource(); res != nil {
					if m := resource.Member(res); m != nil {
						b, err := protojson.Marshal(m)
						if err != nil {
							return fmt.Errorf("encoding revision %d: %w", r.GetRevision(), err)
						}
						var buf bytes.Buffer
						if err := json.Compact(&buf, b); err != nil {
							return err
						}
						items[i].Resource = buf.Bytes()
					}
				}
			}
			return writeData(g.io.Stdout, f, struct {
				Items []revisionJSON `json:"items"`
			}{items})
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

func newRollbackCommand(g *globals) *cobra.Command {
	var (
		to     uint64
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "rollback KIND NAME --to-revision N",
		Short: "Store an earlier revision of a resource again",
		Long: `Rollback stores revision N of a resource again, as a new revision, after the
same validation as apply: it is refused, with the reasons, when that revision
no longer validates (a Service it names is gone, a certificate expired), or
when N is not a revision of that resource. 'keywayctl history KIND NAME'
lists the revisions kept. KIND is ` + kindHelp + `; KIND/NAME works too.`,
		Example: `  keywayctl rollback service orders --to-revision 12 --dry-run
  keywayctl rollback pb/orders-mtls --to-revision 12`,
		Args: kindArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			k, name, err := parseTarget(args, true)
			if err != nil {
				return err
			}
			if to == 0 {
				return fmt.Errorf("missing --to-revision: give the revision to store again ('keywayctl history %s %s' lists them)", k.Short(), name)
			}
			client, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.withTimeout(cmd.Context())
			defer cancel()
			ref := k.Short() + "/" + name
			resp, err := client.Rollback(ctx, connect.NewRequest(&policyv1.RollbackRequest{Kind: k.Name, Name: name, ToRevision: to, DryRun: dryRun}))
			if err != nil {
				return g.calledError(err, "rolling back "+ref, connect.CodeNotFound, connect.CodeInvalidArgument, connect.CodeAborted, connect.CodeUnavailable)
			}
			r := resp.Msg.GetResult()
			for _, w := range r.GetWarnings() {
				fmt.Fprintf(g.io.Stderr, "warning: %s: %s\n", w.GetField(), w.GetMessage())
			}
			switch r.GetAction() {
			case policyv1.Action_ACTION_VALID:
				fmt.Fprintf(g.io.Stdout, "%s: revision %d is valid and would be stored again (dry run)\n", ref, to)
			case policyv1.Action_ACTION_UNCHANGED:
				fmt.Fprintf(g.io.Stdout, "%s unchanged: the stored revision %d already says what revision %d said\n", ref, r.GetRevision(), to)
			default:
				fmt.Fprintf(g.io.Stdout, "%s rolled back to revision %d (stored as revision %d)\n", ref, to, r.GetRevision())
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&to, "to-revision", 0, "the revision to store again (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate only; store nothing")
	return cmd
}

// auditJSON is one audit record as audit -o json|yaml prints it.
type auditJSON struct {
	Sequence uint64 `json:"sequence"`
	Time     string `json:"time"`
	Actor    struct {
		Identity string `json:"identity,omitempty"`
		Method   string `json:"method,omitempty"`
		Address  string `json:"address,omitempty"`
	} `json:"actor"`
	Service  string `json:"service"`
	Action   string `json:"action"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Revision uint64 `json:"revision,omitempty"`
	Version  string `json:"version,omitempty"`
	Digest   string `json:"digest,omitempty"`
	Result   string `json:"result"`
	Error    string `json:"error,omitempty"`
	ID       string `json:"id"`
	TraceID  string `json:"traceId,omitempty"`
}

func newAuditCommand(g *globals) *cobra.Command {
	var (
		format string
		since  time.Duration
		limit  uint32
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit trail of writes",
		Long: `Audit shows the newest records of the audit trail (the JetStream stream
keyway-audit): every apply, delete, rollback and secrets put and delete, who
made it, from where, and what was stored (a SHA-256 digest, never a key).
A write has two records: "attempt", taken before the write is made, and
"ok" or "failed" after it.

Output formats (-o): table, json ({"items": [...]}) or yaml.`,
		Example: `  keywayctl audit
  keywayctl audit --since 1h --limit 500 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := parseDataFormat(format)
			if err != nil {
				return err
			}
			if since < 0 {
				return fmt.Errorf("--since %s: give a positive duration such as 1h", since)
			}
			client, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.withTimeout(cmd.Context())
			defer cancel()
			req := &policyv1.ListAuditRequest{Limit: limit}
			if since > 0 {
				req.Since = timestamppb.New(g.io.Now().Add(-since))
			}
			resp, err := client.ListAudit(ctx, connect.NewRequest(req))
			if err != nil {
				return g.calledError(err, "reading the audit trail", connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeUnavailable)
			}
			recs := resp.Msg.GetRecords()
			if f == "table" {
				tw := tabwriter.NewWriter(g.io.Stdout, 0, 8, 3, ' ', 0)
				fmt.Fprintln(tw, "TIME\tACTOR\tSERVICE\tACTION\tRESOURCE\tREVISION\tRESULT")
				for _, r := range recs {
					actor := r.GetActorIdentity()
					if actor == "" {
						actor = r.GetActorAddress()
					} else if r.GetActorAddress() != "" {
						actor += " (" + r.GetActorAddress() + ")"
					}
					rev := r.GetVersion()
					if r.GetRevision() != 0 {
						rev = strconv.FormatUint(r.GetRevision(), 10)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s/%s\t%s\t%s\n", timestamp(r.GetTime()), orDash(actor), r.GetService(), r.GetAction(),
						r.GetKind(), r.GetName(), orDash(rev), r.GetResult())
				}
				return tw.Flush()
			}
			items := make([]auditJSON, len(recs))
			for i, r := range recs {
				a := &items[i]
				a.Sequence, a.Time = r.GetSequence(), timestamp(r.GetTime())
				a.Actor.Identity, a.Actor.Method, a.Actor.Address = r.GetActorIdentity(), r.GetActorMethod(), r.GetActorAddress()
				a.Service, a.Action, a.Kind, a.Name = r.GetService(), r.GetAction(), r.GetKind(), r.GetName()
				a.Revision, a.Version, a.Digest, a.Result, a.Error = r.GetRevision(), r.GetVersion(), r.GetDigest(), r.GetResult(), r.GetError()
				a.ID, a.TraceID = r.GetId(), r.GetTraceId()
			}
			return writeData(g.io.Stdout, f, struct {
				Items []auditJSON `json:"items"`
			}{items})
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "table", "output format: table, json or yaml")
	cmd.Flags().DurationVar(&since, "since", 0, "only records of this last while, e.g. 1h; default: all kept")
	cmd.Flags().Uint32Var(&limit, "limit", 100, "at most this many records, the newest (at most 1000)")
	return cmd
}
