package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"keyway.dev/internal/version"
)

// versionOutput is `keywayctl version -o json`.
type versionOutput struct {
	Binary string `json:"binary"`
	version.Info
}

// newVersionCommand prints keywayctl's own version and commit; it asks no
// service anything (the services answer --version themselves).
func newVersionCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print keywayctl's version and the commit it was built from",
		Example: `  keywayctl version
  keywayctl version -o json
  keywayctl --version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			switch format {
			case "text":
				_, err := fmt.Fprintln(cmd.OutOrStdout(), info.String("keywayctl"))
				return err
			case "json":
				b, err := json.MarshalIndent(versionOutput{Binary: "keywayctl", Info: info}, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", b)
				return err
			}
			return fmt.Errorf("-o %q: want text or json", format)
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "text", "output format: text or json")
	return cmd
}
