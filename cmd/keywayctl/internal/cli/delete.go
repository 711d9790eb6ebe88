package cli

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

func newDeleteCommand(g *globals) *cobra.Command {
	var revision uint64
	cmd := &cobra.Command{
		Use:   "delete KIND NAME",
		Short: "Delete a stored resource",
		Long: `Delete removes one resource. KIND is ` + kindHelp + `;
KIND/NAME works too.
A Service that routes or bindings still name cannot be deleted: delete or
retarget those first.`,
		Example: `  keywayctl delete policybinding orders-mtls
  keywayctl delete svc/orders --revision 12`,
		Args: kindArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			k, name, err := parseTarget(args, true)
			if err != nil {
				return err
			}
			client, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.withTimeout(cmd.Context())
			defer cancel()
			ref := k.Short() + "/" + name
			resp, err := client.Delete(ctx, connect.NewRequest(&policyv1.DeleteRequest{
				Kind: k.Name, Name: name, ExpectedRevision: revision,
			}))
			if err != nil {
				msg := ""
				if ce := new(connect.Error); errors.As(err, &ce) {
					msg = ce.Message()
				}
				switch connect.CodeOf(err) {
				case connect.CodeNotFound:
					return fmt.Errorf("%s not found", ref)
				case connect.CodeFailedPrecondition:
					return fmt.Errorf("cannot delete %s: %s", ref, msg)
				case connect.CodeAborted:
					return fmt.Errorf("cannot delete %s: %s; it changed since revision %d (get it again)", ref, msg, revision)
				}
				return g.rpcError(err, "deleting "+ref)
			}
			fmt.Fprintf(g.io.Stdout, "%s deleted (revision %d)\n", ref, resp.Msg.GetRevision())
			return nil
		},
	}
	cmd.Flags().Uint64Var(&revision, "revision", 0, "delete only if the stored revision is this one")
	return cmd
}
