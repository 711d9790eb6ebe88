// Package envflag gives every flag of a Keyway service an environment
// form, the same way in every binary (keyway-policy, keyway-proxy,
// keyway-secrets, keyway-dev), with github.com/peterbourgon/ff/v3:
// --node-id is KEYWAY_NODE_ID, --nats-password-file is
// KEYWAY_NATS_PASSWORD_FILE; keyway-dev's flags take the prefix
// KEYWAY_DEV (its --vault is KEYWAY_DEV_VAULT, not KEYWAY_VAULT, which
// names the Vault binary everywhere else).
//
// The command line wins over the environment, and the environment over
// the default. Names a binary read before the scheme existed
// (KEYWAY_POLICY_LISTEN, KEYWAY_NATS_URL, VAULT_ADDR…) are kept as aliases:
// read when the flag is not on the command line and its KEYWAY_ name is
// not set. An empty variable counts as not set. A value the flag refuses
// (KEYWAY_PPROF=yes) is an error naming the variable, not a silent
// default.
//
// --version (command line only: a KEYWAY_VERSION in the environment is
// somebody else's) prints the binary's version and commit and makes Parse
// return ErrVersion before anything else is parsed or checked, so that it
// answers even where the rest of the configuration is missing or wrong.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/peterbourgon/ff/v3"

	"keyway.dev/internal/version"
)

// ErrVersion is what Parse returns after printing the version for
// --version: the caller exits with status 0.
var ErrVersion = errors.New("version requested")

// Prefix is the services' environment prefix; keyway-dev uses DevPrefix.
const (
	Prefix    = "KEYWAY"
	DevPrefix = "KEYWAY_DEV"
)

// Aliases are older environment names of flags, by flag name, read after
// the KEYWAY_ name, in order.
type Aliases map[string][]string

// Name is the environment form of flag under prefix: PREFIX_FLAG, upper
// case, with '-' as '_'.
func Name(prefix, flag string) string {
	return prefix + "_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_", "/", "_").Replace(flag))
}

// Names are every environment name of flag: its PREFIX_ name, then its
// aliases.
func Names(prefix, flag string, aliases Aliases) []string {
	return append([]string{Name(prefix, flag)}, aliases[flag]...)
}

// Parse parses args into fs, then sets each flag that is not on the
// command line from the environment: its prefix name, else the first of its
// aliases that is set. It sets fs.Usage to list each flag with its
// environment names. Aliases of flags fs does not have are an error (a
// typo would silently drop the older name).
func Parse(fs *flag.FlagSet, prefix string, args []string, aliases Aliases) error {
	asked, args, err := versionFlag(fs, args)
	if err != nil {
		return err
	}
	if asked {
		fmt.Fprintln(os.Stdout, version.String(fs.Name()))
		return ErrVersion
	}
	for name := range aliases {
		if fs.Lookup(name) == nil {
			return fmt.Errorf("envflag: alias for unknown flag --%s", name)
		}
	}
	fs.Usage = func() { Usage(fs, prefix, aliases) }
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix(prefix)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp
		}
		return err
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		for _, env := range aliases[f.Name] {
			v := os.Getenv(env)
			if v == "" {
				continue
			}
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("environment variable %s (for --%s): %w", env, f.Name, serr)
			}
			return
		}
	})
	return err
}

// versionFlag looks for --version among the flags of args, the way the
// flag package reads them (up to "--" or the first argument that is not a
// flag; a flag that is not boolean takes the next argument as its value
// unless written --flag=value), and returns args without --version=false.
// --version is not one of fs's flags, so that ff gives it no environment
// form.
func versionFlag(fs *flag.FlagSet, args []string) (asked bool, rest []string, err error) {
	rest = make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			return false, append(rest, args[i:]...), nil
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if name == "version" {
			if !hasValue {
				return true, nil, nil
			}
			on, err := strconv.ParseBool(value)
			if err != nil {
				return false, nil, fmt.Errorf("--version=%q: want true or false", value)
			}
			if on {
				return true, nil, nil
			}
			continue // --version=false: as if absent
		}
		rest = append(rest, a)
		f := fs.Lookup(name)
		if f == nil {
			// Unknown (or -h): ff.Parse says so; nothing after it is read.
			return false, append(rest, args[i+1:]...), nil
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); (!ok || !b.IsBoolFlag()) && !hasValue && i+1 < len(args) {
			i++
			rest = append(rest, args[i])
		}
	}
	return false, rest, nil
}

// Usage prints fs's flags, each with its default and environment names,
// to fs.Output().
func Usage(fs *flag.FlagSet, prefix string, aliases Aliases) {
	out := fs.Output()
	fmt.Fprintf(out, "Usage of %s (each flag also from the environment variables shown; the command line wins):\n", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		kind, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if kind != "" {
			line += " " + kind
		}
		line += "\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t")
		if f.DefValue != "" && !slices.Contains([]string{"false", "0"}, f.DefValue) {
			line += fmt.Sprintf(" (default %q)", f.DefValue)
		}
		line += "\n    \tenv " + strings.Join(Names(prefix, f.Name, aliases), ", ")
		fmt.Fprintln(out, line)
	})
	fmt.Fprintln(out, "  --version\n    \tprint the version and the commit this binary was built from, then exit (command line only)")
}
