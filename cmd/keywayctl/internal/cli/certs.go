package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"keyway.dev/internal/fleetcerts"
	"keyway.dev/keywayctl/internal/output"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

func newCertsCommand(g *globals) *cobra.Command {
	var (
		format   string
		within   time.Duration
		allNodes bool
	)
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "List every certificate the proxy nodes present or trust, soonest to expire first",
		Long: `Certs lists the fleet's certificates: each certificate any live proxy node
presents (Listener server certificates, upstream client certificates) or
trusts (client CAs of Listeners, CAs of upstreams), once, sorted by the time
left before it expires. For each: subject, subject alternative names,
issuer, SHA-256 fingerprint, not-after, where it comes from (an alias or a
truststore of the secrets service, or inline PEM), where it is used, and on
how many of the live nodes.

--expiring-within DURATION lists only those that expire within it (720h: the
next 30 days), expired ones included.

Output formats (-o): table (default), json and yaml: {"items": [...]},
each {fingerprint, subject, issuer, sans, notAfter, secondsLeft, source,
uses, nodes, revocation, revocationByNode}.

REVOCATION is what the nodes know of the certificate's revocation: good,
revoked or unknown for the certificates they present (Listener server
certificates, upstream client certificates) that name a CRL distribution
point or an OCSP responder, checked by each node (--presented-revocation);
"not checked" otherwise, and for the CAs they trust. When the nodes differ,
the most telling state is shown (revoked, then unknown, then good) with how
many nodes say it; --nodes shows each node's; revocationByNode in JSON
gives each node's state and what says so (a CRL's URL, an OCSP responder)
or why it is unknown.`,
		Example: `  keywayctl certs
  keywayctl certs --expiring-within 720h
  keywayctl certs -o json | jq '.items[] | select(.secondsLeft < 86400*7) | .subject'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := output.ParseFormat(format)
			if err != nil || f == output.Name {
				return fmt.Errorf("-o %q: want table, yaml or json", format)
			}
			if within < 0 {
				return fmt.Errorf("--expiring-within %s: want a positive duration such as 720h", within)
			}
			r, err := g.rollout(cmd.Context())
			if err != nil {
				return err
			}
			now := g.io.Now()
			list, live := fleetCertificates(r, now)
			if within > 0 {
				list = slices.DeleteFunc(list, func(c *fleetCert) bool { return c.NotAfter.Sub(now) > within })
			}
			doc := struct {
				Items []*fleetCert `json:"items"`
			}{list}
			if f == output.JSON || f == output.YAML {
				b, err := json.Marshal(doc)
				if err != nil {
					return err
				}
				return writeJSONAs(g.io.Stdout, b, f)
			}
			return writeFleetCertificates(g.io.Stdout, list, live, now, allNodes)
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "table", "output format: table, yaml or json")
	cmd.Flags().DurationVar(&within, "expiring-within", 0, "list only certificates that expire within this duration (e.g. 720h), expired ones included")
	cmd.Flags().BoolVar(&allNodes, "nodes", false, "name the nodes each certificate is on, not only how many")
	return cmd
}

// fleetCert is one entry of keywayctl certs: the fleet's join, whose JSON
// names are the command's output.
type (
	fleetCert      = fleetcerts.Cert
	certUse        = fleetcerts.Use
	nodeRevocation = fleetcerts.NodeRevocation
)

// fleetCertificates joins the live nodes' reports: one entry per
// certificate, soonest to expire first; and how many nodes are live.
func fleetCertificates(r *policyv1.Rollout, now time.Time) ([]*fleetCert, int) {
	all, _ := nodesOf(r)
	return fleetcerts.Join(all, now), len(all)
}

func writeFleetCertificates(w io.Writer, list []*fleetCert, live int, now time.Time, allNodes bool) error {
	if live == 0 {
		fmt.Fprintln(w, "no live proxy nodes")
		return nil
	}
	if len(list) == 0 {
		fmt.Fprintf(w, "no certificates on %s\n", plural(live, "live node"))
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "EXPIRES\tLEFT\tSUBJECT\tSANS\tISSUER\tSHA256\tSOURCE\tUSED BY\tNODES\tREVOCATION")
	for _, c := range list {
		left := "EXPIRED"
		if d := c.NotAfter.Sub(now); d > 0 {
			left = output.Span(d)
		}
		nodes := fmt.Sprintf("%d/%d", len(c.Nodes), live)
		if allNodes {
			nodes = strings.Join(c.Nodes, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			c.NotAfter.Format(time.RFC3339), left, or(c.Subject, "-"), firstAndMore(c.SANs), or(c.Issuer, "-"),
			shortFP(c.Fingerprint), c.Source, usesText(c.Uses), nodes, revocationText(c, allNodes))
	}
	return tw.Flush()
}

// revocationText is the fleet's state, with how many nodes say so when
// they do not all agree, or each node's state with --nodes.
func revocationText(c *fleetCert, allNodes bool) string {
	if allNodes {
		parts := make([]string, 0, len(c.Nodes))
		for _, n := range c.Nodes {
			parts = append(parts, n+"="+c.RevocationByNode[n].State)
		}
		return strings.Join(parts, ",")
	}
	return c.RevocationSummary()
}

// firstAndMore is the first item and how many more, or "-".
func firstAndMore(items []string) string {
	switch len(items) {
	case 0:
		return "-"
	case 1:
		return items[0]
	}
	return fmt.Sprintf("%s +%d", items[0], len(items)-1)
}

func usesText(uses []certUse) string {
	parts := make([]string, 0, len(uses))
	for _, u := range uses {
		parts = append(parts, u.String())
	}
	return firstAndMore(parts)
}
