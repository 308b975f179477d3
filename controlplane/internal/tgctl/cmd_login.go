package tgctl

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/audit"
)

// group returns a command that only holds subcommands: without one it
// prints its help, with an unknown one it is a usage error.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
	c.AddCommand(subs...)
	return c
}

func (a *App) loginCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "login --server URL --api-key KEY [--ca-file F | --ca-hash H] [--context NAME]",
		Short: "Check a server and API key, and save them as a context",
		Long: `login checks the server and API key with whoami and saves them, with the TLS trust
settings, as a named context (default "default") in the context file, which it makes
the current context. The file is written with mode 0600.

--api-key - reads the key from the first line of standard input, which keeps it out
of the process list and the shell history. Without --api-key, TG_API_KEY is used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.global.apiKey == "-" {
				line, err := bufio.NewReader(a.Stdin).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("read the API key from standard input: %w", err)
				}
				a.global.apiKey = strings.TrimSpace(line)
			}
			s, err := a.resolveFor(true)
			if err != nil {
				return err
			}
			name, old := s.ContextName, s.Context
			if s.Server == "" {
				return usagef("login needs --server (or TG_BASE_URL)")
			}
			if s.APIKey == "" {
				return usagef("login needs --api-key (or TG_API_KEY)")
			}
			c, err := a.newClient(s)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			who, err := c.Whoami(ctx)
			if err != nil {
				return loginHint(err, s)
			}
			if s.CAHash != "" {
				if err := checkCAHash(ctx, c, s.CAHash); err != nil {
					return err
				}
			}
			entry := Context{Name: name, Server: c.BaseURL(), APIKey: s.APIKey, CAHash: s.CAHash, Tenant: who.Tenant}
			if s.CAFile != "" {
				abs, err := filepath.Abs(s.CAFile)
				if err != nil {
					return fmt.Errorf("CA file: %w", err)
				}
				entry.CAFile = abs
			}
			if old != nil && sameServer(old.Server, entry.Server) && old.Tenant == who.Tenant {
				entry.AuditAnchor = old.AuditAnchor // the same chain: keep its anchor
			}
			s.file.upsert(entry)
			s.file.CurrentContext = name
			if err := saveConfig(s.path, s.file); err != nil {
				return err
			}
			out := struct {
				Context    string `json:"context"`
				Server     string `json:"server"`
				Tenant     string `json:"tenant"`
				OperatorID string `json:"operator_id"`
				KeyID      string `json:"key_id"`
				Role       string `json:"role"`
				File       string `json:"file"`
			}{name, entry.Server, who.Tenant, who.OperatorID, who.KeyID, who.Role, s.path}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, out)
			}
			fmt.Fprintf(a.Stdout, "Logged in to %s as %s (role %s) of tenant %s.\nContext %q saved in %s.\n",
				out.Server, orDash(who.KeyID), who.Role, who.Tenant, name, s.path)
			return nil
		},
	}
}

// loginHint adds what to do to a failed login's error.
func loginHint(err error, s *Settings) error {
	var uae x509.UnknownAuthorityError
	if errors.As(err, &uae) && s.CAFile == "" && s.CAHash == "" {
		return fmt.Errorf("%w (the server's CA is not trusted: pass --ca-hash sha256:… as 'tgctl ca show' or 'tg-controlplane init' prints it, or --ca-file)", err)
	}
	return err
}

// checkCAHash confirms the server reports the CA hash the connection was
// pinned to (it cannot differ unless the server is misconfigured).
func checkCAHash(ctx context.Context, c *client.Client, want string) error {
	ca, err := c.CA(ctx)
	if err != nil {
		return err
	}
	if !strings.EqualFold(ca.CAHash, strings.TrimSpace(want)) {
		return fmt.Errorf("the server reports CA hash %s, not the pinned %s", ca.CAHash, want)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *App) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout [--context NAME]",
		Short: "Remove the API key from a context (server, CA and audit anchor stay)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cf, path, err := a.loadConfig()
			if err != nil {
				return err
			}
			name := a.global.context
			if name == "" {
				name = cf.CurrentContext
			}
			ctx := cf.context(name)
			if ctx == nil {
				return errors.New("no context to log out of")
			}
			ctx.APIKey = ""
			if err := saveConfig(path, cf); err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, map[string]string{"context": name, "file": path})
			}
			fmt.Fprintf(a.Stdout, "Logged out: the API key of context %q is removed from %s.\n", name, path)
			return nil
		},
	}
}

func (a *App) contextCmd() *cobra.Command {
	list := &cobra.Command{
		Use:   "list",
		Short: "List the contexts of the context file (never their keys)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cf, _, err := a.loadConfig()
			if err != nil {
				return err
			}
			type view struct {
				Name        string `json:"name"`
				Current     bool   `json:"current"`
				Server      string `json:"server"`
				Tenant      string `json:"tenant,omitempty"`
				LoggedIn    bool   `json:"logged_in"`
				CAFile      string `json:"ca_file,omitempty"`
				CAHash      string `json:"ca_hash,omitempty"`
				AuditAnchor string `json:"audit_anchor,omitempty"`
			}
			views := []view{}
			for _, c := range cf.Contexts {
				views = append(views, view{c.Name, c.Name == cf.CurrentContext, c.Server, c.Tenant, c.APIKey != "", c.CAFile, c.CAHash, c.AuditAnchor})
			}
			return a.render(views, func(t *tableWriter) {
				t.row("CURRENT", "NAME", "SERVER", "TENANT", "LOGGED IN", "AUDIT ANCHOR")
				for _, v := range views {
					cur := ""
					if v.Current {
						cur = "*"
					}
					anchor := ""
					if cp, err := audit.ParseCheckpoint(v.AuditAnchor); err == nil {
						anchor = fmt.Sprintf("seq %d", cp.Seq)
					}
					t.row(cur, v.Name, v.Server, v.Tenant, yesNo(v.LoggedIn), anchor)
				}
			})
		},
	}
	use := &cobra.Command{
		Use:   "use NAME",
		Short: "Make NAME the current context",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cf, path, err := a.loadConfig()
			if err != nil {
				return err
			}
			if cf.context(args[0]) == nil {
				return fmt.Errorf("no context %q in %s", args[0], path)
			}
			cf.CurrentContext = args[0]
			if err := saveConfig(path, cf); err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, map[string]string{"current_context": args[0]})
			}
			fmt.Fprintf(a.Stdout, "Current context is %q.\n", args[0])
			return nil
		},
	}
	return group("context", "List and switch the contexts 'tgctl login' saved", list, use)
}

func (a *App) whoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the tenant, operator, key and role of the API key in use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			who, err := c.Whoami(cmd.Context())
			if err != nil {
				return err
			}
			return a.render(who, func(t *tableWriter) {
				t.kv("Server", c.BaseURL())
				t.kv("Tenant", who.Tenant)
				t.kv("Operator", who.OperatorID)
				t.kv("Key", who.KeyID)
				t.kv("Role", who.Role)
			})
		},
	}
}

func (a *App) caCmd() *cobra.Command {
	var pemOut bool
	show := &cobra.Command{
		Use:   "show [--pem]",
		Short: "Show the platform and tenant CAs and the CA hash agents pin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ca, err := c.CA(cmd.Context())
			if err != nil {
				return err
			}
			if pemOut && !a.jsonOutput() {
				_, err := fmt.Fprint(a.Stdout, ca.PlatformCAPEM)
				return err
			}
			return a.render(ca, func(t *tableWriter) {
				t.kv("CA hash", ca.CAHash)
				t.kv("Platform CA", describeCert(ca.PlatformCAPEM))
				t.kv("Tenant CA", describeCert(ca.TenantCAPEM))
			})
		},
	}
	show.Flags().BoolVar(&pemOut, "pem", false, "print the platform CA certificate as PEM (for --ca-file)")
	return group("ca", "Show the control plane's certificate authorities", show)
}

// describeCert summarises the first certificate of a PEM bundle.
func describeCert(p string) string {
	blk, _ := pem.Decode([]byte(p))
	if blk == nil {
		return ""
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "unparsable certificate"
	}
	return fmt.Sprintf("%s (%s, until %s)", cert.Subject, client.CAHash(cert), ts(cert.NotAfter))
}
