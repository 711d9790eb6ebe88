package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"keyway.dev/internal/ctlconfig"
)

func newConfigCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Contexts: named servers and credentials, kept in keywayctl's config file",
		Long: `A context names the policy service's and the secrets service's URLs and how
keywayctl authenticates to them: a client certificate and key, or a bearer
token (a tokenFile keeps it out of the config). The CA certificate checks the
services' certificates. Commands use the current context, or --context NAME;
--server, --secrets-server, --ca, --cert, --key and --token-file (and their
KEYWAY_* variables) override single settings.

The file is $KEYWAYCONFIG, else ~/.config/keyway/config.yaml (--keywayconfig
overrides both); it is written with mode 0600. ` + "`make run`" + ` writes the
context keyway-dev into it.`,
		Example: `  keywayctl config get-contexts
  keywayctl config set-context prod --server https://policy.example.com --secrets-server https://secrets.example.com \
      --ca prod-ca.crt --cert me.crt --key me.key
  keywayctl config use-context prod
  keywayctl config set-context ci --server https://policy.example.com --token-file /run/secrets/keyway-token
  keywayctl --context ci get routes
  keywayctl config view -o json`,
	}
	cmd.AddCommand(
		configGetContexts(g), configCurrentContext(g), configUseContext(g),
		configSetContext(g), configDeleteContext(g), configView(g),
	)
	return cmd
}

// configFile is the config file's path, from the running command's flags
// and the environment.
func (g *globals) configFile() (string, error) {
	flags := map[string]string{}
	if v, ok := g.conn.given(configFileFlag); ok {
		flags[configFileFlag] = v
	}
	return configPath(flags, g.io.Getenv)
}

// loadConfig reads the config file; a missing one is empty.
func (g *globals) loadConfig() (*ctlconfig.Config, string, error) {
	path, err := g.configFile()
	if err != nil {
		return nil, "", err
	}
	c, err := ctlconfig.Load(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &ctlconfig.Config{}, path, nil
	}
	return c, path, err
}

// updateConfig changes the config file under its lock.
func (g *globals) updateConfig(change func(*ctlconfig.Config) error) (string, error) {
	path, err := g.configFile()
	if err != nil {
		return "", err
	}
	return path, ctlconfig.Update(path, change)
}

// contextRow is a context as get-contexts -o json|yaml shows it.
type contextRow struct {
	ctlconfig.Context `yaml:",inline"`
	Current           bool   `json:"current" yaml:"current"`
	Auth              string `json:"auth" yaml:"auth"`
}

func configGetContexts(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "get-contexts",
		Short: "List the contexts; * marks the current one",
		Long: `get-contexts lists the contexts of the config file. AUTH says how each
authenticates: client certificate, token, token file, or none.

Output formats (-o):
  table  CURRENT NAME SERVER SECRETS-SERVER AUTH
  json   {"currentContext": …, "contexts": [{"name": …, "current": …, "auth": …, …}]}
  yaml   the same as YAML
Tokens are shown as ` + ctlconfig.Redacted + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkConfigFormat(format, true); err != nil {
				return err
			}
			c, path, err := g.loadConfig()
			if err != nil {
				return err
			}
			rows := make([]contextRow, len(c.Contexts))
			for i, x := range c.Contexts {
				rows[i] = contextRow{Context: x.Redacted(), Current: x.Name == c.CurrentContext, Auth: x.Auth()}
			}
			if format != "table" {
				return writeConfigValue(g.io.Stdout, format, struct {
					CurrentContext string       `json:"currentContext" yaml:"currentContext"`
					Contexts       []contextRow `json:"contexts" yaml:"contexts"`
				}{c.CurrentContext, rows})
			}
			if len(rows) == 0 {
				fmt.Fprintf(g.io.Stderr, "No contexts in %s; keywayctl config set-context NAME --server URL makes one.\n", path)
				return nil
			}
			tw := tabwriter.NewWriter(g.io.Stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "CURRENT\tNAME\tSERVER\tSECRETS-SERVER\tAUTH")
			for _, r := range rows {
				mark := ""
				if r.Current {
					mark = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mark, r.Name, orDash(r.Server), orDash(r.SecretsServer), r.Auth)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func configCurrentContext(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "current-context",
		Short: "Print the current context's name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, path, err := g.loadConfig()
			if err != nil {
				return err
			}
			if c.CurrentContext == "" {
				return fmt.Errorf("%s names no current context; select one with keywayctl config use-context NAME%s", path, contextList(c))
			}
			fmt.Fprintln(g.io.Stdout, c.CurrentContext)
			return nil
		},
	}
}

// contextList is "(contexts: a, b)" for a message, or a hint to make one.
func contextList(c *ctlconfig.Config) string {
	if len(c.Contexts) == 0 {
		return " after making one with keywayctl config set-context NAME --server URL"
	}
	return " (contexts: " + strings.Join(c.Names(), ", ") + ")"
}

func configUseContext(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "use-context NAME",
		Short:   "Make NAME the current context",
		Example: `  keywayctl config use-context keyway-dev`,
		Args:    exactArgs("use-context NAME", 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			path, err := g.updateConfig(func(c *ctlconfig.Config) error {
				if _, err := c.Context(name); err != nil {
					return err
				}
				c.CurrentContext = name
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.io.Stdout, "Switched to context %q (%s).\n", name, path)
			return nil
		},
	}
}

func configSetContext(g *globals) *cobra.Command {
	var v ctlconfig.Context
	cmd := &cobra.Command{
		Use:   "set-context NAME [--server URL] [--secrets-server URL] [--ca FILE] [--cert FILE --key FILE | --token-file FILE]",
		Short: "Make a context, or change the settings given of an existing one",
		Long: `set-context makes the context NAME, or changes an existing one: only the
settings given change, and an empty value ("--ca=") removes one. File paths
are stored absolute. --token-file replaces a token written in the file. A
first context becomes the current one.`,
		Example: `  keywayctl config set-context prod --server https://policy.example.com:8081 \
      --secrets-server https://secrets.example.com:8082 --ca ca.crt --cert me.crt --key me.key
  keywayctl config set-context prod --ca=   # trust the system's CAs again`,
		Args: exactArgs("set-context NAME", 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			given := func(flag string) bool { return cmd.Flags().Changed(flag) }
			for _, u := range []struct {
				flag, value string
			}{{settingServer.flag, v.Server}, {settingSecretsServer.flag, v.SecretsServer}} {
				if given(u.flag) && u.value != "" {
					if pu, err := url.Parse(u.value); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
						return fmt.Errorf("--%s %q: want an https:// URL, such as https://127.0.0.1:8081", u.flag, u.value)
					}
				}
			}
			for _, p := range []*string{&v.CA, &v.Cert, &v.Key, &v.TokenFile} {
				if *p != "" {
					abs, err := filepath.Abs(*p)
					if err != nil {
						return err
					}
					*p = abs
				}
			}
			var added bool
			var current string
			path, err := g.updateConfig(func(c *ctlconfig.Config) error {
				x, err := c.Context(name)
				if err != nil {
					x = ctlconfig.Context{Name: name}
				}
				for flag, f := range map[string]struct{ dst, src *string }{
					settingServer.flag:        {&x.Server, &v.Server},
					settingSecretsServer.flag: {&x.SecretsServer, &v.SecretsServer},
					settingCA.flag:            {&x.CA, &v.CA},
					settingCert.flag:          {&x.Cert, &v.Cert},
					settingKey.flag:           {&x.Key, &v.Key},
					settingTokenFile.flag:     {&x.TokenFile, &v.TokenFile},
				} {
					if given(flag) {
						*f.dst = *f.src
					}
				}
				if given(settingTokenFile.flag) {
					x.Token = ""
				}
				added = c.Set(x)
				if c.CurrentContext == "" {
					c.CurrentContext = name
				}
				current = c.CurrentContext
				return nil
			})
			if err != nil {
				return err
			}
			what := "modified"
			if added {
				what = "created"
			}
			note := ""
			if current == name {
				note = "; it is the current context"
			}
			fmt.Fprintf(g.io.Stdout, "Context %q %s in %s%s.\n", name, what, path, note)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&v.Server, settingServer.flag, "", "policy service URL")
	f.StringVar(&v.SecretsServer, settingSecretsServer.flag, "", "secrets service API URL")
	f.StringVar(&v.CA, settingCA.flag, "", settingCA.usage)
	f.StringVar(&v.Cert, settingCert.flag, "", settingCert.usage)
	f.StringVar(&v.Key, settingKey.flag, "", settingKey.usage)
	f.StringVar(&v.TokenFile, settingTokenFile.flag, "", settingTokenFile.usage)
	return cmd
}

func configDeleteContext(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete-context NAME",
		Short: "Remove the context NAME",
		Args:  exactArgs("delete-context NAME", 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			wasCurrent := false
			path, err := g.updateConfig(func(c *ctlconfig.Config) error {
				wasCurrent = c.CurrentContext == name
				return c.Delete(name)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(g.io.Stdout, "Deleted context %q from %s.\n", name, path)
			if wasCurrent {
				fmt.Fprintf(g.io.Stderr, "warning: %q was the current context; keywayctl config use-context NAME selects another.\n", name)
			}
			return nil
		},
	}
}

func configView(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "view",
		Short: "Print the config file, with tokens redacted",
		Long: `view prints the config file as keywayctl reads it, with every token replaced
by ` + ctlconfig.Redacted + `: the output can be shared. (A tokenFile's path is shown;
the file is not read.)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkConfigFormat(format, false); err != nil {
				return err
			}
			c, _, err := g.loadConfig()
			if err != nil {
				return err
			}
			return writeConfigValue(g.io.Stdout, format, c.Redacted())
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "yaml", "output format: yaml or json")
	return cmd
}

func checkConfigFormat(format string, table bool) error {
	switch format {
	case "json", "yaml":
		return nil
	case "table":
		if table {
			return nil
		}
	}
	if table {
		return fmt.Errorf("-o %q: want table, json or yaml", format)
	}
	return fmt.Errorf("-o %q: want yaml or json", format)
}

func writeConfigValue(w io.Writer, format string, v any) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return enc.Close()
}

// exactArgs is cobra.ExactArgs with a message that shows the usage.
func exactArgs(usage string, n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("want keywayctl config %s (got %d arguments)", usage, len(args))
		}
		return nil
	}
}
