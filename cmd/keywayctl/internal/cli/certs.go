package cli

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"keyway.dev/internal/limits"
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
			client, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.withTimeout(cmd.Context())
			defer cancel()
			resp, err := client.GetRollout(ctx, connect.NewRequest(&policyv1.GetRolloutRequest{}))
			if err != nil {
				return g.rpcError(err, "reading the node status")
			}
			now := g.io.Now()
			list, live := fleetCertificates(resp.Msg.GetRollout(), now)
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

// fleetCert is one certificate over the fleet.
type fleetCert struct {
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	SANs        []string  `json:"sans"`
	NotAfter    time.Time `json:"notAfter"`
	SecondsLeft int64     `json:"secondsLeft"`
	// Source is "alias KEYSTORE/ALIAS", "truststore NAME" or "inline".
	Source string    `json:"source"`
	Uses   []certUse `json:"uses"`
	Nodes  []string  `json:"nodes"`
	// Revocation is the fleet's word on it: revoked when a node says so,
	// else unknown when one cannot tell, else good when one checked it,
	// else "not checked". RevocationByNode is each node's report.
	Revocation       string                    `json:"revocation"`
	RevocationByNode map[string]nodeRevocation `json:"revocationByNode"`
}

// nodeRevocation is one node's report of a certificate's revocation state:
// good, revoked, unknown or "not checked", and what says so (or why it is
// unknown).
type nodeRevocation struct {
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// Revocation states as keywayctl certs shows them.
const (
	revocationNotChecked = "not checked"
	revocationGood       = "good"
	revocationUnknown    = "unknown"
	revocationRevoked    = "revoked"
)

// revocationRank orders the states from the least to the most telling, to
// sum the nodes' reports up.
var revocationRank = map[string]int{revocationNotChecked: 0, revocationGood: 1, revocationUnknown: 2, revocationRevoked: 3}

// certUse is where a certificate is used: "listener" or "upstream", the
// Listener or Service name, the host for a Listener, and the role
// (server, client, trust).
type certUse struct {
	Scope string `json:"scope"`
	Name  string `json:"name"`
	Host  string `json:"host,omitempty"`
	Role  string `json:"role"`
}

// fleetCertificates joins the nodes' reports: one entry per certificate,
// soonest to expire first; and how many nodes are live.
func fleetCertificates(r *policyv1.Rollout, now time.Time) ([]*fleetCert, int) {
	all, _ := nodesOf(r)
	byFP := make(map[string]*fleetCert)
	for _, n := range all {
		for _, c := range n.GetCertificates() {
			fp := c.GetSha256Fingerprint()
			fc := byFP[fp]
			if fc == nil {
				fc = &fleetCert{Fingerprint: fp, Subject: c.GetSubject(), Issuer: c.GetIssuer(), SANs: c.GetSans(), Source: certSource(c.GetKeystore(), c.GetAlias(), c.GetTruststore())}
				if t := c.GetNotAfter(); t != nil {
					fc.NotAfter = t.AsTime().UTC()
					fc.SecondsLeft = int64(fc.NotAfter.Sub(now).Seconds())
				}
				if fc.SANs == nil {
					fc.SANs = []string{}
				}
				fc.Revocation, fc.RevocationByNode = revocationNotChecked, map[string]nodeRevocation{}
				byFP[fp] = fc
			}
			u := certUse{Scope: c.GetScope(), Name: c.GetName(), Host: c.GetHost(), Role: c.GetRole()}
			if !slices.Contains(fc.Uses, u) {
				fc.Uses = append(fc.Uses, u)
			}
			if !slices.Contains(fc.Nodes, n.GetId()) {
				fc.Nodes = append(fc.Nodes, n.GetId())
			}
			// A certificate used twice on a node (two hosts) has one
			// state there; the most telling is kept.
			r := nodeRevocation{State: cmp.Or(c.GetRevocation(), revocationNotChecked), Detail: c.GetRevocationDetail()}
			if _, known := revocationRank[r.State]; !known {
				r = nodeRevocation{State: revocationUnknown, Detail: "the node reports " + limits.Quote(r.State)}
			}
			if prev, ok := fc.RevocationByNode[n.GetId()]; !ok || revocationRank[r.State] > revocationRank[prev.State] {
				fc.RevocationByNode[n.GetId()] = r
			}
			if revocationRank[r.State] > revocationRank[fc.Revocation] {
				fc.Revocation = r.State
			}
		}
	}
	out := make([]*fleetCert, 0, len(byFP))
	for _, fc := range byFP {
		slices.SortFunc(fc.Uses, func(a, b certUse) int {
			return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.Name, b.Name), strings.Compare(a.Host, b.Host), strings.Compare(a.Role, b.Role))
		})
		slices.Sort(fc.Nodes)
		out = append(out, fc)
	}
	slices.SortFunc(out, func(a, b *fleetCert) int {
		return cmp.Or(a.NotAfter.Compare(b.NotAfter), strings.Compare(a.Fingerprint, b.Fingerprint))
	})
	return out, len(all)
}

func certSource(keystore, alias, truststore string) string {
	switch {
	case keystore != "":
		return "alias " + keystore + "/" + alias
	case truststore != "":
		return "truststore " + truststore
	}
	return "inline"
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
	n := 0
	for _, r := range c.RevocationByNode {
		if r.State == c.Revocation {
			n++
		}
	}
	if n == len(c.RevocationByNode) {
		return c.Revocation
	}
	return fmt.Sprintf("%s (%d/%d nodes)", c.Revocation, n, len(c.RevocationByNode))
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
	var parts []string
	for _, u := range uses {
		s := u.Scope + "/" + u.Name
		if u.Host != "" {
			s += " " + u.Host
		}
		parts = append(parts, s+" ("+u.Role+")")
	}
	return firstAndMore(parts)
}
