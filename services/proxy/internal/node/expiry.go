package node

import (
	"crypto/x509"
	"time"

	nodev1 "keyway.dev/gen/keyway/node/v1"

	"keyway.dev/internal/certevents"
	"keyway.dev/internal/certs"
)

// statusAndExpiry is the node's status for the node bucket, and, as it is
// written (at each change the node applies and at each heartbeat), the
// expiry events of the certificates it lists and of the node's own: the
// heartbeat is often enough for thresholds counted in days, and the status
// already lists what the node uses.
func (n *Node) statusAndExpiry() *nodev1.NodeStatus {
	st := n.NodeStatus()
	now := time.Now()
	in := make([]certevents.Certificate, 0, len(st.Certificates)+len(n.own))
	for _, sc := range st.Certificates {
		in = append(in, certevents.Certificate{
			Fingerprint: sc.Sha256Fingerprint, Subject: sc.Subject, Issuer: sc.Issuer, NotAfter: sc.NotAfter.AsTime(),
			Role:     expiryRole(sc.Scope, sc.Role),
			Keystore: sc.Keystore, Alias: sc.Alias, Truststore: sc.Truststore,
			Upstream: pick(sc.Scope == "upstream", sc.Name), Listener: pick(sc.Scope == "listener", sc.Name), Host: sc.Host,
		})
	}
	for role, leaf := range n.own {
		if c := leaf(); c != nil {
			in = append(in, ownCertificate(role, c))
		}
	}
	_, err := n.expiry.Observe(now, in)
	switch {
	case err != nil && !n.expiryFailing:
		n.expiryFailing = true
		n.log.Warn("cannot publish certificate expiry events; retrying at each status write", "subject", certevents.Subject, "error", err)
	case err == nil && n.expiryFailing:
		n.expiryFailing = false
		n.log.Info("certificate expiry events published again", "subject", certevents.Subject)
	}
	return st
}

// publishExpiry sends one event on NATS and counts it. The event is small
// and core NATS buffers it while reconnecting; an error is a closed
// connection or a payload NATS refuses.
func (n *Node) publishExpiry(e certevents.Event) error {
	b, err := certevents.Marshal(e)
	if err != nil {
		return err
	}
	if err := n.nc.Publish(certevents.Subject, b); err != nil {
		return err
	}
	n.metrics.ObserveExpiryEvent(e.Threshold)
	n.log.Info("certificate expiring", "threshold", e.Threshold, "fingerprint", e.Fingerprint, "role", e.Role,
		"upstream", e.Upstream, "listener", e.Listener, "host", e.Host, "not_after", e.NotAfter)
	return nil
}

// expiryRole is the expiry metric's role of a status entry.
func expiryRole(scope, role string) string {
	switch {
	case scope == "listener" && role == "server":
		return "listener-server"
	case scope == "listener" && role == "trust":
		return "listener-client-ca"
	case scope == "upstream" && role == "client":
		return "upstream-client"
	case scope == "upstream" && role == "trust":
		return "upstream-ca"
	}
	return scope + "-" + role
}

func ownCertificate(role string, c *x509.Certificate) certevents.Certificate {
	return certevents.Certificate{
		Fingerprint: certs.Fingerprint(c), Subject: cut(c.Subject.String()), Issuer: cut(c.Issuer.String()),
		NotAfter: c.NotAfter, Role: role,
	}
}

func pick(ok bool, s string) string {
	if ok {
		return s
	}
	return ""
}
