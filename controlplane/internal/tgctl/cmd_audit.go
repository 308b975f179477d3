package tgctl

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/audit"
)

func (a *App) auditCmd() *cobra.Command {
	var after uint64
	var limit int
	list := &cobra.Command{
		Use:   "list [--after N] [--limit M]",
		Short: "List audit entries after seq N (one page)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usagef("--limit must not be negative")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			page, err := c.ListAudit(cmd.Context(), after, limit)
			if err != nil {
				return err
			}
			page.Entries = nonNil(page.Entries)
			return a.render(page, func(t *tableWriter) {
				t.row("SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "REQUEST")
				for _, e := range page.Entries {
					t.row(fmt.Sprint(e.Seq), e.Time.UTC().Format("2006-01-02T15:04:05.000000Z"), e.Actor, e.Action, e.Target, e.RequestID)
				}
			})
		},
	}
	list.Flags().Uint64Var(&after, "after", 0, "list entries with seq greater than N")
	list.Flags().IntVar(&limit, "limit", 0, "at most M entries (default: the server's page size)")

	var anchorFlag string
	var pageSize int
	verify := &cobra.Command{
		Use:   "verify [--anchor TENANT@SEQ:HASH]",
		Short: "Fetch the whole audit chain and verify it here",
		Long: `verify fetches every audit entry of the tenant, page by page, and checks the hash chain
on this machine: an edited, deleted, reordered or replayed entry fails with the first bad seq.

The hash chain alone cannot show that the newest entries were deleted or that the chain
was rewritten consistently: that needs an anchor, a checkpoint kept apart from the server.
verify prints the head checkpoint (tenant@seq:hash) and stores it in the current context
of the context file; the next verify in that context must reach it with the same hash.
--anchor gives a checkpoint explicitly (and is then not stored over).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pageSize < 0 {
				return usagef("--page-size must not be negative")
			}
			var explicit *audit.Checkpoint
			if anchorFlag != "" {
				cp, err := audit.ParseCheckpoint(anchorFlag)
				if err != nil {
					return usagef("--anchor: %v", err)
				}
				explicit = &cp
			}
			c, s, err := a.client()
			if err != nil {
				return err
			}
			return a.verifyAudit(cmd, c, s, explicit, pageSize)
		},
	}
	verify.Flags().StringVar(&anchorFlag, "anchor", "", "verify against this checkpoint instead of the context's stored one")
	verify.Flags().IntVar(&pageSize, "page-size", 1000, "entries per request")
	return group("audit", "Read and verify the tenant's audit chain", list, verify)
}

// verifyResult is audit verify's JSON output.
type verifyResult struct {
	OK       bool   `json:"ok"`
	Tenant   string `json:"tenant"`
	Entries  uint64 `json:"entries"`
	Head     string `json:"head,omitempty"`
	Anchor   string `json:"anchor,omitempty"`
	Anchored bool   `json:"anchored"`
	// StoredIn is the context the head was stored in as the next anchor.
	StoredIn string `json:"stored_in,omitempty"`
	// On failure: the first bad seq, the kind of failure and the reason.
	Seq    uint64 `json:"seq,omitempty"`
	Kind   string `json:"kind,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (a *App) verifyAudit(cmd *cobra.Command, c *client.Client, s *Settings, explicit *audit.Checkpoint, pageSize int) error {
	ctx := cmd.Context()
	who, err := c.Whoami(ctx)
	if err != nil {
		return err
	}
	tenant := who.Tenant
	// The context's anchor applies when the context's own server and
	// tenant are being verified; so does storing the new head there.
	store := explicit == nil && s.Context != nil && s.InContext &&
		(s.Context.Tenant == "" || s.Context.Tenant == tenant)
	anchor := explicit
	if store && s.Context.AuditAnchor != "" {
		cp, err := audit.ParseCheckpoint(s.Context.AuditAnchor)
		if err != nil {
			return fmt.Errorf("context %q: stored audit anchor: %w", s.ContextName, err)
		}
		if cp.Tenant != tenant {
			return fmt.Errorf("context %q: the stored audit anchor is for tenant %q, the API key is of tenant %q", s.ContextName, cp.Tenant, tenant)
		}
		anchor = &cp
	}
	if anchor != nil && anchor.Tenant != tenant {
		return fmt.Errorf("--anchor is for tenant %q, the API key is of tenant %q", anchor.Tenant, tenant)
	}
	v, err := audit.NewVerifier(audit.VerifyOptions{Tenant: tenant, Anchor: anchor})
	if err != nil {
		return err
	}
	walkErr := c.WalkAudit(ctx, 0, pageSize, v.Add)
	var ve *audit.VerifyError
	if walkErr != nil && !errors.As(walkErr, &ve) {
		return fmt.Errorf("fetch audit entries: %w", walkErr)
	}
	rep, err := v.Finish()
	res := verifyResult{Tenant: tenant, Entries: rep.Entries, Anchored: rep.Anchored}
	if anchor != nil {
		res.Anchor = anchor.String()
	}
	if err != nil {
		if errors.As(err, &ve) {
			res.Seq, res.Kind, res.Reason = ve.Seq, ve.Kind.Error(), ve.Reason
		}
		if a.jsonOutput() {
			if werr := writeJSON(a.Stdout, res); werr != nil {
				return werr
			}
		}
		return err
	}
	res.OK = true
	if rep.Head.Seq > 0 {
		res.Head = rep.Head.String()
	}
	if store && rep.Head.Seq > 0 {
		s.Context.AuditAnchor = rep.Head.String()
		if s.Context.Tenant == "" {
			s.Context.Tenant = tenant
		}
		if err := saveConfig(s.path, s.file); err != nil {
			return fmt.Errorf("the chain verified, but storing its head as the anchor failed: %w", err)
		}
		res.StoredIn = s.ContextName
	}
	if a.jsonOutput() {
		return writeJSON(a.Stdout, res)
	}
	fmt.Fprintf(a.Stdout, "Audit chain of tenant %s verified: %d entries.\n", tenant, rep.Entries)
	t := newTable(a.Stdout)
	t.kv("Head", orDash(res.Head))
	switch {
	case anchor == nil:
		t.kv("Anchor", "none (deleting the newest entries cannot be detected without one)")
	default:
		t.kv("Anchor", anchor.String()+" (matched)")
	}
	if err := t.flush(); err != nil {
		return err
	}
	switch {
	case res.StoredIn != "":
		fmt.Fprintf(a.Stdout, "Stored the head as the anchor of context %q.\n", res.StoredIn)
	case explicit == nil && rep.Head.Seq > 0:
		fmt.Fprintln(a.Stdout, "No context to store the head in: keep it and pass it as --anchor next time.")
	}
	return nil
}
