package node_test

import (
	"testing"
	"time"

	"keyway.dev/common/material/materialtest"
	"keyway.dev/proxy/internal/secrets"
)

// startRealSecrets runs the real keyway-secrets against the test's NATS.
func startRealSecrets(t *testing.T, natsURL string) *realSecrets {
	t.Helper()
	return &realSecrets{materialtest.StartService(t, natsURL)}
}

type realSecrets struct{ *materialtest.Service }

// source is a node's Source over the real service's internal port, with a
// client certificate from its internal CA.
func (r *realSecrets) source(t *testing.T) *secrets.Source {
	return secrets.New(r.Client(t, "proxy-node"), secrets.Options{RetryInterval: 100 * time.Millisecond})
}
