package tgctl

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
)

// Operators and API keys: the admin routes.

func checkRole(role string) error {
	switch role {
	case client.RoleViewer, client.RoleOperator, client.RoleAdmin:
		return nil
	case "":
		return usagef("--role is required (viewer, operator or admin)")
	}
	return usagef("--role %q: want viewer, operator or admin", role)
}

func operatorTable(t *tableWriter, ops []client.Operator) {
	t.row("ID", "NAME", "ROLE", "DISABLED", "CREATED")
	for _, o := range ops {
		t.row(o.ID, o.Name, o.Role, yesNo(o.Disabled), ts(o.CreatedAt))
	}
}

func (a *App) operatorCmd() *cobra.Command {
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's operators",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ops, err := c.ListOperators(cmd.Context())
			if err != nil {
				return err
			}
			ops = nonNil(ops)
			return a.render(ops, func(t *tableWriter) { operatorTable(t, ops) })
		},
	}
	var role string
	create := &cobra.Command{
		Use:   "create NAME --role viewer|operator|admin",
		Short: "Create an operator",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRole(role); err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.CreateOperator(cmd.Context(), client.OperatorCreate{Name: args[0], Role: role})
			if err != nil {
				return err
			}
			return a.render(op, func(t *tableWriter) { operatorTable(t, []client.Operator{op}) })
		},
	}
	create.Flags().StringVar(&role, "role", "", "viewer, operator or admin")
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show an operator",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.GetOperator(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.render(op, func(t *tableWriter) { operatorTable(t, []client.Operator{op}) })
		},
	}
	var newRole string
	var disabled bool
	update := &cobra.Command{
		Use:   "update ID [--role R] [--disabled=true|false]",
		Short: "Change an operator's role or disable it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in client.OperatorUpdate
			if cmd.Flags().Changed("role") {
				if err := checkRole(newRole); err != nil {
					return err
				}
				in.Role = &newRole
			}
			if cmd.Flags().Changed("disabled") {
				in.Disabled = &disabled
			}
			if in.Role == nil && in.Disabled == nil {
				return usagef("nothing to update: pass --role or --disabled")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.UpdateOperator(cmd.Context(), args[0], in)
			if err != nil {
				return err
			}
			return a.render(op, func(t *tableWriter) { operatorTable(t, []client.Operator{op}) })
		},
	}
	update.Flags().StringVar(&newRole, "role", "", "new role: viewer, operator or admin")
	update.Flags().BoolVar(&disabled, "disabled", false, "disable (true) or enable (false) the operator")
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an operator",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteOperator(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.done("operator", args[0], "deleted")
		},
	}
	return group("operator", "Manage the tenant's operators (admin)", list, create, get, update, del)
}

// done reports a mutation without a response body.
func (a *App) done(kind, id, what string) error {
	if a.jsonOutput() {
		return writeJSON(a.Stdout, map[string]string{"id": id, "result": what})
	}
	_, err := fmt.Fprintf(a.Stdout, "%s %s %s\n", kind, id, what)
	return err
}

func apiKeyTable(t *tableWriter, keys []client.APIKey) {
	t.row("ID", "NAME", "ROLE", "OPERATOR", "PREFIX", "CREATED", "LAST USED", "EXPIRES", "REVOKED")
	for _, k := range keys {
		t.row(k.ID, k.Name, k.Role, k.OperatorID, k.Prefix, ts(k.CreatedAt), tsp(k.LastUsedAt), tsp(k.ExpiresAt), tsp(k.RevokedAt))
	}
}

func (a *App) apikeyCmd() *cobra.Command {
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's API keys (never the secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			keys, err := c.ListAPIKeys(cmd.Context())
			if err != nil {
				return err
			}
			keys = nonNil(keys)
			return a.render(keys, func(t *tableWriter) { apiKeyTable(t, keys) })
		},
	}
	var in client.APIKeyCreate
	expiresIn := newDurationFlag("")
	create := &cobra.Command{
		Use:   "create --name N --role R [--operator ID] [--expires-in 720h]",
		Short: "Create an API key; the key is printed this once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in.Name == "" {
				return usagef("--name is required")
			}
			if err := checkRole(in.Role); err != nil {
				return err
			}
			in.ExpiresIn = expiresIn.String()
			c, _, err := a.client()
			if err != nil {
				return err
			}
			k, err := c.CreateAPIKey(cmd.Context(), in)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, k)
			}
			t := newTable(a.Stdout)
			apiKeyTable(t, []client.APIKey{k.APIKey})
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "\nAPI key (shown only now, store it safely):\n%s\n", k.Key)
			return nil
		},
	}
	create.Flags().StringVar(&in.Name, "name", "", "a name for the key")
	create.Flags().StringVar(&in.Role, "role", "", "viewer, operator or admin")
	create.Flags().StringVar(&in.OperatorID, "operator", "", "the operator the key acts for (default: the caller's)")
	create.Flags().Var(expiresIn, "expires-in", "lifetime, e.g. 720h or 90d (default: no expiry)")
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.RevokeAPIKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.done("API key", args[0], "revoked")
		},
	}
	return group("apikey", "Manage the tenant's API keys (admin)", list, create, revoke)
}
