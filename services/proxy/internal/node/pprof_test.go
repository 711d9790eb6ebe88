package node_test

import (
	"net/http"
	"testing"

	"keyway.dev/proxy/internal/node"
)

// Go's profiler is on the admin port only when asked for (--pprof).
func TestPprofOnlyWhenAskedFor(t *testing.T) {
	t.Parallel()
	url, _ := startNATS(t)
	off, _ := startNode(t, url, nil)
	if a := do(t, "GET", "http://"+off.AdminAddr()+"/debug/pprof/cmdline"); a.status != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without PProf: %d, want 404", a.status)
	}
	on, _ := startNode(t, url, func(c *node.Config) { c.PProf = true; c.NodeID = "pprof" })
	if a := do(t, "GET", "http://"+on.AdminAddr()+"/debug/pprof/cmdline"); a.status != http.StatusOK {
		t.Errorf("/debug/pprof/ with PProf: %d, want 200", a.status)
	}
}
