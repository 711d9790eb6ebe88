package certevents

import (
	"cmp"
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"keyway.dev/internal/certs"
)

// EventsMetric counts the events a process published, by threshold: the
// same name in a node and in the services.
const EventsMetric = "keyway_certificate_expiry_events_total"

// NewEventsCounter is [EventsMetric] for a service to register; its
// threshold label is [FormatThreshold]'s.
func NewEventsCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: EventsMetric,
		Help: "Certificate expiry events this process published on " + Subject + " for its own certificates, by the threshold crossed (30d, 7d, 1d by default: --cert-expiry-thresholds).",
	}, []string{"threshold"})
}

// DefaultOwnInterval is how often a service looks at its own certificates:
// thresholds are days, and a renewed certificate is read from its files at
// a handshake in any case.
const DefaultOwnInterval = time.Minute

// Own is what [WatchOwn] needs: a service's own certificates and where to
// publish.
type Own struct {
	// Service names the publisher ("policy", "secrets").
	Service string
	// Instance names the replica; empty: host name and process id.
	Instance string
	// Thresholds are --cert-expiry-thresholds; nil: DefaultThresholds.
	Thresholds []time.Duration
	// Interval is how often the certificates are looked at; zero:
	// DefaultOwnInterval.
	Interval time.Duration
	// Certificates are the service's own certificates by the expiry
	// metric's role (api-server, internal-server, internal-client), each
	// read at every look so that a renewed one is followed; nil leaves a
	// role out.
	Certificates map[string]func() *x509.Certificate
	// Publish sends data on subject (nats.Conn.Publish).
	Publish func(subject string, data []byte) error
	// Counter counts the events published (NewEventsCounter); nil counts
	// nothing.
	Counter *prometheus.CounterVec
	Log     *slog.Logger
}

// WatchOwn publishes the expiry events of a service's own certificates, at
// once and then every Interval, until ctx ends: as a node does for its
// certificates, once per (certificate, threshold) while the process runs.
// A failed publication is logged once and tried again at the next look.
func WatchOwn(ctx context.Context, o Own) {
	log := cmp.Or(o.Log, slog.New(slog.DiscardHandler))
	if o.Instance == "" {
		host, _ := os.Hostname()
		o.Instance = cmp.Or(host, "keyway-"+o.Service) + "/" + strconv.Itoa(os.Getpid())
	}
	roles := make([]string, 0, len(o.Certificates))
	for role := range o.Certificates {
		roles = append(roles, role)
	}
	slices.Sort(roles)
	tr := NewServiceTracker(o.Service, o.Instance, o.Thresholds, func(e Event) error {
		b, err := Marshal(e)
		if err != nil {
			return err
		}
		if err := o.Publish(Subject, b); err != nil {
			return err
		}
		if o.Counter != nil {
			o.Counter.WithLabelValues(e.Threshold).Inc()
		}
		log.Info("certificate expiring", "threshold", e.Threshold, "fingerprint", e.Fingerprint, "role", e.Role, "not_after", e.NotAfter)
		return nil
	})
	failing := false
	look := func() {
		in := make([]Certificate, 0, len(roles))
		for _, role := range roles {
			if c := o.Certificates[role](); c != nil {
				in = append(in, Certificate{
					Fingerprint: certs.Fingerprint(c), Subject: bound(c.Subject.String()), Issuer: bound(c.Issuer.String()),
					NotAfter: c.NotAfter, Role: role,
				})
			}
		}
		_, err := tr.Observe(time.Now(), in)
		switch {
		case err != nil && !failing:
			failing = true
			log.Warn("cannot publish certificate expiry events; retrying at each look", "subject", Subject, "error", err)
		case err == nil && failing:
			failing = false
			log.Info("certificate expiry events published again", "subject", Subject)
		}
	}
	look()
	tick := time.NewTicker(cmp.Or(o.Interval, DefaultOwnInterval))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			look()
		}
	}
}

// maxName bounds a subject or issuer name in an event.
const maxName = 256

func bound(s string) string {
	if len(s) <= maxName {
		return s
	}
	return s[:maxName] + "…"
}
