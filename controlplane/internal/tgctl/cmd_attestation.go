package tgctl

import (
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
)

func (a *App) attestationCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attestation",
		Short: "Read devices' attestation verdicts",
	}
	var limit int
	history := &cobra.Command{
		Use:   "history DEVICE [--limit N]",
		Short: "List a device's attestation verdict history, newest first",
		Long: `history lists the attestation verdicts recorded for DEVICE, newest first: one entry
each time its verdict changed (state, reasons, PCR digest, time of the evidence and
of the verdict, reboot). The live verdicts of a whole fleet: 'tgctl fleet watch FLEET'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return usagef("--limit must not be negative")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			recs, err := c.ListAttestations(cmd.Context(), args[0], time.Time{}, limit)
			if err != nil {
				return err
			}
			recs = nonNil(recs)
			return a.render(recs, func(t *tableWriter) {
				t.row("VERDICT AT", "STATE", "REASONS", "PCR DIGEST", "EVIDENCE AT", "REBOOT")
				for _, r := range recs {
					t.row(ts(r.VerdictAt), r.State, orDash(recordReasons(r)), orDash(shortDigest(r.PCRDigest)),
						orDash(tsp(r.EvidenceAt)), yesNo(r.Reboot))
				}
			})
		},
	}
	history.Flags().IntVar(&limit, "limit", 0, "at most N entries (default: the server's page size, 100)")
	cmd.AddCommand(history)
	return cmd
}

func recordReasons(r client.AttestationRecord) string {
	var out string
	for i, x := range r.Reasons {
		if i > 0 {
			out += ","
		}
		out += x.Code
		if x.PCR != nil {
			out += "(pcr" + strconv.Itoa(*x.PCR) + ")"
		}
	}
	return out
}

// shortDigest abbreviates a hex digest for tables (-o json has it whole).
func shortDigest(d string) string {
	if len(d) > 16 {
		return d[:16] + "…"
	}
	return d
}
