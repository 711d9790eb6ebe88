// Package probelog keeps the last live probe of each tls-outbound binding
// that this policy service ran, for the operator console.
//
// The live probe runs inside Apply (and validate) and its results go back
// to the caller alone; nothing else stores them. The log is in memory, per
// replica: it starts empty and forgets at a restart, and another replica's
// probes are in that replica's log. That is enough to answer "what did the
// last probe of this binding find" on the replica an operator applies
// through; a record of the fleet's would need a bucket of its own.
package probelog

import (
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// MaxBindings bounds the log: past it, the binding probed longest ago is
// forgotten. Bindings are bounded by the store; this bounds the memory of
// probes of bindings that were only ever validated, never stored.
const MaxBindings = 4096

// Maximum endpoints and notes kept per record; a Service has few endpoints.
const (
	maxResults = 64
	maxNotes   = 16
	maxNote    = 1024
)

// Record is one binding's part of one live probe.
type Record struct {
	// Binding and Service name the binding and the Service it targets.
	Binding, Service string
	// Time is when the probe ended.
	Time time.Time
	// DryRun: the probe of a validate (apply --dry-run), which stores
	// nothing.
	DryRun bool
	// Refused: the probe refused the request (an endpoint of this binding
	// or of another binding of the same request answered and refused), so
	// the binding as probed was not stored.
	Refused bool
	// Results are the endpoints' handshakes, one each; none when the
	// binding was not probed (Notes say why).
	Results []*policyv1.ProbeResult
	// Notes are what the probe said of the binding beyond its results:
	// why it was not probed, an endpoint not reached, a refusal.
	Notes []string
}

// OK reports whether every endpoint of the binding answered the probe and
// accepted its context.
func (r Record) OK() bool {
	if len(r.Results) == 0 {
		return false
	}
	for _, p := range r.Results {
		if !p.GetOk() {
			return false
		}
	}
	return true
}

// Log is the last probe record of each binding. Safe for concurrent use;
// the zero value is not: use [New].
type Log struct {
	mu   sync.Mutex
	last map[string]Record
}

// New is an empty log.
func New() *Log { return &Log{last: make(map[string]Record)} }

// Add keeps rec as its binding's last probe, replacing an older one. It
// copies what it keeps, bounded (results, notes and their lengths), so
// that a caller's later changes to rec do not reach the log.
func (l *Log) Add(rec Record) {
	if l == nil || rec.Binding == "" {
		return
	}
	kept := rec
	kept.Results = make([]*policyv1.ProbeResult, 0, min(len(rec.Results), maxResults))
	for _, p := range rec.Results[:min(len(rec.Results), maxResults)] {
		kept.Results = append(kept.Results, proto.CloneOf(p))
	}
	kept.Notes = make([]string, 0, min(len(rec.Notes), maxNotes))
	for _, n := range rec.Notes[:min(len(rec.Notes), maxNotes)] {
		if len(n) > maxNote {
			n = strings.ToValidUTF8(n[:maxNote], "") + "…"
		}
		kept.Notes = append(kept.Notes, n)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.last[rec.Binding]; !ok && len(l.last) >= MaxBindings {
		oldest := ""
		for name, r := range l.last {
			if oldest == "" || r.Time.Before(l.last[oldest].Time) {
				oldest = name
			}
		}
		delete(l.last, oldest)
	}
	l.last[rec.Binding] = kept
}

// Last is the binding's last probe record, if this replica probed it.
// The record is shared: read it, do not change it.
func (l *Log) Last(binding string) (Record, bool) {
	if l == nil {
		return Record{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.last[binding]
	return r, ok
}

// All is every record, by binding name.
func (l *Log) All() []Record {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	out := make([]Record, 0, len(l.last))
	for _, r := range l.last {
		out = append(out, r)
	}
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Binding, b.Binding) })
	return out
}
