// Package fleetcerts is the fleet's certificates: one entry per certificate
// over the live nodes' reports (node status `certificates`), soonest to
// expire first, with the fleet's revocation state and each node's.
//
// `keywayctl certs` and the operator console's certificates page both show
// this join, so that they cannot disagree on what the fleet holds. The JSON
// names of [Cert] are those of `keywayctl certs -o json`.
package fleetcerts

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"keyway.dev/internal/limits"

	nodev1 "keyway.dev/gen/keyway/node/v1"
)

// Revocation states, from the least to the most telling. A node reports
// good, revoked or unknown for a certificate it presents that names a CRL
// distribution point or an OCSP responder, and nothing (NotChecked) for
// the others and for the CAs it trusts.
const (
	NotChecked = "not checked"
	Good       = "good"
	Unknown    = "unknown"
	Revoked    = "revoked"
)

// rank orders the states to sum the nodes' reports up: one node that says
// revoked outweighs any number that say good, and one that cannot tell
// outweighs those that can only say good.
var rank = map[string]int{NotChecked: 0, Good: 1, Unknown: 2, Revoked: 3}

// Cert is one certificate over the fleet.
type Cert struct {
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	SANs        []string  `json:"sans"`
	NotAfter    time.Time `json:"notAfter"`
	SecondsLeft int64     `json:"secondsLeft"`
	// Source is "alias KEYSTORE/ALIAS", "truststore NAME" or "inline".
	Source string   `json:"source"`
	Uses   []Use    `json:"uses"`
	Nodes  []string `json:"nodes"`
	// Revocation is the fleet's word on it: revoked when a node says so,
	// else unknown when one cannot tell, else good when one checked it,
	// else NotChecked. RevocationByNode is each node's report.
	Revocation       string                    `json:"revocation"`
	RevocationByNode map[string]NodeRevocation `json:"revocationByNode"`
}

// NodeRevocation is one node's report of a certificate's revocation state:
// good, revoked, unknown or NotChecked, and what says so (a CRL's URL, an
// OCSP responder) or why it is unknown.
type NodeRevocation struct {
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// Use is where a certificate is used: "listener" or "upstream", the
// Listener or Service name, the host for a Listener, and the role
// (server, client, trust).
type Use struct {
	Scope string `json:"scope"`
	Name  string `json:"name"`
	Host  string `json:"host,omitempty"`
	Role  string `json:"role"`
}

// String is "listener/public api.example.com (server)".
func (u Use) String() string {
	s := u.Scope + "/" + u.Name
	if u.Host != "" {
		s += " " + u.Host
	}
	return s + " (" + u.Role + ")"
}

// Join joins the live nodes' reports: one entry per certificate (by
// SHA-256 fingerprint), soonest to expire first, its uses and nodes
// sorted. What describes the certificate (subject, issuer, SANs, expiry,
// source) is taken from the first node that reports it, in the order of
// nodes: pass them sorted by id, so that the answer does not depend on the
// order the nodes were read in.
func Join(nodes []*nodev1.NodeStatus, now time.Time) []*Cert {
	byFP := make(map[string]*Cert)
	for _, n := range nodes {
		for _, c := range n.GetCertificates() {
			fp := c.GetSha256Fingerprint()
			fc := byFP[fp]
			if fc == nil {
				fc = &Cert{Fingerprint: fp, Subject: c.GetSubject(), Issuer: c.GetIssuer(), SANs: c.GetSans(), Source: source(c),
					Revocation: NotChecked, RevocationByNode: map[string]NodeRevocation{}}
				if t := c.GetNotAfter(); t != nil {
					fc.NotAfter = t.AsTime().UTC()
					fc.SecondsLeft = int64(fc.NotAfter.Sub(now).Seconds())
				}
				if fc.SANs == nil {
					fc.SANs = []string{}
				}
				byFP[fp] = fc
			}
			u := Use{Scope: c.GetScope(), Name: c.GetName(), Host: c.GetHost(), Role: c.GetRole()}
			if !slices.Contains(fc.Uses, u) {
				fc.Uses = append(fc.Uses, u)
			}
			if !slices.Contains(fc.Nodes, n.GetId()) {
				fc.Nodes = append(fc.Nodes, n.GetId())
			}
			// A certificate used twice on a node (two hosts) has one
			// state there; the most telling is kept.
			r := nodeRevocation(c)
			if prev, ok := fc.RevocationByNode[n.GetId()]; !ok || rank[r.State] > rank[prev.State] {
				fc.RevocationByNode[n.GetId()] = r
			}
			if rank[r.State] > rank[fc.Revocation] {
				fc.Revocation = r.State
			}
		}
	}
	out := make([]*Cert, 0, len(byFP))
	for _, fc := range byFP {
		slices.SortFunc(fc.Uses, func(a, b Use) int {
			return cmp.Or(strings.Compare(a.Scope, b.Scope), strings.Compare(a.Name, b.Name), strings.Compare(a.Host, b.Host), strings.Compare(a.Role, b.Role))
		})
		slices.Sort(fc.Nodes)
		out = append(out, fc)
	}
	slices.SortFunc(out, func(a, b *Cert) int {
		return cmp.Or(a.NotAfter.Compare(b.NotAfter), strings.Compare(a.Fingerprint, b.Fingerprint))
	})
	return out
}

// nodeRevocation is a node's report of c. A state this package does not
// know (a newer or a broken node) is unknown, with the node's word quoted
// and bounded: it is no reason to think the certificate good.
func nodeRevocation(c *nodev1.ServedCertificate) NodeRevocation {
	r := NodeRevocation{State: cmp.Or(c.GetRevocation(), NotChecked), Detail: c.GetRevocationDetail()}
	if _, known := rank[r.State]; !known {
		return NodeRevocation{State: Unknown, Detail: "the node reports " + limits.Quote(r.State)}
	}
	return r
}

// RevocationSummary is the fleet's state, with how many nodes say so when
// they do not all agree: "revoked (1/2 nodes)".
func (c *Cert) RevocationSummary() string {
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

func source(c *nodev1.ServedCertificate) string {
	switch {
	case c.GetKeystore() != "":
		return "alias " + c.GetKeystore() + "/" + c.GetAlias()
	case c.GetTruststore() != "":
		return "truststore " + c.GetTruststore()
	}
	return "inline"
}
