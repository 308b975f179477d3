package tgctl

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
)

func deviceTable(t *tableWriter, devs []client.Device) {
	t.row("ID", "NAME", "FLEET", "STATUS", "ONLINE", "QUARANTINED", "TPM", "KEM KEY", "LAST SEEN", "CERT EXPIRES", "LABELS")
	for _, d := range devs {
		t.row(d.ID, d.Name, d.FleetID, d.Status, yesNo(d.Online), yesNo(d.Quarantined), d.TPMKind, yesNo(d.KEMKey), tsp(d.LastSeenAt), tsp(d.CertNotAfter), labels(d.Labels))
	}
}

func deviceDetail(t *tableWriter, d client.Device) {
	t.kv("ID", d.ID)
	t.kv("Name", d.Name)
	t.kv("Fleet", d.FleetID)
	t.kv("Status", d.Status)
	t.kv("Online", yesNo(d.Online))
	t.kv("Quarantined", yesNo(d.Quarantined))
	t.kv("Last seen", tsp(d.LastSeenAt))
	t.kv("Device type", d.DeviceType)
	t.kv("TPM", d.TPMKind)
	// Without a KEM key the device can receive no package key grants.
	t.kv("KEM key", yesNo(d.KEMKey))
	t.kv("EK fingerprint", d.EKFingerprint)
	t.kv("Cert serial", d.CertSerial)
	t.kv("Cert expires", tsp(d.CertNotAfter))
	t.kv("Labels", labels(d.Labels))
	t.kv("Created", ts(d.CreatedAt))
}

// parseLabelEdits reads "k=v" (set) and "k-" (remove) arguments.
func parseLabelEdits(args []string) (set map[string]string, remove []string, err error) {
	set = map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			if k == "" {
				return nil, nil, usagef("label %q: empty key", a)
			}
			set[k] = v
			continue
		}
		if k, ok := strings.CutSuffix(a, "-"); ok && k != "" {
			remove = append(remove, k)
			continue
		}
		return nil, nil, usagef("label %q: want key=value, or key- to remove", a)
	}
	return set, remove, nil
}

func (a *App) deviceCmd() *cobra.Command {
	var fleet string
	var online bool
	var labelFilter []string
	list := &cobra.Command{
		Use:   "list [--fleet F] [--online] [--label k=v]…",
		Short: "List devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := client.DeviceFilter{Fleet: fleet}
			if cmd.Flags().Changed("online") {
				f.Online = &online
			}
			for _, l := range labelFilter {
				if k, _, ok := strings.Cut(l, "="); !ok || k == "" {
					return usagef("--label %q: want key=value", l)
				}
				f.Labels = append(f.Labels, l)
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			devs, err := c.ListDevices(cmd.Context(), f)
			if err != nil {
				return err
			}
			devs = nonNil(devs)
			return a.render(devs, func(t *tableWriter) { deviceTable(t, devs) })
		},
	}
	list.Flags().StringVar(&fleet, "fleet", "", "only devices of this fleet (id or name)")
	list.Flags().BoolVar(&online, "online", false, "only online devices (--online=false: only offline ones)")
	list.Flags().StringArrayVar(&labelFilter, "label", nil, "only devices with this label, key=value (repeatable)")
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a device",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			d, err := c.GetDevice(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.render(d, func(t *tableWriter) { deviceDetail(t, d) })
		},
	}
	label := &cobra.Command{
		Use:   "label ID key=value… [key-…]",
		Short: "Set (key=value) or remove (key-) labels of a device",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, remove, err := parseLabelEdits(args[1:])
			if err != nil {
				return err
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			cur, err := c.GetDevice(ctx, args[0])
			if err != nil {
				return err
			}
			next := map[string]string{}
			for k, v := range cur.Labels {
				next[k] = v
			}
			for k, v := range set {
				next[k] = v
			}
			for _, k := range remove {
				delete(next, k)
			}
			d, err := c.UpdateDevice(ctx, cur.ID, client.DeviceUpdate{Labels: next})
			if err != nil {
				return err
			}
			return a.render(d, func(t *tableWriter) { deviceTable(t, []client.Device{d}) })
		},
	}
	rename := &cobra.Command{
		Use:   "rename ID NAME",
		Short: "Rename a device",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			d, err := c.UpdateDevice(cmd.Context(), args[0], client.DeviceUpdate{Name: &args[1]})
			if err != nil {
				return err
			}
			return a.render(d, func(t *tableWriter) { deviceTable(t, []client.Device{d}) })
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a device and its certificates; it is disconnected at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			d, err := c.RevokeDevice(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.render(d, func(t *tableWriter) { deviceTable(t, []client.Device{d}) })
		},
	}
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a device",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteDevice(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.done("device", args[0], "deleted")
		},
	}
	return group("device", "Manage devices", list, get, label, rename, revoke, del)
}
