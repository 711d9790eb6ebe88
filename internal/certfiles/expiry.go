package certfiles

import (
	"crypto/x509"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"keyway.dev/internal/certs"
)

// ExpiryMetric is the name every Keyway service reports a certificate's
// time to expiry under, with [ExpiryLabels]: one name, one label set,
// whichever process presents or trusts the certificate.
const ExpiryMetric = "keyway_certificate_expiry_seconds"

// ExpiryHelp is the metric's help text.
const ExpiryHelp = "Seconds until a certificate the process presents or trusts expires (negative once expired), computed at scrape time. role says what it is for (listener-server, listener-client-ca, upstream-client, upstream-ca, internal-client, internal-server, api-server); upstream, listener and host say where it is used; keystore and alias, or truststore, name the secrets service's secret it comes from (empty for inline PEM and files)."

// ExpiryLabels are the labels of [ExpiryMetric], in order.
var ExpiryLabels = []string{"role", "upstream", "listener", "host", "keystore", "alias", "truststore", "fingerprint"}

// ExpiryDesc describes [ExpiryMetric].
var ExpiryDesc = prometheus.NewDesc(ExpiryMetric, ExpiryHelp, ExpiryLabels, nil)

// Collector reports the expiry of a process's own certificates, by role
// ("internal-server", "internal-client", "api-server", "admin-server"): each
// func returns the certificate in use at scrape time (nil leaves it out), so
// a rotated certificate's figure follows it. [KeyPair.Leaf] is such a func.
func Collector(byRole map[string]func() *x509.Certificate) prometheus.Collector {
	return &collector{byRole: byRole, now: time.Now}
}

type collector struct {
	byRole map[string]func() *x509.Certificate
	now    func() time.Time
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { ch <- ExpiryDesc }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	for role, leaf := range c.byRole {
		cert := leaf()
		if cert == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(ExpiryDesc, prometheus.GaugeValue, cert.NotAfter.Sub(now).Seconds(),
			role, "", "", "", "", "", "", certs.Fingerprint(cert))
	}
}
