// Package version says which build of a Keyway binary is running: the main
// module's version and the commit it was built from, with the commit's time
// and whether the working tree had changes. Every binary prints it for
// --version (keywayctl also for `keywayctl version`).
//
// The Go toolchain records the commit in the binary's build information
// (vcs.revision, vcs.time, vcs.modified) only when it finds a .git folder
// and -buildvcs is on: a git worktree (where .git is a file) and
// GOFLAGS=-buildvcs=false leave it out. The Makefile therefore also passes
// the same facts with -ldflags -X (scripts/version.sh ldflags); the build
// information wins when both are present, since the toolchain computed it
// from the very sources it compiled.
package version

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Set at link time by scripts/version.sh ldflags:
//
//	-X keyway.dev/internal/version.version=v0.0.0-20261206040000-abc123def456
//	-X keyway.dev/internal/version.revision=<full commit hash>
//	-X keyway.dev/internal/version.time=2026-12-06T04:00:00Z
//	-X keyway.dev/internal/version.modified=true
var (
	version  string
	revision string
	time     string
	modified string
)

// Info is what a binary knows about its own build. Empty fields are
// unknown.
type Info struct {
	// Version is the main module's version: a tag, a pseudo-version such
	// as v0.0.0-20261206040000-abc123def456, or "(devel)".
	Version string `json:"version"`
	// Revision is the full commit hash the binary was built from.
	Revision string `json:"revision,omitempty"`
	// Time is the commit's time, RFC 3339 in UTC.
	Time string `json:"time,omitempty"`
	// Modified is true when the working tree differed from the commit.
	Modified bool `json:"modified"`
	// GoVersion is the toolchain that built the binary.
	GoVersion string `json:"goVersion,omitempty"`
}

// shortLen is how much of the commit hash String prints: the length Go
// uses in pseudo-versions.
const shortLen = 12

// Get reads the running binary's build information.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return from(bi, linked{version: version, revision: revision, time: time, modified: modified})
}

// linked are the values given with -ldflags -X.
type linked struct{ version, revision, time, modified string }

// from combines the toolchain's build information (nil when absent) with
// the link-time values: the toolchain's win field by field, the link-time
// ones fill what it left out.
func from(bi *debug.BuildInfo, l linked) Info {
	info := Info{
		Version:  l.version,
		Revision: l.revision,
		Time:     l.time,
		Modified: l.modified == "true",
	}
	if bi == nil {
		if info.Version == "" {
			info.Version = "(devel)"
		}
		return info
	}
	info.GoVersion = bi.GoVersion
	// A workspace or a plain checkout build reports "(devel)": a tagged or
	// pseudo-version from the link flags says more.
	if v := bi.Main.Version; v != "" && (v != "(devel)" || info.Version == "") {
		info.Version = v
	}
	// The vcs.* settings describe one checkout: take them together, or
	// not at all.
	vcs := make(map[string]string)
	for _, s := range bi.Settings {
		if strings.HasPrefix(s.Key, "vcs.") {
			vcs[s.Key] = s.Value
		}
	}
	if rev := vcs["vcs.revision"]; rev != "" {
		info.Revision, info.Time, info.Modified = rev, vcs["vcs.time"], vcs["vcs.modified"] == "true"
	}
	if info.Version == "" {
		info.Version = "(devel)"
	}
	return info
}

// String is one line for --version:
//
//	keyway-policy v0.0.0-20261206040000-abc123def456 (commit abc123def456, 2026-12-06T04:00:00Z, modified)
//
// A build without a commit says so: "(commit unknown)".
func (i Info) String(binary string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s (commit ", binary, i.Version)
	if i.Revision == "" {
		b.WriteString("unknown")
	} else {
		b.WriteString(i.Revision[:min(len(i.Revision), shortLen)])
	}
	if i.Time != "" {
		b.WriteString(", " + i.Time)
	}
	if i.Modified {
		b.WriteString(", modified")
	}
	b.WriteString(")")
	return b.String()
}

// String is Get().String(binary).
func String(binary string) string { return Get().String(binary) }
