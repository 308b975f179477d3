package tgctl

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/policybundle"
)

func policyTable(t *tableWriter, r client.PolicyRevision) {
	t.row("FLEET", "REVISION", "SHA256", "SIZE", "KEY", "CREATED BY", "CREATED")
	t.row(r.FleetID, strconv.FormatInt(r.Revision, 10), r.SHA256, strconv.FormatInt(r.Size, 10), r.KeyID, r.CreatedBy, ts(r.CreatedAt))
}

func (a *App) policyCmd() *cobra.Command {
	var fleet string
	push := &cobra.Command{
		Use:   "push --fleet FLEET DIR",
		Short: "Build the policy bundle of DIR (.rego modules, data.json/data.yaml) and push it as the fleet's next revision",
		Long: "Reads every .rego file (except *_test.rego) and every data.json, data.yaml and data.yml under DIR, " +
			"compiles them here (a broken policy is named with file and line before anything is sent), and pushes them. " +
			"The control plane compiles them again, signs the bundle with the tenant's policy key as the fleet's next " +
			"revision, and tells the fleet's devices, which verify it and refuse older revisions. See docs/policy.md.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if fleet == "" {
				return usagef("--fleet FLEET is required")
			}
			files, err := policybundle.ReadDir(args[0])
			if err != nil {
				return err
			}
			if _, err := policybundle.Build(files); err != nil {
				var be *policybundle.BuildError
				if errors.As(err, &be) {
					lines := make([]string, len(be.Problems))
					for i, p := range be.Problems {
						lines[i] = "  " + p.String()
					}
					return fmt.Errorf("the policy in %s does not build:\n%s", args[0], strings.Join(lines, "\n"))
				}
				return err
			}
			in := client.PolicyPush{Files: map[string]string{}}
			for name, b := range files {
				in.Files[name] = string(b)
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			out, err := c.PushPolicy(cmd.Context(), fleet, in)
			if err != nil {
				return err
			}
			return a.render(out, func(t *tableWriter) { policyTable(t, out.PolicyRevision) })
		},
	}
	push.Flags().StringVar(&fleet, "fleet", "", "fleet id or name")
	show := &cobra.Command{
		Use:   "show --fleet FLEET",
		Short: "Show the fleet's current policy revision",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fleet == "" {
				return usagef("--fleet FLEET is required")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			r, err := c.GetPolicy(cmd.Context(), fleet)
			if err != nil {
				return err
			}
			return a.render(r, func(t *tableWriter) { policyTable(t, r) })
		},
	}
	show.Flags().StringVar(&fleet, "fleet", "", "fleet id or name")
	root := &cobra.Command{
		Use:   "policy",
		Short: "Fleet policy bundles: OPA/Rego that decides every install on the devices",
	}
	root.AddCommand(push, show)
	return root
}
