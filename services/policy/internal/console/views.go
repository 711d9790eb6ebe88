package console

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	nodev1 "keyway.dev/gen/keyway/node/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/audit"
	"keyway.dev/internal/fleetcerts"
	"keyway.dev/internal/model"
	"keyway.dev/policy/internal/probelog"
)

// Bounds of what a page shows of a value, and of a table.
const (
	// maxField is a name, a subject, an address: what a cell holds.
	maxField = 256
	// maxMessage is an error message.
	maxMessage = 1024
	// maxRows is a table's rows; the rest are counted, and the table
	// names the keywayctl command that lists them all.
	maxRows = 500
	// maxNames is the SANs, uses or nodes listed in one cell.
	maxNames = 16
	// recentWrites is how many recent writes the rollouts page follows.
	recentWrites = 20
	// auditScan is how many audit records it reads to find them.
	auditScan = 200
)

// clip bounds s to n bytes at a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// clipAll bounds a list of names: each, and how many.
func clipAll(names []string) []string {
	out := make([]string, 0, min(len(names), maxNames+1))
	for i, n := range names {
		if i == maxNames {
			out = append(out, fmt.Sprintf("and %d more", len(names)-maxNames))
			break
		}
		out = append(out, clip(n, maxField))
	}
	return out
}

// span is a duration as a person reads it: "3d4h", "5h12m", "42s".
func span(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", d/time.Minute, d%time.Minute/time.Second)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// ago is "12s ago", or "-" for a zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if t.After(now) {
		return "just now"
	}
	return span(now.Sub(t)) + " ago"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// table is a page's rows, bounded, with how many were left out.
type table[T any] struct {
	Rows    []T
	Omitted int
}

func bound[T any](rows []T) table[T] {
	if len(rows) <= maxRows {
		return table[T]{Rows: rows}
	}
	return table[T]{Rows: rows[:maxRows], Omitted: len(rows) - maxRows}
}

// rollout reads the rollout of the current revision: every live node.
func (c *console) rollout(r *http.Request, rev uint64) (*policyv1.Rollout, error) {
	resp, err := c.cfg.API().GetRollout(r.Context(), connect.NewRequest(&policyv1.GetRolloutRequest{Revision: rev, Since: rev}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetRollout(), nil
}

// liveNodes are a rollout's nodes by id, each with whether it serves the
// rollout's revision (keywayctl status's join).
func liveNodes(r *policyv1.Rollout) ([]*nodev1.NodeStatus, map[string]bool) {
	current := make(map[string]bool)
	all := slices.Clone(r.GetServing())
	for _, n := range all {
		current[n.GetId()] = true
	}
	all = append(all, r.GetPending()...)
	slices.SortFunc(all, func(a, b *nodev1.NodeStatus) int { return strings.Compare(a.GetId(), b.GetId()) })
	return all, current
}

// certRow is one certificate over the fleet: `keywayctl certs`'s row.
type certRow struct {
	Fingerprint, Short string
	Subject, Issuer    string
	SANs               []string
	NotAfter           string
	Left               string
	Expired, Soon      bool
	Source             string
	Uses               []string
	Nodes              []string
	NodeCount, Live    int
	// Revocation is the fleet's state as keywayctl certs shows it,
	// RevocationClass its colour, RevocationByNode each node that
	// checked: its state and what says so or why it is unknown.
	Revocation, RevocationClass string
	RevocationByNode            []string
	Command                     string
}

// certsData is the certificates page's.
type certsData struct {
	Live  int
	Certs table[certRow]
}

// expiringSoon marks certificates with less than this left.
const expiringSoon = 30 * 24 * time.Hour

func (c *console) certificates(w http.ResponseWriter, r *http.Request) {
	ro, err := c.rollout(r, 0)
	if err != nil {
		c.apiError(w, r, "the node status (GetRollout)", err)
		return
	}
	now := c.cfg.Now()
	rows, live := fleetCertificates(ro, now)
	c.render(w, r, http.StatusOK, "certificates", page{Title: "Certificates", Path: PathCertificates, Data: certsData{Live: live, Certs: bound(rows)}})
}

// fleetCertificates is the live nodes' certificates as `keywayctl certs`
// joins them, each value bounded for the page; and how many nodes are live.
func fleetCertificates(ro *policyv1.Rollout, now time.Time) ([]certRow, int) {
	all, _ := liveNodes(ro)
	list := fleetcerts.Join(all, now)
	out := make([]certRow, 0, len(list))
	for _, c := range list {
		row := certRow{Fingerprint: clip(c.Fingerprint, maxField), Short: clip(c.Fingerprint, 23), Subject: clip(c.Subject, maxField),
			Issuer: clip(c.Issuer, maxField), SANs: clipAll(c.SANs), Source: clip(c.Source, maxField), Nodes: clipAll(c.Nodes),
			NodeCount: len(c.Nodes), Live: len(all), NotAfter: stamp(c.NotAfter),
			Revocation: c.RevocationSummary(), RevocationClass: revocationClass[c.Revocation], RevocationByNode: clipAll(revocationByNode(c)),
			Command: "keywayctl certs --nodes"}
		uses := make([]string, 0, len(c.Uses))
		for _, u := range c.Uses {
			uses = append(uses, u.String())
		}
		row.Uses = clipAll(uses)
		left := c.NotAfter.Sub(now)
		switch {
		case c.NotAfter.IsZero():
			row.Left = "-"
		case left <= 0:
			row.Left, row.Expired = "EXPIRED", true
		default:
			row.Left, row.Soon = span(left), left < expiringSoon
		}
		out = append(out, row)
	}
	return out, len(all)
}

// revocationClass colours a revocation state as the page colours others.
var revocationClass = map[string]string{
	fleetcerts.Revoked: "bad", fleetcerts.Unknown: "pending", fleetcerts.Good: "ok", fleetcerts.NotChecked: "unknown",
}

// revocationByNode is "node: state (detail)" for each node that checked
// the certificate or says why it could not: the nodes that did not check
// it add nothing to the fleet's state.
func revocationByNode(c *fleetcerts.Cert) []string {
	var out []string
	for _, n := range c.Nodes {
		r := c.RevocationByNode[n]
		if r.State == fleetcerts.NotChecked && r.Detail == "" {
			continue
		}
		line := clip(n, maxField) + ": " + r.State
		if r.Detail != "" {
			line += " (" + clip(r.Detail, maxField) + ")"
		}
		out = append(out, line)
	}
	return out
}

// nodeRow is one live node: `keywayctl status`'s row, with its errors.
type nodeRow struct {
	ID, Version, Address, Admin string
	Revision                    uint64
	Current                     bool
	Heartbeat, HeartbeatAgo     string
	Started                     string
	Certificates                int
	Errors                      []nodeError
	ErrorsOmitted               int
	Stale                       string
	Command                     string
}

type nodeError struct{ Key, Message, Time string }

type nodesData struct {
	Revision uint64
	Serving  int
	Nodes    table[nodeRow]
}

func (c *console) nodes(w http.ResponseWriter, r *http.Request) {
	ro, err := c.rollout(r, 0)
	if err != nil {
		c.apiError(w, r, "the node status (GetRollout)", err)
		return
	}
	now := c.cfg.Now()
	all, current := liveNodes(ro)
	rows := make([]nodeRow, 0, len(all))
	for _, n := range all {
		row := nodeRow{ID: clip(n.GetId(), maxField), Version: clip(n.GetVersion(), maxField), Address: clip(n.GetProxyAddress(), maxField),
			Admin: clip(n.GetAdminAddress(), maxField), Revision: n.GetRevision(), Current: current[n.GetId()],
			Certificates: len(n.GetCertificates()), Command: "keywayctl status"}
		if t := n.GetHeartbeatTime(); t != nil {
			row.Heartbeat, row.HeartbeatAgo = stamp(t.AsTime()), ago(now, t.AsTime())
		}
		if t := n.GetStartTime(); t != nil {
			row.Started = stamp(t.AsTime())
		}
		if n.GetSecretsStale() {
			row.Stale = clip(cmp.Or(n.GetSecretsStaleReason(), "the secrets service cannot be reached"), maxMessage)
		}
		for i, e := range n.GetErrors() {
			if i == maxNames {
				row.ErrorsOmitted = len(n.GetErrors()) - maxNames
				break
			}
			ne := nodeError{Key: clip(e.GetKey(), maxField), Message: clip(e.GetMessage(), maxMessage), Time: "-"}
			if t := e.GetTime(); t != nil {
				ne.Time = stamp(t.AsTime())
			}
			row.Errors = append(row.Errors, ne)
		}
		rows = append(rows, row)
	}
	c.render(w, r, http.StatusOK, "nodes", page{Title: "Nodes", Path: PathNodes, Refresh: c.refreshSeconds(),
		Data: nodesData{Revision: ro.GetRevision(), Serving: len(ro.GetServing()), Nodes: bound(rows)}})
}

func (c *console) refreshSeconds() int { return max(1, int(c.cfg.Refresh/time.Second)) }

// rolloutRow is the rollout of one change: how many live nodes serve it,
// which do not yet, and which refused it.
type rolloutRow struct {
	Revision    uint64
	Time        string
	Change      string
	Actor       string
	State       string
	StateClass  string
	Serving     int
	Live        int
	Pending     []string
	Refusals    []refusalRow
	RefusalsCut int
	Command     string
}

type refusalRow struct{ Node, Key, Message string }

type rolloutsData struct {
	Current    rolloutRow
	InProgress int
	Recent     []rolloutRow
	// AuditError says why the recent changes could not be read.
	AuditError string
}

func (c *console) rollouts(w http.ResponseWriter, r *http.Request) {
	ro, err := c.rollout(r, 0)
	if err != nil {
		c.apiError(w, r, "the rollout of the current revision (GetRollout)", err)
		return
	}
	d := rolloutsData{Current: rolloutOf(ro)}
	d.Current.Change, d.Current.Command = "current revision of the store", "keywayctl status"
	// The recent changes: the policy service's successful writes in the
	// audit trail, newest first, each with the rollout of its revision.
	resp, err := c.cfg.API().ListAudit(r.Context(), connect.NewRequest(&policyv1.ListAuditRequest{Limit: auditScan}))
	if err != nil {
		c.cfg.Log.Warn("console: reading the audit trail", "error", err)
		d.AuditError = clip(err.Error(), maxMessage)
	}
	var records []*policyv1.AuditRecord
	if resp != nil {
		records = resp.Msg.GetRecords()
	}
	seen := make(map[uint64]bool)
	for i := len(records) - 1; i >= 0 && len(d.Recent) < recentWrites; i-- {
		rec := records[i]
		if rec.GetService() != audit.ServicePolicy || rec.GetResult() != "ok" || rec.GetRevision() == 0 || seen[rec.GetRevision()] {
			continue
		}
		seen[rec.GetRevision()] = true
		wr, err := c.rollout(r, rec.GetRevision())
		if err != nil {
			c.apiError(w, r, fmt.Sprintf("the rollout of revision %d (GetRollout)", rec.GetRevision()), err)
			return
		}
		row := rolloutOf(wr)
		row.Change = clip(rec.GetAction()+" "+rec.GetKind()+" "+rec.GetName(), maxField)
		row.Actor = clip(rec.GetActorIdentity(), maxField)
		if t := rec.GetTime(); t != nil {
			row.Time = stamp(t.AsTime())
		}
		row.Command = "keywayctl history " + clip(strings.ToLower(rec.GetKind()), maxField) + " " + clip(rec.GetName(), maxField)
		if row.StateClass == "pending" {
			d.InProgress++
		}
		d.Recent = append(d.Recent, row)
	}
	c.render(w, r, http.StatusOK, "rollouts", page{Title: "Rollouts", Path: PathRollouts, Refresh: c.refreshSeconds(), Data: d})
}

// rolloutOf is a rollout's row: its state as `keywayctl apply --wait`
// would end (complete, failed) or is still waiting (in progress).
func rolloutOf(ro *policyv1.Rollout) rolloutRow {
	row := rolloutRow{Revision: ro.GetRevision(), Serving: len(ro.GetServing()), Live: len(ro.GetServing()) + len(ro.GetPending())}
	for _, n := range ro.GetPending() {
		row.Pending = append(row.Pending, fmt.Sprintf("%s (at %d)", n.GetId(), n.GetRevision()))
	}
	slices.Sort(row.Pending)
	row.Pending = clipAll(row.Pending)
	for i, f := range ro.GetRefusals() {
		if i == maxNames {
			row.RefusalsCut = len(ro.GetRefusals()) - maxNames
			break
		}
		row.Refusals = append(row.Refusals, refusalRow{Node: clip(f.GetNodeId(), maxField), Key: clip(f.GetKey(), maxField), Message: clip(f.GetMessage(), maxMessage)})
	}
	switch {
	case row.Live == 0:
		row.State, row.StateClass = "no live nodes", "unknown"
	case ro.GetFailed():
		row.State, row.StateClass = "failed: refused by a node", "bad"
	case ro.GetComplete():
		row.State, row.StateClass = "complete", "ok"
	default:
		row.State, row.StateClass = "in progress", "pending"
	}
	return row
}

// bindingRow is one PolicyBinding with its last live probe.
type bindingRow struct {
	Name, Policy, Target string
	Revision             uint64
	Updated              string
	Probe                *probeView
	Command              string
	ProbeCommand         string
}

// probeView is the last probe of a binding, as the page shows it.
type probeView struct {
	Time, Ago  string
	DryRun     bool
	Refused    bool
	OK         bool
	State      string
	StateClass string
	Endpoints  []endpointView
	Notes      []string
}

type endpointView struct {
	Endpoint, ServerName string
	OK, Reachable        bool
	Reason, Detail, Fix  string
	TLS, Peer, PeerUntil string
	HTTPStatus           int32
}

type bindingsData struct {
	Bindings table[bindingRow]
	// Kept is whether this replica keeps probes at all.
	Kept bool
}

func (c *console) bindings(w http.ResponseWriter, r *http.Request) {
	resp, err := c.cfg.API().List(r.Context(), connect.NewRequest(&policyv1.ListRequest{Kind: model.KindPolicyBinding}))
	if err != nil {
		c.apiError(w, r, "the bindings (List)", err)
		return
	}
	now := c.cfg.Now()
	var rows []bindingRow
	for _, res := range resp.Msg.GetResources() {
		b := res.GetPolicyBinding()
		if b == nil {
			continue
		}
		name := b.GetMetadata().GetName()
		row := bindingRow{Name: clip(name, maxField), Policy: clip(b.GetSpec().GetPolicyRef().GetName(), maxField),
			Target:   clip(b.GetSpec().GetTargetRef().GetKind()+" "+b.GetSpec().GetTargetRef().GetName(), maxField),
			Revision: b.GetMetadata().GetRevision(), Updated: "-",
			Command: "keywayctl get policybinding " + clip(name, maxField)}
		if t := b.GetMetadata().GetUpdateTime(); t != nil {
			row.Updated = stamp(t.AsTime())
		}
		if row.Policy == model.PolicyTLSOutbound {
			row.ProbeCommand = "keywayctl get policybinding " + clip(name, maxField) + " -o yaml > b.yaml && keywayctl validate -f b.yaml"
		}
		if rec, ok := c.cfg.Probes.Last(name); ok {
			row.Probe = probeOf(rec, now)
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b bindingRow) int { return strings.Compare(a.Name, b.Name) })
	c.render(w, r, http.StatusOK, "bindings", page{Title: "Bindings", Path: PathBindings, Data: bindingsData{Bindings: bound(rows), Kept: c.cfg.Probes != nil}})
}

// probeOf is what the page shows of a probe record, bounded.
func probeOf(rec probelog.Record, now time.Time) *probeView {
	v := &probeView{Time: stamp(rec.Time), Ago: ago(now, rec.Time), DryRun: rec.DryRun, Refused: rec.Refused, OK: rec.OK()}
	switch {
	case len(rec.Results) == 0:
		v.State, v.StateClass = "not probed", "unknown"
	case v.OK:
		v.State, v.StateClass = "ok", "ok"
	case rec.Refused:
		v.State, v.StateClass = "refused", "bad"
	default:
		v.State, v.StateClass = "not reached", "pending"
	}
	for i, p := range rec.Results {
		if i == maxNames {
			v.Notes = append(v.Notes, fmt.Sprintf("and %d more endpoints", len(rec.Results)-maxNames))
			break
		}
		e := endpointView{Endpoint: clip(p.GetEndpoint(), maxField), ServerName: clip(p.GetServerName(), maxField), OK: p.GetOk(), Reachable: p.GetReachable(),
			Reason: clip(p.GetReason(), maxField), Detail: clip(p.GetDetail(), maxMessage), Fix: clip(p.GetFix(), maxMessage), HTTPStatus: p.GetHttpStatus()}
		if p.GetOk() {
			e.TLS = clip(strings.TrimSpace(p.GetTlsVersion()+" "+p.GetCipherSuite()), maxField)
		}
		if pc := p.GetPeerCertificate(); pc != nil {
			e.Peer = clip(pc.GetSubject(), maxField)
			if t := pc.GetNotAfter(); t != nil {
				e.PeerUntil = stamp(t.AsTime())
			}
		}
		v.Endpoints = append(v.Endpoints, e)
	}
	for _, n := range rec.Notes {
		v.Notes = append(v.Notes, clip(n, maxMessage))
	}
	return v
}
