package harness

import "testing"

// PolicyArgs returns the flags that point keyway-policy at s: its API, which
// checks references and takes the inline private keys the policy service
// moves out of resources at apply (so that NATS never holds one), and its
// internal port, with a client certificate issued for name, from which the
// live probe fetches referenced material.
func (s *Secrets) PolicyArgs(tb testing.TB, name string) []string {
	tb.Helper()
	return append([]string{"--secrets-server", s.URL}, s.ClientArgs(tb, name)...)
}
