// Package certevents tells an operator, on NATS, that a certificate Keyway
// presents or trusts is close to expiry: one event on [Subject] when the
// certificate's time left first falls under each configured threshold
// (by default 30, 7 and 1 days).
//
// Each proxy node publishes for the certificates it uses (Listener hosts'
// certificates and client CAs, Upstreams' client certificates and CAs, its
// own internal-client and admin-server certificates), once per
// (certificate, threshold) for as long as it runs, with its node id in the
// event. A node does not wait for the fleet: the node that serves a
// certificate is the one that knows it serves it, and it keeps publishing
// when the policy service is down. An operator is not flooded: a
// certificate used by N nodes gives at most N events per threshold over its
// life, all with the same fingerprint and threshold, which is what an alert
// groups by ([Event.Key]). A node that starts with a certificate already
// under several thresholds publishes only the lowest of them.
//
// The policy and secrets services publish the same events for their own
// certificates, which no node uses ([WatchOwn]); their events name the
// service and the instance instead of a node.
package certevents

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Subject is the NATS subject expiry events are published on (core NATS:
// whoever is subscribed receives them; nothing is stored).
const Subject = "keyway.events.cert.expiring"

// Day is the unit thresholds are written in.
const Day = 24 * time.Hour

// DefaultThresholds are 30, 7 and 1 days.
var DefaultThresholds = []time.Duration{30 * Day, 7 * Day, Day}

// maxThresholds bounds the list a flag may give.
const maxThresholds = 8

// ParseThresholds reads a comma-separated list of thresholds: whole days
// ("30d") or Go durations ("12h", "90s"), each positive and at most 10
// years, at most 8. The result is sorted from the largest.
func ParseThresholds(s string) ([]time.Duration, error) {
	var out []time.Duration
	var errs []error
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		d, err := parseThreshold(part)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no threshold given: write days (30d) or durations (12h), separated by commas"))
	}
	if len(out) > maxThresholds {
		errs = append(errs, fmt.Errorf("%d thresholds given: at most %d", len(out), maxThresholds))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b time.Duration) int { return cmp.Compare(b, a) })
	return out, nil
}

func parseThreshold(s string) (time.Duration, error) {
	const longest = 3650 * Day
	quoted := strconv.Quote(s[:min(len(s), 32)])
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 3650 {
			return 0, fmt.Errorf("threshold %s: not a whole number of days from 1 to 3650", quoted)
		}
		d = time.Duration(n) * Day
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 || d > longest {
			return 0, fmt.Errorf("threshold %s: not a positive duration of at most 3650d (write 30d, 12h or 90s)", quoted)
		}
	}
	return d, nil
}

// FormatThreshold writes d as ParseThresholds reads it: whole days as
// "7d", else a Go duration. It is the threshold label of the events
// metric and the event's Threshold.
func FormatThreshold(d time.Duration) string {
	if d%Day == 0 {
		return strconv.FormatInt(int64(d/Day), 10) + "d"
	}
	return d.String()
}

// FormatThresholds is the flag's form of a list.
func FormatThresholds(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = FormatThreshold(d)
	}
	return strings.Join(parts, ",")
}

// Certificate is one use of a certificate, as a publisher sees it; the same
// certificate used twice (two hosts, two Upstreams) is one event, naming
// the first use.
type Certificate struct {
	Fingerprint string
	Subject     string
	Issuer      string
	NotAfter    time.Time
	// Role is the expiry metric's role (listener-server,
	// listener-client-ca, upstream-client, upstream-ca, internal-client,
	// admin-server).
	Role string
	// Upstream, Listener and Host say where it is used; Keystore and
	// Alias, or Truststore, where it comes from.
	Upstream, Listener, Host    string
	Keystore, Alias, Truststore string
}

// Event is the JSON published on [Subject].
type Event struct {
	// Node is the id of the node that publishes; empty when a service
	// publishes.
	Node string `json:"node,omitempty"`
	// Service is the service that publishes for its own certificates
	// ("policy", "secrets"; empty when a node publishes), and Instance
	// names the replica (host name and process id).
	Service  string `json:"service,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Threshold is the threshold crossed ("30d", "7d", "1d"), and
	// ThresholdSeconds the same in seconds.
	Threshold        string `json:"threshold"`
	ThresholdSeconds int64  `json:"threshold_seconds"`
	// SecondsLeft is the time left until NotAfter when the event was made.
	SecondsLeft int64     `json:"seconds_left"`
	NotAfter    time.Time `json:"not_after"`
	// Fingerprint is the SHA-256 of the DER certificate, as keywayctl
	// certs and the expiry metric show it.
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	Role        string    `json:"role"`
	Upstream    string    `json:"upstream,omitempty"`
	Listener    string    `json:"listener,omitempty"`
	Host        string    `json:"host,omitempty"`
	Keystore    string    `json:"keystore,omitempty"`
	Alias       string    `json:"alias,omitempty"`
	Truststore  string    `json:"truststore,omitempty"`
	Time        time.Time `json:"time"`
}

// Key is what an alert deduplicates a fleet's events by: the certificate
// and the threshold.
func (e Event) Key() string { return e.Fingerprint + "/" + e.Threshold }

// Tracker remembers which (certificate, threshold) pairs were published,
// and publishes the pairs newly crossed. Safe for concurrent use.
type Tracker struct {
	node       string
	service    string
	instance   string
	thresholds []time.Duration // largest first
	publish    func(Event) error

	mu sync.Mutex
	// sent is, per fingerprint, the smallest threshold published (or
	// skipped as passed) so far: thresholds at or above it are done.
	sent map[string]time.Duration
}

// NewTracker publishes with publish, for node, at thresholds (nil:
// [DefaultThresholds]). publish is called from Observe's caller; an error
// leaves the pair to be published at the next Observe.
func NewTracker(node string, thresholds []time.Duration, publish func(Event) error) *Tracker {
	if len(thresholds) == 0 {
		thresholds = DefaultThresholds
	}
	ts := slices.Clone(thresholds)
	slices.SortFunc(ts, func(a, b time.Duration) int { return cmp.Compare(b, a) })
	return &Tracker{node: node, thresholds: ts, publish: publish, sent: make(map[string]time.Duration)}
}

// NewServiceTracker is [NewTracker] for a service's own certificates: its
// events name the service and the instance instead of a node.
func NewServiceTracker(service, instance string, thresholds []time.Duration, publish func(Event) error) *Tracker {
	t := NewTracker("", thresholds, publish)
	t.service, t.instance = service, instance
	return t
}

// Observe looks at the certificates in use at now and publishes an event
// for each that fell under a threshold not published yet for it: the
// lowest threshold crossed, so a certificate found already under 7 days
// gives the 7-day event and never the 30-day one. Certificates no longer
// in use are forgotten. It returns the events published, and the errors of
// those that were not (they are tried again at the next Observe).
func (t *Tracker) Observe(now time.Time, in []Certificate) ([]Event, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seen := make(map[string]bool, len(in))
	var out []Event
	var errs []error
	for i := range in {
		c := &in[i]
		if c.Fingerprint == "" || seen[c.Fingerprint] {
			continue
		}
		seen[c.Fingerprint] = true
		left := c.NotAfter.Sub(now)
		crossed := time.Duration(0)
		for _, th := range t.thresholds {
			if left < th {
				crossed = th // the thresholds go down: the last one under is the lowest
			}
		}
		if crossed == 0 {
			continue
		}
		if done, ok := t.sent[c.Fingerprint]; ok && done <= crossed {
			continue
		}
		ev := Event{
			Node: t.node, Service: t.service, Instance: t.instance, Threshold: FormatThreshold(crossed), ThresholdSeconds: int64(crossed / time.Second),
			SecondsLeft: int64(left / time.Second), NotAfter: c.NotAfter.UTC(),
			Fingerprint: c.Fingerprint, Subject: c.Subject, Issuer: c.Issuer, Role: c.Role,
			Upstream: c.Upstream, Listener: c.Listener, Host: c.Host,
			Keystore: c.Keystore, Alias: c.Alias, Truststore: c.Truststore,
			Time: now.UTC(),
		}
		if err := t.publish(ev); err != nil {
			errs = append(errs, fmt.Errorf("publishing the %s expiry event of %s: %w", ev.Threshold, c.Fingerprint, err))
			continue
		}
		t.sent[c.Fingerprint] = crossed
		out = append(out, ev)
	}
	for fp := range t.sent {
		if !seen[fp] {
			delete(t.sent, fp)
		}
	}
	return out, errors.Join(errs...)
}

// Marshal is the event's JSON, as published.
func Marshal(e Event) ([]byte, error) { return json.Marshal(e) }
