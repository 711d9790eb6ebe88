package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"keyway.dev/internal/fleetcerts"
	"keyway.dev/keywayctl/internal/output"

	nodev1 "keyway.dev/gen/keyway/node/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

func newStatusCommand(g *globals) *cobra.Command {
	var (
		format string
		certs  bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List the live proxy nodes and whether each serves the current configuration",
		Long: `Status lists the live proxy nodes (those whose last heartbeat is younger than
the node bucket's TTL): id, proxy address, the configuration revision each
serves, whether that is the store's current revision, the age of its last
heartbeat, and how many stored values it refused.

--certificates lists instead, for every node, each certificate it presents or
trusts (per upstream and listener) with its SHA-256 fingerprint and expiry,
then says which certificates the nodes do not agree on (a rotation still
rolling out).

Output formats (-o): table (default), json and yaml print the rollout of
the current revision as the API returns it: {revision, complete, serving,
pending}, each node with its full status.`,
		Example: `  keywayctl status
  keywayctl status -o json
  keywayctl status --certificates`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := output.ParseFormat(format)
			if err != nil || f == output.Name {
				return fmt.Errorf("-o %q: want table, yaml or json", format)
			}
			r, err := g.rollout(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case f == output.JSON || f == output.YAML:
				return writeProto(g.io.Stdout, r, f)
			case certs:
				return writeCertificates(g.io.Stdout, r, g.io.Now())
			}
			return writeNodes(g.io.Stdout, r, g.io.Now())
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "table", "output format: table, yaml or json")
	cmd.Flags().BoolVar(&certs, "certificates", false, "list each node's certificates with fingerprints and expiry")
	return cmd
}

// writeProto prints a message as protojson, or as YAML converted from it.
func writeProto(w io.Writer, r *policyv1.Rollout, f output.Format) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(r)
	if err != nil {
		return err
	}
	if f == output.JSON {
		_, err = w.Write(append(b, '\n'))
		return err
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

// rollout reads the node status and rollout (GetRollout): what
// `status` and `certs` show.
func (g *globals) rollout(ctx context.Context) (*policyv1.Rollout, error) {
	client, err := g.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := g.withTimeout(ctx)
	defer cancel()
	resp, err := client.GetRollout(ctx, connect.NewRequest(&policyv1.GetRolloutRequest{}))
	if err != nil {
		return nil, g.rpcError(err, "reading the node status")
	}
	return resp.Msg.GetRollout(), nil
}

// nodesOf lists a rollout's nodes by id, each with whether it serves the
// rollout's revision.
func nodesOf(r *policyv1.Rollout) ([]*nodev1.NodeStatus, map[string]bool) {
	current := make(map[string]bool)
	all := slices.Clone(r.GetServing())
	for _, n := range all {
		current[n.GetId()] = true
	}
	all = append(all, r.GetPending()...)
	slices.SortFunc(all, func(a, b *nodev1.NodeStatus) int { return strings.Compare(a.GetId(), b.GetId()) })
	return all, current
}

func writeNodes(w io.Writer, r *policyv1.Rollout, now time.Time) error {
	all, current := nodesOf(r)
	if len(all) == 0 {
		fmt.Fprintf(w, "no live proxy nodes (configuration revision %d)\n", r.GetRevision())
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tREVISION\tCURRENT\tHEARTBEAT\tERRORS\tVERSION")
	for _, n := range all {
		hb := "-"
		if t := n.GetHeartbeatTime(); t != nil {
			hb = output.Age(now.Sub(t.AsTime())) + " ago"
		}
		cur := "no"
		if current[n.GetId()] {
			cur = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\n", n.GetId(), n.GetProxyAddress(), n.GetRevision(), cur, hb, len(n.GetErrors()), n.GetVersion())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d of %s serve revision %d\n", len(r.GetServing()), plural(len(all), "node"), r.GetRevision())
	writeNodeErrors(w, all)
	return nil
}

func writeCertificates(w io.Writer, r *policyv1.Rollout, now time.Time) error {
	all, _ := nodesOf(r)
	if len(all) == 0 {
		fmt.Fprintln(w, "no live proxy nodes")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSCOPE\tNAME\tHOST\tROLE\tSOURCE\tSHA256\tEXPIRES\tREVOCATION")
	// What each certificate slot holds, over the nodes: to tell a
	// rotation that has not reached every node.
	slots := make(map[string]map[string][]string)
	for _, n := range all {
		for _, c := range n.GetCertificates() {
			exp := "-"
			if t := c.GetNotAfter(); t != nil {
				exp = t.AsTime().UTC().Format(time.RFC3339)
				if t.AsTime().Before(now) {
					exp += " (EXPIRED)"
				} else {
					exp += " (in " + output.Span(t.AsTime().Sub(now)) + ")"
				}
			}
			fp := c.GetSha256Fingerprint()
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.GetId(), c.GetScope(), c.GetName(), or(c.GetHost(), "-"), c.GetRole(), source(c), shortFP(fp), exp, or(c.GetRevocation(), fleetcerts.NotChecked))
			if c.GetRole() == "trust" {
				continue // several CAs per slot are normal
			}
			slot := c.GetScope() + "/" + c.GetName() + " " + c.GetRole()
			if c.GetHost() != "" {
				slot += " " + c.GetHost()
			}
			if slots[slot] == nil {
				slots[slot] = make(map[string][]string)
			}
			slots[slot][fp] = append(slots[slot][fp], n.GetId())
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, slot := range slices.Sorted(maps.Keys(slots)) {
		if fps := slots[slot]; len(fps) > 1 {
			var parts []string
			for _, fp := range slices.Sorted(maps.Keys(fps)) {
				parts = append(parts, shortFP(fp)+" on "+strconv.Itoa(len(fps[fp]))+" ("+strings.Join(fps[fp], ", ")+")")
			}
			fmt.Fprintf(w, "nodes disagree on %s: %s\n", slot, strings.Join(parts, "; "))
		}
	}
	return nil
}

// shortFP is a colon-separated fingerprint's first 8 bytes, enough to
// tell certificates apart on one screen.
func shortFP(fp string) string {
	if len(fp) > 23 {
		return fp[:23] + "…"
	}
	return fp
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// source says where a certificate comes from: an alias or a truststore of
// the secrets service, or "inline" (PEM in the resource).
func source(c *nodev1.ServedCertificate) string {
	switch {
	case c.GetKeystore() != "":
		return c.GetKeystore() + "/" + c.GetAlias()
	case c.GetTruststore() != "":
		return "truststore " + c.GetTruststore()
	}
	return "inline"
}
