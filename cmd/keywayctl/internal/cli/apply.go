package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"keyway.dev/keywayctl/internal/manifest"
	"keyway.dev/keywayctl/internal/output"
	"keyway.dev/keywayctl/internal/resource"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"
)

// sendFlags are the flags of the commands that send resources to Apply
// (apply, validate, import apigee), defined here once so that they mean
// the same everywhere.
type sendFlags struct {
	dryRun bool
	wait   bool
	probe  bool
	// noProbe is the deprecated spelling of --probe=false, kept for the
	// scripts that use it.
	noProbe   bool
	probePath string
}

// sendOptions is what sendFlags ask of one Apply.
type sendOptions struct {
	dryRun    bool
	probe     policyv1.ProbeMode
	probePath string
	wait      bool
}

// register defines the flags on cmd. validate is always a dry run: it has
// no --dry-run and no --wait.
func (f *sendFlags) register(cmd *cobra.Command, validate bool) {
	fs := cmd.Flags()
	if !validate {
		fs.BoolVar(&f.dryRun, "dry-run", false, "validate only; store nothing (same as validate)")
		fs.BoolVar(&f.wait, "wait", false, "after storing, wait until every live proxy node serves the applied revision (at most --timeout); fail if they do not")
	}
	fs.BoolVar(&f.probe, "probe", true, "before storing, handshake with every endpoint of each tls-outbound binding's Service and refuse the apply if one refuses the binding's TLS settings (an endpoint that cannot be reached is a warning); --probe=false skips it")
	fs.BoolVar(&f.noProbe, "no-probe", false, "deprecated: use --probe=false")
	_ = fs.MarkHidden("no-probe")
	fs.StringVar(&f.probePath, "probe-path", "", "path of the HTTP request the live probe sends after each handshake (default: the binding's probePath, else /)")
}

// options checks the flags together. The probe mode is always sent
// explicitly, so that the policy service's default for clients that leave
// it unset (probe dry runs only) does not decide for keywayctl.
func (f *sendFlags) options(cmd *cobra.Command, validate bool, stderr io.Writer) (sendOptions, error) {
	probe := f.probe
	if f.noProbe {
		if cmd.Flags().Changed("probe") && f.probe {
			return sendOptions{}, fmt.Errorf("--probe and --no-probe: give one (--no-probe is --probe=false)")
		}
		fmt.Fprintln(stderr, "note: --no-probe is deprecated: use --probe=false")
		probe = false
	}
	o := sendOptions{dryRun: f.dryRun || validate, probe: policyv1.ProbeMode_PROBE_MODE_OFF, probePath: f.probePath, wait: f.wait}
	if probe {
		o.probe = policyv1.ProbeMode_PROBE_MODE_ON
	} else if f.probePath != "" {
		return sendOptions{}, fmt.Errorf("--probe-path with --probe=false: there is no probe to send that request")
	}
	if o.wait && o.dryRun {
		return sendOptions{}, fmt.Errorf("--wait and a dry run: nothing is stored, so there is nothing to wait for")
	}
	return o, nil
}

// changed names the flags of f given on cmd's command line.
func (f *sendFlags) changed(cmd *cobra.Command) []string {
	var out []string
	for _, name := range []string{"dry-run", "wait", "probe", "no-probe", "probe-path"} {
		if fl := cmd.Flags().Lookup(name); fl != nil && fl.Changed {
			out = append(out, "--"+name)
		}
	}
	return out
}

// probeHelp is what the live probe does, for the commands' long help.
const probeHelp = `The live probe runs by default: for each tls-outbound binding, a real TLS
handshake with every endpoint of its Service, made with the binding's context
exactly as a proxy node makes it, then one HTTP request (--probe-path). An
endpoint that answers and refuses (unknown_authority, legacy_common_name,
client_certificate_rejected, an nginx 400 "No required SSL certificate was
sent", ...) refuses the apply with the typed reason and the fix, and nothing
is stored. An endpoint the policy service cannot reach (connection_refused,
host_unreachable, dns_failure, dial_timeout) is a warning: the apply goes on,
since the proxy nodes may reach what the policy service cannot. The policy
service bounds the probe (5s per endpoint, 10s per apply by default).
--probe=false skips it (--no-probe, deprecated, is the same).`

// newApplyCommand builds `apply`, or `validate` when validateOnly is set
// (an apply with dry_run and no --dry-run flag).
func newApplyCommand(g *globals, validateOnly bool) *cobra.Command {
	var (
		files []string
		flags sendFlags
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE...",
		Short: "Validate and store resources from manifests, all or none",
		Long: `Apply sends every resource of every file in one request: the policy service
validates them together (a binding may target a Service in the same request)
and stores none unless all are valid. Each problem is reported at the file,
line and column it comes from.

FILE is a YAML file (several documents separated by ---), a JSON file, a
directory (its *.yaml, *.yml and *.json files) or - for standard input.

` + probeHelp,
		Example: `  keywayctl apply -f orders.yaml
  keywayctl apply -f deploy/ --dry-run
  keywayctl apply -f orders.yaml --probe=false
  keywayctl get service orders -o yaml | keywayctl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("no manifests: give -f FILE (a file, a directory, or - for stdin)\nSee '%s --help' for usage.", cmd.CommandPath())
			}
			opts, err := flags.options(cmd, validateOnly, g.io.Stderr)
			if err != nil {
				return err
			}
			return g.apply(cmd, files, opts)
		},
	}
	if validateOnly {
		cmd.Use = "validate -f FILE..."
		cmd.Short = "Check manifests against the policy service without storing anything"
		cmd.Long = `Validate sends the resources as apply does, with dry_run set: the policy
service checks them (against what is stored, too) and stores nothing.

` + probeHelp
		cmd.Example = `  keywayctl validate -f orders.yaml
  keywayctl validate -f deploy/ --probe=false`
	} else {
		cmd.Long += `

With --wait, apply then follows the rollout: one line as each live proxy node
starts serving the applied revision, then a summary. It exits non-zero when
some node still does not serve it after --timeout (default 30s), naming those
nodes and their last errors.`
		cmd.Example += `
  keywayctl apply -f orders.yaml --wait --timeout 1m`
	}
	flags.register(cmd, validateOnly)
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory, or - for stdin (repeatable)")
	return cmd
}

func (g *globals) apply(cmd *cobra.Command, files []string, opts sendOptions) error {
	m, err := manifest.Read(files, g.io.Stdin)
	if err != nil {
		if n := countJoined(err); n > 0 {
			// Each problem on its own line, then what it means.
			return errors.Join(err, fmt.Errorf("nothing sent: %s in the manifests", plural(n, "problem")))
		}
		return err
	}
	for _, n := range m.Notes() {
		fmt.Fprintf(g.io.Stderr, "note: %s\n", n)
	}
	return g.send(cmd, m, opts)
}

// send applies (or validates) the resources of m and prints the results.
func (g *globals) send(cmd *cobra.Command, m manifest.Manifest, opts sendOptions) error {
	client, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.withTimeout(cmd.Context())
	defer cancel()
	resp, err := client.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{
		Resources: m.Resources(),
		DryRun:    opts.dryRun,
		Probe:     opts.probe,
		ProbePath: opts.probePath,
	}))
	if err != nil {
		return g.applyError(err, m, opts.dryRun)
	}
	printResults(g.io, m, resp.Msg.GetResults(), opts.dryRun)
	if !opts.wait {
		return nil
	}
	return g.waitRollout(cmd, client, resp.Msg.GetRevision(), firstRevision(resp.Msg))
}

// waitRollout follows the rollout of rev until every live node serves it or
// --timeout passes, printing a line as each node starts serving it, then a
// summary. It fails when the rollout is not complete, and when a node that
// reached rev refused a key written from since on (see [refusalErrors]).
func (g *globals) waitRollout(cmd *cobra.Command, client policyv1connect.PolicyServiceClient, rev, since uint64) error {
	start := time.Now()
	req := &policyv1.WatchRolloutRequest{Revision: rev, Since: since}
	if g.timeout > 0 {
		req.Timeout = durationpb.New(g.timeout)
	}
	// The server ends the stream at the timeout; this bound only guards
	// against a server that does not.
	ctx, cancel := context.WithTimeout(cmd.Context(), max(g.timeout, 0)+10*time.Second)
	defer cancel()
	stream, err := client.WatchRollout(ctx, connect.NewRequest(req))
	if err != nil {
		return g.rpcError(err, fmt.Sprintf("following the rollout of revision %d", rev))
	}
	defer func() { _ = stream.Close() }()
	reported := make(map[string]bool)
	var last *policyv1.Rollout
	for stream.Receive() {
		last = stream.Msg().GetRollout()
		for _, n := range last.GetServing() {
			if !reported[n.GetId()] {
				reported[n.GetId()] = true
				fmt.Fprintf(g.io.Stdout, "node %s serves revision %d (at %d, after %s)\n", n.GetId(), rev, n.GetRevision(), time.Since(start).Round(time.Millisecond))
			}
		}
	}
	if err := stream.Err(); err != nil {
		return g.rpcError(err, fmt.Sprintf("following the rollout of revision %d", rev))
	}
	total := len(last.GetServing()) + len(last.GetPending())
	if last.GetFailed() {
		errs := refusalErrors(last)
		return errors.Join(append(errs, fmt.Errorf("rollout of revision %d failed: every node reached it, but %s refused a resource of it", rev, plural(refusingNodes(last), "node")))...)
	}
	if last.GetComplete() {
		fmt.Fprintf(g.io.Stdout, "rollout of revision %d complete: %d of %s serve it (%s)\n", rev, len(last.GetServing()), plural(total, "node"), time.Since(start).Round(time.Millisecond))
		return nil
	}
	if total == 0 {
		return fmt.Errorf("revision %d is stored, but no live proxy node reported within %s: are the nodes running and connected to NATS?", rev, g.timeout)
	}
	errs := refusalErrors(last)
	for _, n := range last.GetPending() {
		msg := fmt.Sprintf("node %s (%s) still serves revision %d", n.GetId(), n.GetProxyAddress(), n.GetRevision())
		if es := n.GetErrors(); len(es) > 0 {
			msg += fmt.Sprintf("; last error on %s: %s", es[len(es)-1].GetKey(), es[len(es)-1].GetMessage())
		}
		errs = append(errs, errors.New(msg))
	}
	errs = append(errs, fmt.Errorf("rollout of revision %d incomplete after %s: %d of %s serve it", rev, g.timeout, len(last.GetServing()), plural(total, "node")))
	return errors.Join(errs...)
}

// countJoined counts the errors at the leaves of a tree of joined errors,
// or returns 0 when err joins nothing.
func countJoined(err error) int {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return 0
	}
	n := 0
	for _, e := range j.Unwrap() {
		n += max(1, countJoined(e))
	}
	return n
}

// applyError prints the field violations of a refused apply at their
// positions and returns a summary; other errors are returned as they are.
func (g *globals) applyError(err error, m manifest.Manifest, dryRun bool) error {
	what := fmt.Sprintf("applying %s", plural(len(m), "resource"))
	if dryRun {
		what = fmt.Sprintf("validating %s", plural(len(m), "resource"))
	}
	ce := new(connect.Error)
	if !errors.As(err, &ce) {
		return g.rpcError(err, what)
	}
	switch ce.Code() {
	case connect.CodeInvalidArgument:
		var fvs []*errdetails.BadRequest_FieldViolation
		var warnings []*policyv1.Warning
		for _, d := range ce.Details() {
			v, derr := d.Value()
			if derr != nil {
				continue
			}
			switch v := v.(type) {
			case *errdetails.BadRequest:
				fvs = append(fvs, v.GetFieldViolations()...)
			case *policyv1.Warnings:
				warnings = append(warnings, v.GetWarnings()...)
			}
		}
		slices.SortStableFunc(warnings, func(a, b *policyv1.Warning) int {
			return comparePositions(m, a.GetField(), b.GetField())
		})
		for _, w := range warnings {
			fmt.Fprintf(g.io.Stderr, "warning: %s\n", locate(m, w.GetField(), w.GetMessage()))
		}
		// In the order of the files, whatever order the server found them.
		slices.SortStableFunc(fvs, func(a, b *errdetails.BadRequest_FieldViolation) int {
			return comparePositions(m, a.GetField(), b.GetField())
		})
		for _, fv := range fvs {
			fmt.Fprintf(g.io.Stderr, "error: %s\n", locate(m, fv.GetField(), fv.GetDescription()))
		}
		n := len(fvs)
		if n == 0 {
			return fmt.Errorf("%s: %s", what, ce.Message())
		}
		if dryRun {
			return fmt.Errorf("invalid: %s", plural(n, "problem"))
		}
		return fmt.Errorf("nothing applied: %s", plural(n, "problem"))
	case connect.CodeAborted:
		return fmt.Errorf("%s: %s (aborted: a conflict; nothing was applied)", what, ce.Message())
	}
	return g.rpcError(err, what)
}

// printResults prints one line per result, then its warnings (stderr) and
// certificates.
func printResults(o *IO, m manifest.Manifest, results []*policyv1.ApplyResult, dryRun bool) {
	now := o.Now()
	for _, r := range results {
		ref := strings.ToLower(r.GetKind()) + "/" + r.GetName()
		switch {
		case dryRun:
			fmt.Fprintf(o.Stdout, "%s %s (dry run)\n", ref, actionWord(r.GetAction(), dryRun))
		default:
			fmt.Fprintf(o.Stdout, "%s %s (revision %d)\n", ref, actionWord(r.GetAction(), dryRun), r.GetRevision())
		}
		for _, w := range r.GetWarnings() {
			fmt.Fprintf(o.Stderr, "warning: %s\n", locate(m, w.GetField(), w.GetMessage()))
		}
		for _, c := range r.GetCertificates() {
			printCertificate(o.Stdout, m, c, now)
		}
		for _, p := range r.GetProbes() {
			printProbe(o.Stdout, p, now)
		}
	}
}

// printProbe prints one live probe result:
//
//	probe 10.0.0.7:8443 (SNI orders.internal): ok, TLS 1.3, TLS_AES_128_GCM_SHA256, h2, 3ms; upstream CN=orders.internal expires … ; client certificate requested and sent
func printProbe(w io.Writer, p *policyv1.ProbeResult, now time.Time) {
	if !p.GetOk() {
		not := ""
		if !p.GetReachable() {
			not = "not reached: "
		}
		fmt.Fprintf(w, "probe %s (SNI %s): %s%s: %s\n", p.GetEndpoint(), p.GetServerName(), not, p.GetReason(), p.GetDetail())
		return
	}
	line := fmt.Sprintf("probe %s (SNI %s): ok, %s, %s", p.GetEndpoint(), p.GetServerName(), p.GetTlsVersion(), p.GetCipherSuite())
	if p.GetAlpn() != "" {
		line += ", " + p.GetAlpn()
	}
	if d := p.GetElapsed(); d != nil {
		line += fmt.Sprintf(", %s", d.AsDuration().Round(100*time.Microsecond))
	}
	if st := p.GetHttpStatus(); st != 0 {
		line += fmt.Sprintf(", GET %s: %d", p.GetHttpPath(), st)
	}
	if c := p.GetPeerCertificate(); c != nil {
		line += "; upstream " + c.GetSubject()
		if na := c.GetNotAfter(); na != nil {
			line += fmt.Sprintf(" expires %s (in %s)", na.AsTime().UTC().Format(time.RFC3339), output.Span(na.AsTime().Sub(now)))
		}
	}
	switch {
	case p.GetClientCertificateRequested() && p.GetClientCertificateSent():
		line += "; client certificate requested and sent"
	case p.GetClientCertificateRequested():
		line += "; client certificate requested, none sent"
	}
	fmt.Fprintln(w, line)
}

func actionWord(a policyv1.Action, dryRun bool) string {
	switch a {
	case policyv1.Action_ACTION_CREATED:
		return "created"
	case policyv1.Action_ACTION_UPDATED:
		return "updated"
	case policyv1.Action_ACTION_UNCHANGED:
		return "unchanged"
	case policyv1.Action_ACTION_VALID:
		return "valid"
	}
	if dryRun {
		return "valid"
	}
	return "applied"
}

// printCertificate prints a certificate's subject, expiry and fingerprint:
//
//	certificate spec.config.certificate.crt: CN=gateway expires 2027-01-01T00:00:00Z (in 40 days), sha256 ab12…
func printCertificate(w io.Writer, m manifest.Manifest, c *policyv1.CertificateInfo, now time.Time) {
	field := c.GetField()
	if _, _, rel := m.Locate(field); rel != "" {
		field = rel
	}
	var when string
	if na := c.GetNotAfter(); na != nil {
		t := na.AsTime()
		if t.After(now) {
			when = fmt.Sprintf(" expires %s (in %s)", t.UTC().Format(time.RFC3339), output.Span(t.Sub(now)))
		} else {
			when = fmt.Sprintf(" EXPIRED %s (%s ago)", t.UTC().Format(time.RFC3339), output.Span(now.Sub(t)))
		}
	}
	if nb := c.GetNotBefore(); nb != nil && nb.AsTime().After(now) {
		when += fmt.Sprintf(", not valid before %s (in %s)", nb.AsTime().UTC().Format(time.RFC3339), output.Span(nb.AsTime().Sub(now)))
	}
	fp := c.GetSha256Fingerprint()
	if len(fp) > 16 {
		fp = fp[:16] + "…"
	}
	fmt.Fprintf(w, "certificate %s: %s%s, sha256 %s\n", field, c.GetSubject(), when, fp)
}

// comparePositions orders two request fields by the resource they are in
// (the order of the files and their documents), then by line and column.
func comparePositions(m manifest.Manifest, a, b string) int {
	da, pa, _ := m.Locate(a)
	db, pb, _ := m.Locate(b)
	return cmp.Or(
		cmp.Compare(slices.Index(m, da), slices.Index(m, db)),
		cmp.Compare(pa.Line, pb.Line),
		cmp.Compare(pa.Column, pb.Column),
	)
}

// locate formats a problem the policy service reported for a field of the
// request as "file:line:col: field: message". A problem with the resource
// as a whole is labelled kind/name; one outside any resource keeps the
// server's path.
func locate(m manifest.Manifest, field, msg string) string {
	doc, pos, rel := m.Locate(field)
	switch {
	case doc == nil && field == "":
		return msg
	case doc == nil:
		return field + ": " + msg
	case rel == "":
		rel = resource.Ref(doc.Resource)
	}
	return pos.String() + ": " + rel + ": " + msg
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
