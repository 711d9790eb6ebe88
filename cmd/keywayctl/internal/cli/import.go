package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"keyway.dev/keywayctl/internal/apigee"
)

// newImportCommand builds `import`, which converts another gateway's
// configuration into Keyway resources.
func newImportCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Convert another gateway's configuration into Keyway resources",
	}
	cmd.AddCommand(newImportApigeeCommand(g))
	return cmd
}

func newImportApigeeCommand(g *globals) *cobra.Command {
	var (
		output string
		flags  sendFlags
	)
	cmd := &cobra.Command{
		Use:   "apigee FILE",
		Short: "Import Apigee target servers (targetservers.json) as Services and tls-outbound bindings",
		Long: `Import apigee reads Apigee's target server file: an array of target servers,
or {"targetServer": [...]}, each with name, host, port, isEnabled and sSLInfo
(enabled, clientAuthEnabled, keyStore, keyAlias, trustStore,
ignoreValidationErrors, protocols, ciphers, commonName).

Each enabled target server becomes a Service; one with sSLInfo enabled also
gets a tls-outbound PolicyBinding "<name>-tls" whose certificate is
{keystore: keyStore, alias: keyAlias} and whose trustedCA is
{truststore: trustStore}: the stores stay references, resolved by the secrets
service. Notes on stderr say what was decided for you.

With -o yaml the resources are printed and nothing is sent; otherwise they
are applied, all or none, as keywayctl apply does, with the same flags:
--dry-run validates them (and probes) without storing anything, --wait
follows the rollout, --probe=false skips the live probe.

` + probeHelp,
		Example: `  keywayctl import apigee targetservers.json -o yaml > orders.yaml
  keywayctl import apigee targetservers.json --dry-run
  keywayctl import apigee targetservers.json --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "yaml" {
				return fmt.Errorf("-o %q: import prints yaml only (-o yaml)", output)
			}
			if given := flags.changed(cmd); output != "" && len(given) > 0 {
				return fmt.Errorf("-o yaml and %s: -o prints the resources and sends nothing; drop one", strings.Join(given, ", "))
			}
			opts, err := flags.options(cmd, false, g.io.Stderr)
			if err != nil {
				return err
			}
			data, err := apigee.ReadFile(args[0])
			if err != nil {
				return err
			}
			r, err := apigee.Convert(args[0], data)
			if err != nil {
				// Each problem on its own line, at its line and
				// column, then what it means.
				return errors.Join(err, fmt.Errorf("nothing imported from %s: %s", args[0], plural(max(countJoined(err), 1), "problem")))
			}
			for _, n := range r.Notes {
				fmt.Fprintf(g.io.Stderr, "note: %s\n", n)
			}
			if output == "yaml" {
				_, err := g.io.Stdout.Write(r.YAML)
				return err
			}
			// What the policy service reports is shown at the
			// target server file's lines and names, not the YAML's.
			docs, err := r.Manifest()
			if err != nil {
				return err
			}
			return g.send(cmd, docs, opts)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "print the resources instead of applying them: yaml")
	flags.register(cmd, false)
	return cmd
}
