package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// indentPEM indents every line of a PEM block for a YAML literal.
func indentPEM(b []byte, prefix string) string {
	var out strings.Builder
	for _, line := range strings.SplitAfter(strings.TrimRight(string(b), "\n"), "\n") {
		out.WriteString(prefix + strings.TrimRight(line, "\n") + "\n")
	}
	return out.String()
}

// A Listener on a port another process holds: the node reaches the
// revision but refuses the Listener, and apply --wait exits non-zero naming
// the node and the port error rather than report the rollout complete. A
// later, unrelated apply completes although the node still refuses the
// Listener, and status lists the refusal in its table.
func TestApplyWaitReportsRefusedListener(t *testing.T) {
	w := newWorldEnv(t, nil, 1)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	addr := held.Addr().String()
	server := w.upstreamCA.Server("gw.e2e")
	listener := w.write(t, "listener.yaml", fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: Listener
metadata:
  name: taken
spec:
  address: %s
  hosts:
    - hostnames: [gw.e2e]
      default: true
      certificate:
        crt: |
%s        key: |
%s`, addr, indentPEM(server.CertPEM, "          "), indentPEM(server.KeyPEM, "          ")))

	stdout, stderr, code := w.ctl(t, "apply", "-f", listener, "--wait", "--timeout", "60s")
	if code == 0 {
		t.Fatalf("apply --wait of a Listener on a held port: exit 0\n%s%s", stdout, stderr)
	}
	t.Logf("apply --wait: exit %d\n%s%s", code, stdout, stderr)
	if strings.Contains(stdout, "complete") {
		t.Errorf("apply --wait reports the rollout complete while the node refused the Listener:\n%s", stdout)
	}
	for _, want := range []string{"node node-1 refused listener.taken", addr, "address already in use", "rollout of revision"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("apply --wait stderr lacks %q:\n%s", want, stderr)
		}
	}

	// An unrelated change: the node's refusal of the older Listener does
	// not fail it.
	svc := w.write(t, "service.yaml", fmt.Sprintf(`apiVersion: keyway.dev/v1alpha1
kind: Service
metadata:
  name: unrelated
spec:
  address: %s
`, w.upstream.Addr()))
	stdout, stderr, code = w.ctl(t, "apply", "-f", svc, "--wait", "--timeout", "60s")
	if code != 0 || !strings.Contains(stdout, "complete") {
		t.Fatalf("apply --wait of an unrelated Service beside an old refusal: exit %d\n%s%s", code, stdout, stderr)
	}

	table, stderr, code := w.ctl(t, "status")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(table, "node node-1 refused listener.taken: ") || !strings.Contains(table, "address already in use") {
		t.Errorf("status table does not show the refusal:\n%s", table)
	}
}
