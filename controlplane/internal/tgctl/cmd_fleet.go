package tgctl

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
)

// Fleets and their enrollment tokens.

func fleetTable(t *tableWriter, fleets []client.Fleet) {
	t.row("ID", "NAME", "NO TPM", "SIMULATED TPM", "CERT TTL", "ATTESTATION", "CREATED")
	for _, f := range fleets {
		p := f.Policy
		t.row(f.ID, f.Name, yesNo(p.AllowNoTPM), yesNo(p.AllowSimulatedTPM), p.CertTTL, attestSummary(p.Attestation), ts(f.CreatedAt))
	}
}

// fleetDetail shows one fleet with its whole policy.
func fleetDetail(t *tableWriter, f client.Fleet) {
	p, a := f.Policy, f.Policy.Attestation
	t.kv("ID", f.ID)
	t.kv("Name", f.Name)
	t.kv("Created", ts(f.CreatedAt))
	t.kv("Devices without TPM", yesNo(p.AllowNoTPM))
	t.kv("Simulated TPMs", yesNo(p.AllowSimulatedTPM))
	t.kv("Certificate TTL", p.CertTTL)
	t.kv("Attest every", orDefault(a.Interval))
	t.kv("PCRs (SHA-256)", pcrList(a))
	for _, i := range a.PCRs {
		if r, ok := a.Rules[i]; ok && r.Mode == client.PCRGolden {
			t.kv(fmt.Sprintf("PCR %d golden", i), strings.Join(r.Allow, " "))
		}
	}
	t.kv("Trusted TPM kinds", strings.Join(a.AllowedKinds, ", "))
	t.kv("Revoke untrusted", yesNo(a.RevokeOnUntrusted))
}

func orDefault(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

// attestSummary is the attestation column of the fleet list: interval,
// PCRs (golden ones starred), and "revoke" with revoke_on_untrusted.
func attestSummary(a client.FleetAttestation) string {
	s := orDefault(a.Interval) + " pcr " + pcrList(a)
	if a.RevokeOnUntrusted {
		s += " revoke"
	}
	return s
}

// pcrList renders the selection with runs collapsed and golden PCRs
// starred: "0-6,7*,16".
func pcrList(a client.FleetAttestation) string {
	golden := func(i int) bool { r, ok := a.Rules[i]; return ok && r.Mode == client.PCRGolden }
	var parts []string
	for i := 0; i < len(a.PCRs); {
		j := i
		for j+1 < len(a.PCRs) && a.PCRs[j+1] == a.PCRs[j]+1 && !golden(a.PCRs[j]) && !golden(a.PCRs[j+1]) {
			j++
		}
		s := strconv.Itoa(a.PCRs[i])
		if j > i {
			s += "-" + strconv.Itoa(a.PCRs[j])
		}
		if golden(a.PCRs[i]) {
			s += "*"
		}
		parts = append(parts, s)
		i = j + 1
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

// policyFlags are the fleet policy's flags; only those given on the command
// line go into the request, so the others keep their value (or default).
type policyFlags struct {
	noTPM, simTPM bool
	certTTL       *durationFlag

	attestEvery  *durationFlag
	pcrs         []int
	golden       []string
	kinds        []string
	revokeOnFail bool
}

func (p *policyFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&p.noTPM, "allow-no-tpm", false, "admit devices without a TPM (marked so)")
	f.BoolVar(&p.simTPM, "allow-simulated-tpm", false, "admit devices with a simulated TPM (development only)")
	p.certTTL = newDurationFlag("")
	f.Var(p.certTTL, "cert-ttl", "lifetime of device certificates, e.g. 24h or 7d (server default 24h)")
	p.attestEvery = newDurationFlag("")
	f.Var(p.attestEvery, "attest-interval", "how often devices are challenged, 1s to 24h (\"\": the control plane's default, 1m)")
	f.IntSliceVar(&p.pcrs, "attest-pcrs", nil, "SHA-256 PCRs to quote, e.g. 0,2,4,7 (empty: the default 0-7)")
	f.StringArrayVar(&p.golden, "attest-golden", nil, "PCR=HEX[,HEX…]: the PCR must equal one of these SHA-256 digests (repeatable; replaces all rules; \"none\" clears them); other PCRs must equal the device's baseline")
	f.StringSliceVar(&p.kinds, "attest-tpm-kinds", nil, "TPM kinds that can be trusted: hardware, swtpm, simulated (empty: hardware, plus the software kinds with --allow-simulated-tpm)")
	f.BoolVar(&p.revokeOnFail, "revoke-on-untrusted", false, "revoke a device whose verdict turns untrusted (stale devices are only quarantined)")
}

// patch returns the policy fields whose flags were given, or nil.
func (p *policyFlags) patch(cmd *cobra.Command) (*client.FleetPolicyPatch, error) {
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
	var ap client.FleetAttestationPatch
	attChanged := false
	if f.Changed("attest-interval") {
		every := p.attestEvery.String()
		ap.Interval, attChanged = &every, true
	}
	if f.Changed("attest-pcrs") {
		pcrs := append([]int{}, p.pcrs...)
		ap.PCRs, attChanged = &pcrs, true
	}
	if f.Changed("attest-golden") {
		rules, err := goldenRules(p.golden)
		if err != nil {
			return nil, err
		}
		ap.Rules, attChanged = &rules, true
	}
	if f.Changed("attest-tpm-kinds") {
		kinds := append([]string{}, p.kinds...)
		ap.AllowedKinds, attChanged = &kinds, true
	}
	if f.Changed("revoke-on-untrusted") {
		ap.RevokeOnUntrusted, attChanged = &p.revokeOnFail, true
	}
	if attChanged {
		pp.Attestation, changed = &ap, true
	}
	if !changed {
		return nil, nil
	}
	return &pp, nil
}

// goldenRules parses --attest-golden values: PCR=HEX[,HEX…], or "none".
func goldenRules(vals []string) (map[int]client.PCRRule, error) {
	rules := map[int]client.PCRRule{}
	for _, v := range vals {
		if v == "none" {
			continue
		}
		idx, digests, ok := strings.Cut(v, "=")
		i, err := strconv.Atoi(idx)
		if !ok || err != nil || digests == "" {
			return nil, usagef("--attest-golden %q: want PCR=HEX[,HEX…], e.g. 7=%s", v, strings.Repeat("0", 64))
		}
		r := rules[i]
		r.Mode = client.PCRGolden
		r.Allow = append(r.Allow, strings.Split(strings.ToLower(digests), ",")...)
		rules[i] = r
	}
	return rules, nil
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
			pp, err := createPol.patch(cmd)
			if err != nil {
				return err
			}
			in := client.FleetCreate{Name: args[0], Policy: pp}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			f, err := c.CreateFleet(cmd.Context(), in)
			if err != nil {
				return err
			}
			return a.render(f, func(t *tableWriter) { fleetDetail(t, f) })
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
			return a.render(f, func(t *tableWriter) { fleetDetail(t, f) })
		},
	}
	var updatePol policyFlags
	update := &cobra.Command{
		Use:   "update FLEET [policy flags]",
		Short: "Change a fleet's policy (flags not given keep their value)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pp, err := updatePol.patch(cmd)
			if err != nil {
				return err
			}
			if pp == nil {
				return usagef("nothing to update: pass a policy flag (see --help)")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			f, err := c.UpdateFleet(cmd.Context(), args[0], client.FleetUpdate{Policy: pp})
			if err != nil {
				return err
			}
			return a.render(f, func(t *tableWriter) { fleetDetail(t, f) })
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

// enrollHint is what `token create` tells the device's operator: the
// packaged agent's way (packaging/agent/agent.yaml: the token file, then
// the service enrolls on its first start as its own user) and the
// command line for an agent run by hand. It must stay in step with
// tg-agent's enroll flags and the packaged config.
const enrollHint = `On a device with the tg-agent package:
  install -m 0640 -g tg-agent /dev/stdin /etc/tensorguard/token   # paste the token, then Ctrl-D
  # in /etc/tensorguard/agent.yaml:  server_url: %[1]s  and  ca_hash: %[2]s
  systemctl start tg-agent
Elsewhere: tg-agent enroll --server %[1]s --ca-hash %[2]s --token %[3]s
`

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
			fmt.Fprintf(a.Stdout, "\nThe token is shown only now and enrolls one device.\n"+enrollHint,
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
