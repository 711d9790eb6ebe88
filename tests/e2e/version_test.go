package e2e

import (
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"keyway.dev/tests/harness"
)

// Every binary answers --version with its version and the commit it was
// built from, exit status 0, before reading any other flag or variable (a
// variable its flags would refuse is set). Built from this checkout, the
// commit is the checkout's HEAD.
func TestEveryBinaryNamesItsCommit(t *testing.T) {
	root, err := harness.Root()
	if err != nil {
		t.Fatal(err)
	}
	head := ""
	if out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output(); err == nil {
		head = strings.TrimSpace(string(out))
	}
	line := regexp.MustCompile(`^(keyway[a-z-]*) (v[0-9][^ ]*|\(devel\)) \(commit ([0-9a-f]{7,40}|unknown)(, [0-9TZ:-]+)?(, modified)?\)\n$`)
	for _, bin := range []string{"keyway-policy", "keyway-proxy", "keyway-secrets", "keyway-dev", "keywayctl"} {
		t.Run(bin, func(t *testing.T) {
			out, errOut, code := harness.RunEnv(t, harness.Bin(t, bin), []string{"KEYWAY_PPROF=yes", "KEYWAY_DEV_VAULT=yes", "KEYWAY_SERVER=::"}, "--version")
			if code != 0 {
				t.Fatalf("%s --version: exit %d, stderr %q", bin, code, errOut)
			}
			m := line.FindStringSubmatch(out)
			if m == nil || m[1] != bin {
				t.Fatalf("%s --version printed %q; want %q", bin, out, bin+" <version> (commit <hash>, <time>[, modified])")
			}
			if head == "" {
				t.Skipf("%s --version: %q; not comparing the commit: %s is not a git checkout (or git is missing)", bin, strings.TrimSpace(out), root)
			}
			if commit := m[3]; !strings.HasPrefix(head, commit) {
				t.Errorf("%s --version names commit %s; the checkout is at %s (git rev-parse --short HEAD): rebuild with make build, or unset KEYWAY_BIN", bin, commit, head[:12])
			}
		})
	}
	t.Run("keywayctl version -o json", func(t *testing.T) {
		out, errOut, code := harness.Run(t, harness.Bin(t, "keywayctl"), "version", "-o", "json")
		var v struct{ Binary, Version, Revision string }
		if code != 0 || json.Unmarshal([]byte(out), &v) != nil {
			t.Fatalf("keywayctl version -o json: exit %d, %q, stderr %q", code, out, errOut)
		}
		if v.Binary != "keywayctl" || v.Version == "" {
			t.Errorf("keywayctl version -o json = %+v", v)
		}
		if head != "" && v.Revision != head {
			t.Errorf("keywayctl version -o json: revision %q, the checkout is at %s", v.Revision, head)
		}
	})
}
