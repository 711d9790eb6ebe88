package cli

import (
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"keyway.dev/keywayctl/internal/output"
	"keyway.dev/keywayctl/internal/resource"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// kindHelp lists what KIND may be, for usage and errors.
const kindHelp = "service (svc), route (rt) or policybinding (binding, pb); plurals too"

func newGetCommand(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show stored resources",
		Long: `Get shows one stored resource, or lists the resources of a kind; "get all"
lists every kind. KIND is ` + kindHelp + `, case-insensitive;
KIND/NAME works too.

Output formats (-o):
  table  columns per kind; AGE is the time since the stored revision was written
  yaml   one document per resource, in the shape apply -f reads back
  json   one resource as an object; a list (no NAME, or "all") always as
         {"items": [...]}, each item in the shape apply -f reads
  name   kind/name, one a line

A private key applied inline in a binding or a Listener is moved into the
secrets service at apply (keystore keyway-inline): get shows the reference
{keystore, alias} in its place, and with -o table or yaml a note on stderr
says where each key went.`,
		Example: `  keywayctl get bindings
  keywayctl get svc orders -o yaml > orders.yaml
  keywayctl get policybinding/orders-mtls -o json
  keywayctl get all`,
		Args: kindArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := output.ParseFormat(format)
			if err != nil {
				return err
			}
			return g.get(cmd, args, f)
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "table", "output format: table, yaml, json or name")
	return cmd
}

func (g *globals) get(cmd *cobra.Command, args []string, format output.Format) error {
	all := len(args) == 1 && strings.EqualFold(args[0], "all")
	var (
		k    resource.Kind
		name string
		err  error
	)
	if !all {
		if k, name, err = parseTarget(args, false); err != nil {
			return err
		}
	}
	client, err := g.client()
	if err != nil {
		return err
	}
	ctx, cancel := g.withTimeout(cmd.Context())
	defer cancel()
	opts := output.Options{Format: format, Now: g.io.Now()}

	if name != "" {
		resp, err := client.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: k.Name, Name: name}))
		if err != nil {
			ref := k.Short() + "/" + name
			if connect.CodeOf(err) == connect.CodeNotFound {
				return fmt.Errorf("%s not found ('keywayctl get %ss' lists them)", ref, k.Short())
			}
			return g.rpcError(err, "getting "+ref)
		}
		rs := []*policyv1.Resource{resp.Msg.GetResource()}
		if err := output.Write(g.io.Stdout, rs, opts); err != nil {
			return err
		}
		if format == output.Table || format == output.YAML {
			movedKeyNotes(g.io.Stderr, rs)
		}
		return nil
	}

	req := &policyv1.ListRequest{}
	what := "listing all resources"
	if !all {
		req.Kind = k.Name
		what = "listing " + k.Short() + "s"
	}
	resp, err := client.List(ctx, connect.NewRequest(req))
	if err != nil {
		return g.rpcError(err, what)
	}
	rs := resp.Msg.GetResources()
	opts.List = true
	if len(rs) == 0 && format == output.Table {
		fmt.Fprintln(g.io.Stderr, "No resources found.")
		return nil
	}
	if err := output.Write(g.io.Stdout, rs, opts); err != nil {
		return err
	}
	if format == output.Table || format == output.YAML {
		movedKeyNotes(g.io.Stderr, rs)
	}
	return nil
}

// parseTarget reads "KIND", "KIND NAME" or "KIND/NAME". With needName, a
// name is required.
func parseTarget(args []string, needName bool) (resource.Kind, string, error) {
	kind, name := args[0], ""
	if k, n, ok := strings.Cut(kind, "/"); ok {
		if len(args) > 1 {
			return resource.Kind{}, "", fmt.Errorf("give either KIND/NAME or KIND NAME, not both")
		}
		kind, name = k, n
	} else if len(args) > 1 {
		name = args[1]
	}
	k, err := resource.Parse(kind)
	if err != nil {
		return resource.Kind{}, "", err
	}
	if needName && name == "" {
		return resource.Kind{}, "", fmt.Errorf("missing NAME: give KIND NAME or KIND/NAME ('keywayctl get %ss' lists the names)", k.Short())
	}
	return k, name, nil
}

// kindArgs checks for KIND and at most a NAME, saying what KIND may be.
func kindArgs(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return fmt.Errorf("missing KIND: %s\nSee '%s --help' for usage.", kindHelp, cmd.CommandPath())
	case len(args) > 2:
		return fmt.Errorf("too many arguments %q: want KIND [NAME]\nSee '%s --help' for usage.", args, cmd.CommandPath())
	}
	return nil
}
