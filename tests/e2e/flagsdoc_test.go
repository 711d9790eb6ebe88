package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"keyway.dev/tests/harness"
)

// docs/reference/flags.md lists every flag of every service binary with
// every environment variable the binary reads it from, as the binary's own
// --help says: the table cannot drift from the code.
func TestFlagsReferenceListsEveryFlagAndVariable(t *testing.T) {
	root, err := harness.Root()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "reference", "flags.md"))
	if err != nil {
		t.Fatal(err)
	}
	sections := flagSections(string(doc))
	for _, bin := range []string{"keyway-policy", "keyway-proxy", "keyway-secrets", "keyway-dev"} {
		t.Run(bin, func(t *testing.T) {
			out, errOut, code := harness.Run(t, harness.Bin(t, bin), "--help")
			if code != 0 {
				t.Errorf("%s --help: exit %d, want 0", bin, code)
			}
			flags := helpFlags(out + errOut)
			if len(flags) < 10 {
				t.Fatalf("%s --help lists %d flags with their variables; its output:\n%s%s", bin, len(flags), out, errOut)
			}
			rows, ok := sections[bin]
			if !ok {
				t.Fatalf("flags.md has no section ### `%s`", bin)
			}
			for flag, envs := range flags {
				row := ""
				for _, r := range rows {
					if strings.Contains(strings.SplitN(r, " | ", 2)[0], "`--"+flag+"`") {
						row = r
					}
				}
				if row == "" {
					t.Errorf("flags.md, %s: no row for --%s (variables %s)", bin, flag, strings.Join(envs, ", "))
					continue
				}
				for _, env := range envs {
					if !strings.Contains(row, "`"+env+"`") {
						t.Errorf("flags.md, %s: the row of --%s does not name its variable %s", bin, flag, env)
					}
				}
			}
		})
	}
}

// helpFlags reads envflag's usage: each "  --flag type" line, then its
// "env A, B" line.
func helpFlags(help string) map[string][]string {
	flags := make(map[string][]string)
	flagRE, envRE := regexp.MustCompile(`^  --([a-z0-9-]+)`), regexp.MustCompile(`^\s+env (.+)$`)
	current := ""
	for _, line := range strings.Split(help, "\n") {
		if m := flagRE.FindStringSubmatch(line); m != nil {
			current = m[1]
		} else if m := envRE.FindStringSubmatch(line); m != nil && current != "" {
			flags[current] = strings.Split(m[1], ", ")
			current = ""
		}
	}
	return flags
}

// flagSections are the table rows of flags.md by binary (### `binary`).
func flagSections(doc string) map[string][]string {
	out := make(map[string][]string)
	heading := regexp.MustCompile("^### `([a-z-]+)`")
	current := ""
	for _, line := range strings.Split(doc, "\n") {
		switch {
		case heading.MatchString(line):
			current = heading.FindStringSubmatch(line)[1]
		case strings.HasPrefix(line, "## "), strings.HasPrefix(line, "### "):
			current = ""
		case current != "" && strings.HasPrefix(line, "| `--"):
			out[current] = append(out[current], line)
		}
	}
	return out
}
