package tgctl

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
)

// Fleets and their enrollment tokens.

func fleetTable(t *tableWriter, fleets []client.Fleet) {
	t.row("ID", "NAME", "NO TPM", "SIMULATED TPM", "CERT TTL", "CREATED")
	for _, f := range fleets {
		p := f.Policy
		t.row(f.ID, f.Name, yesNo(p.AllowNoTPM), yesNo(p.AllowSimulatedTPM), p.CertTTL, ts(f.CreatedAt))
	}
}

// policyFlags are the fleet policy's flags; only those given on the command
// line go into the request, so the others keep their value (or default).
type policyFlags struct {
	noTPM, simTPM bool
	certTTL       *durationFlag
}

func (p *policyFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&p.noTPM, "allow-no-tpm", false, "admit devices without a TPM (marked so)")
	f.BoolVar(&p.simTPM, "allow-simulated-tpm", false, "admit devices with a simulated TPM (development only)")
	p.certTTL = newDurationFlag("")
	f.Var(p.certTTL, "cert-ttl", "lifetime of device certificates, e.g. 24h or 7d (server default 24h)")
}

// patch returns the policy fields whose flags were given, or nil.
func (p *policyFlags) patch(cmd *cobra.Command) *client.FleetPolicyPatch {
	f := cmd.Flags()
	var pp client.FleetPolicyPatch
	changed := false
	if f.Changed("allow-no-tpm") {
		pp.AllowNoTPM, changed = &p.noTPM, true
	}
	if f.Changed("allow-simulated-tpm") {
		pp.AllowSimulatedTPM, changed = &p.simTPM, true
	}
	if f.Changed("cert-ttl") {
		ttl := p.certTTL.String()
		pp.CertTTL, changed = &ttl, true
	}
	if !changed {
		return nil
	}
	return &pp
}

func (a *App) fleetCmd() *cobra.Command {
	list := &cobra.Command{
		Use:   "list",
		Short: "List fleets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			fleets, err := c.ListFleets(cmd.Context())
			if err != nil {
				return err
			}
			fleets = nonNil(fleets)
			return a.render(fleets, func(t *tableWriter) { fleetTable(t, fleets) })
		},
	}
	var createPol policyFlags
	create := &cobra.Command{
		Use:   "create NAME [--allow-no-tpm] [--allow-simulated-tpm] [--cert-ttl 24h]",
		Short: "Create a fleet",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := client.FleetCreate{Name: args[0], Policy: createPol.patch(cmd)}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			f, err := c.CreateFleet(cmd.Context(), in)
			if err != nil {
				return err
			}
			return a.render(f, func(t *tableWriter) { fleetTable(t, []client.Fleet{f}) })
		},
	}
	createPol.register(create)
	get := &cobra.Command{
		Use:   "get FLEET",
		Short: "Show a fleet (by id or name)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			f, err := c.GetFleet(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.render(f, func(t *tableWriter) { fleetTable(t, []client.Fleet{f}) })
		},
	}
	var updatePol policyFlags
	update := &cobra.Command{
		Use:   "update FLEET [policy flags]",
		Short: "Change a fleet's policy (flags not given keep their value)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pp := updatePol.patch(cmd)
			if pp == nil {
				return usagef("nothing to update: pass --allow-no-tpm, --allow-simulated-tpm or --cert-ttl")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			f, err := c.UpdateFleet(cmd.Context(), args[0], client.FleetUpdate{Policy: pp})
			if err != nil {
				return err
			}
			return a.render(f, func(t *tableWriter) { fleetTable(t, []client.Fleet{f}) })
		},
	}
	updatePol.register(update)
	del := &cobra.Command{
		Use:   "delete FLEET",
		Short: "Delete a fleet",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteFleet(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.done("fleet", args[0], "deleted")
		},
	}
	return group("fleet", "Manage fleets", list, create, get, update, del, a.fleetWatchCmd())
}

// enrollHint is the agent command line `token create` prints. It must stay
// in step with tg-agent's enroll flags.
const enrollHint = "sudo tg-agent enroll --server %s --ca-hash %s --token %s"

func tokenTable(t *tableWriter, toks []client.EnrollmentToken) {
	t.row("ID", "FLEET", "STATE", "CREATED BY", "CREATED", "EXPIRES", "USED", "DEVICE")
	for _, k := range toks {
		dev := ""
		if k.UsedByDevice != nil {
			dev = *k.UsedByDevice
		}
		t.row(k.ID, k.FleetID, k.State, k.CreatedBy, ts(k.CreatedAt), ts(k.ExpiresAt), tsp(k.UsedAt), dev)
	}
}

func (a *App) tokenCmd() *cobra.Command {
	ttl := newDurationFlag("")
	create := &cobra.Command{
		Use:   "create FLEET [--ttl 1h]",
		Short: "Create a one-time enrollment token for a fleet",
		Long: `create makes a one-time enrollment token for FLEET (id or name) and prints it, once,
with its expiry, the CA hash the agent pins, and the tg-agent command that uses them.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			tok, err := c.CreateToken(cmd.Context(), args[0], ttl.String())
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, tok)
			}
			t := newTable(a.Stdout)
			t.kv("Token", tok.Token)
			t.kv("ID", tok.ID)
			t.kv("Fleet", tok.FleetID)
			t.kv("Expires", ts(tok.ExpiresAt))
			t.kv("CA hash", tok.CAHash)
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "\nThe token is shown only now and enrolls one device. On the device run:\n  "+enrollHint+"\n",
				c.BaseURL(), orDash(tok.CAHash), tok.Token)
			return nil
		},
	}
	create.Flags().Var(ttl, "ttl", "token lifetime, e.g. 1h or 2d (server default 1h, at most 7d)")
	list := &cobra.Command{
		Use:   "list FLEET",
		Short: "List a fleet's enrollment tokens (never the secrets)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			toks, err := c.ListTokens(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			toks = nonNil(toks)
			return a.render(toks, func(t *tableWriter) { tokenTable(t, toks) })
		},
	}
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an enrollment token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.done("token", args[0], "deleted")
		},
	}
	return group("token", "Manage enrollment tokens", create, list, del)
}
