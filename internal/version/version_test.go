package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

const rev = "abc123def4567890abc123def4567890abc123de"

func TestFrom(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		l    linked
		want Info
		line string
	}{
		{
			name: "toolchain stamped the checkout",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261206040000-abc123def456"}, Settings: []debug.BuildSetting{
				{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev},
				{Key: "vcs.time", Value: "2026-12-06T04:00:00Z"}, {Key: "vcs.modified", Value: "true"},
			}},
			want: Info{Version: "v0.0.0-20261206040000-abc123def456", Revision: rev, Time: "2026-12-06T04:00:00Z", Modified: true, GoVersion: "go1.26.8"},
			line: "keyway-policy v0.0.0-20261206040000-abc123def456 (commit abc123def456, 2026-12-06T04:00:00Z, modified)",
		},
		{
			name: "toolchain wins over link flags",
			bi: &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: "2026-12-06T04:00:00Z"}, {Key: "vcs.modified", Value: "false"},
			}},
			l:    linked{version: "v9.9.9", revision: "ffff", time: "2020-01-01T00:00:00Z", modified: "true"},
			want: Info{Version: "v1.2.3", Revision: rev, Time: "2026-12-06T04:00:00Z"},
			line: "keyway-policy v1.2.3 (commit abc123def456, 2026-12-06T04:00:00Z)",
		},
		{
			name: "workspace build: link flags fill in",
			bi:   &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			l:    linked{version: "v0.0.0-20261206040000-abc123def456+dirty", revision: rev, time: "2026-12-06T04:00:00Z", modified: "true"},
			want: Info{Version: "v0.0.0-20261206040000-abc123def456+dirty", Revision: rev, Time: "2026-12-06T04:00:00Z", Modified: true},
			line: "keyway-policy v0.0.0-20261206040000-abc123def456+dirty (commit abc123def456, 2026-12-06T04:00:00Z, modified)",
		},
		{
			name: "nothing known",
			bi:   &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			want: Info{Version: "(devel)"},
			line: "keyway-policy (devel) (commit unknown)",
		},
		{
			name: "no build information",
			want: Info{Version: "(devel)"},
			line: "keyway-policy (devel) (commit unknown)",
		},
		{
			name: "short hash printed whole",
			l:    linked{revision: "abc"},
			want: Info{Version: "(devel)", Revision: "abc"},
			line: "keyway-policy (devel) (commit abc)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := from(tc.bi, tc.l)
			if got != tc.want {
				t.Errorf("from = %+v, want %+v", got, tc.want)
			}
			if line := got.String("keyway-policy"); line != tc.line {
				t.Errorf("String = %q, want %q", line, tc.line)
			}
		})
	}
}

// The test binary itself has build information: Get reads it without
// failing and always names a version.
func TestGetNamesAVersion(t *testing.T) {
	if got := Get(); got.Version == "" || !strings.HasPrefix(String("x"), "x "+got.Version+" (commit ") {
		t.Errorf("Get = %+v, String = %q", got, String("x"))
	}
}
