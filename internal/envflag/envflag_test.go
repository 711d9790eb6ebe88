package envflag_test

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"

	"keyway.dev/internal/envflag"
)

func flags() (*flag.FlagSet, *string, *string, *bool) {
	fs := flag.NewFlagSet("keyway-test", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	listen := fs.String("listen", "127.0.0.1:8081", "API address")
	nodeID := fs.String("node-id", "", "node id")
	pprof := fs.Bool("pprof", false, "profiler")
	return fs, listen, nodeID, pprof
}

var aliases = envflag.Aliases{"listen": {"KEYWAY_POLICY_LISTEN"}}

// The command line wins; then the KEYWAY_ name; then the older name; then
// the default.
func TestPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"default", nil, nil, "127.0.0.1:8081"},
		{"alias", map[string]string{"KEYWAY_POLICY_LISTEN": "127.0.0.1:2"}, nil, "127.0.0.1:2"},
		{"name over alias", map[string]string{"KEYWAY_POLICY_LISTEN": "127.0.0.1:2", "KEYWAY_LISTEN": "127.0.0.1:3"}, nil, "127.0.0.1:3"},
		{"empty name is unset", map[string]string{"KEYWAY_POLICY_LISTEN": "127.0.0.1:2", "KEYWAY_LISTEN": ""}, nil, "127.0.0.1:2"},
		{"command line over all", map[string]string{"KEYWAY_POLICY_LISTEN": "127.0.0.1:2", "KEYWAY_LISTEN": "127.0.0.1:3"}, []string{"--listen", "127.0.0.1:4"}, "127.0.0.1:4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KEYWAY_LISTEN", "")
			t.Setenv("KEYWAY_POLICY_LISTEN", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs, listen, _, _ := flags()
			if err := envflag.Parse(fs, envflag.Prefix, tc.args, aliases); err != nil {
				t.Fatal(err)
			}
			if *listen != tc.want {
				t.Errorf("--listen = %q, want %q", *listen, tc.want)
			}
		})
	}
}

func TestDashesAndBooleans(t *testing.T) {
	t.Setenv("KEYWAY_NODE_ID", "edge-1")
	t.Setenv("KEYWAY_PPROF", "1")
	fs, _, nodeID, pprof := flags()
	if err := envflag.Parse(fs, envflag.Prefix, nil, nil); err != nil {
		t.Fatal(err)
	}
	if *nodeID != "edge-1" || !*pprof {
		t.Errorf("--node-id %q --pprof %v, want edge-1 and true", *nodeID, *pprof)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	t.Setenv("KEYWAY_PPROF", "yes please")
	fs, _, _, _ := flags()
	if err := envflag.Parse(fs, envflag.Prefix, nil, nil); err == nil || !strings.Contains(err.Error(), "KEYWAY_PPROF") {
		t.Errorf("KEYWAY_PPROF=yes please: %v, want an error naming the variable", err)
	}
	t.Setenv("KEYWAY_PPROF", "")
	t.Setenv("OLD_PPROF", "maybe")
	fs, _, _, _ = flags()
	if err := envflag.Parse(fs, envflag.Prefix, nil, envflag.Aliases{"pprof": {"OLD_PPROF"}}); err == nil || !strings.Contains(err.Error(), "OLD_PPROF") {
		t.Errorf("OLD_PPROF=maybe: %v, want an error naming the variable", err)
	}
	fs, _, _, _ = flags()
	if err := envflag.Parse(fs, envflag.Prefix, nil, envflag.Aliases{"listn": {"X"}}); err == nil {
		t.Error("an alias of a flag that does not exist was accepted")
	}
}

func TestUsageListsEnvironmentNames(t *testing.T) {
	fs, _, _, _ := flags()
	var out bytes.Buffer
	fs.SetOutput(&out)
	if err := envflag.Parse(fs, envflag.Prefix, []string{"--help"}, aliases); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"--listen string", "env KEYWAY_LISTEN, KEYWAY_POLICY_LISTEN", `(default "127.0.0.1:8081")`, "env KEYWAY_NODE_ID", "env KEYWAY_PPROF"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
	if got := envflag.Name(envflag.DevPrefix, "vault-bin"); got != "KEYWAY_DEV_VAULT_BIN" {
		t.Errorf("Name(DevPrefix, vault-bin) = %s", got)
	}
}

// --version answers before anything else is read: a variable the flags
// would refuse, a missing value, an unknown flag after it.
func TestVersionBeforeEverything(t *testing.T) {
	for _, args := range [][]string{
		{"--version"},
		{"-version"},
		{"--version=true"},
		{"--listen", "127.0.0.1:1", "--version", "--no-such-flag"},
		{"--pprof", "--version"},
		{"--node-id=x", "--version"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Setenv("KEYWAY_PPROF", "yes") // refused by --pprof, were it read
			fs, _, _, _ := flags()
			if err := envflag.Parse(fs, envflag.Prefix, args, aliases); !errors.Is(err, envflag.ErrVersion) {
				t.Fatalf("Parse(%q) = %v, want ErrVersion", args, err)
			}
		})
	}
}

// What only looks like --version is not: a flag's value, an argument after
// "--" or after the first non-flag, --version=false. And the environment
// has no form of it.
func TestVersionOnlyAsAFlag(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		nodeID string
	}{
		{[]string{"--node-id", "--version"}, "--version"},
		{[]string{"--version=false", "--node-id", "n"}, "n"},
		{[]string{"--node-id", "n", "--", "--version"}, "n"},
		{[]string{"--node-id=n", "positional", "--version"}, "n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Setenv("KEYWAY_VERSION", "true")
			fs, _, nodeID, _ := flags()
			if err := envflag.Parse(fs, envflag.Prefix, tc.args, aliases); err != nil {
				t.Fatalf("Parse(%q) = %v, want no error", tc.args, err)
			}
			if *nodeID != tc.nodeID {
				t.Errorf("Parse(%q): --node-id = %q, want %q", tc.args, *nodeID, tc.nodeID)
			}
		})
	}
	fs, _, _, _ := flags()
	if err := envflag.Parse(fs, envflag.Prefix, []string{"--version=maybe"}, aliases); err == nil || !strings.Contains(err.Error(), "--version") {
		t.Errorf("--version=maybe: %v, want an error naming --version", err)
	}
}
