package tgctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

func publisherTable(t *tableWriter, pubs []client.Publisher) {
	t.row("NAME", "KEY ID", "CREATED")
	for _, p := range pubs {
		t.row(p.Name, p.KeyID, ts(p.CreatedAt))
	}
}

func (a *App) publisherCmd() *cobra.Command {
	var keyFile string
	add := &cobra.Command{
		Use:   "add NAME --key SIGNER.pub",
		Short: "Pin a TGSP signer key: packages pushed to the tenant must be signed by a pinned publisher",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return usagef("--key SIGNER.pub is required (the public key `tgsp keygen --kind signer` wrote)")
			}
			pemBytes, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			// Checked here too, so a wrong file is named before anything is sent.
			k, err := tgsp.ParseSignerPublicKey(pemBytes)
			if err != nil {
				return fmt.Errorf("%s: %w", keyFile, err)
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.CreatePublisher(cmd.Context(), client.PublisherCreate{Name: args[0], PublicKeyPEM: string(k.MarshalPEM())})
			if err != nil {
				return err
			}
			return a.render(p, func(t *tableWriter) { publisherTable(t, []client.Publisher{p}) })
		},
	}
	add.Flags().StringVar(&keyFile, "key", "", "the signer's public key file (PREFIX.pub)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the pinned publishers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			pubs, err := c.ListPublishers(cmd.Context())
			if err != nil {
				return err
			}
			pubs = nonNil(pubs)
			return a.render(pubs, func(t *tableWriter) { publisherTable(t, pubs) })
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME|KEY-ID",
		Short: "Unpin a publisher: its packages can no longer be pushed, nor their keys granted",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeletePublisher(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.done("publisher", args[0], "removed")
		},
	}
	return group("publisher", "Manage the tenant's trusted package signers", add, list, remove)
}

func packageTable(t *tableWriter, pkgs []client.Package) {
	t.row("NAME", "VERSION", "ID", "SIZE", "PUBLISHER", "EXPIRES", "PUSHED")
	for _, p := range pkgs {
		t.row(p.Name, p.Version, p.ID, strconv.FormatInt(p.Size, 10), p.PublisherKeyID, ts(p.ExpiresAt), ts(p.CreatedAt))
	}
}

func packageDetail(t *tableWriter, p client.PackageDetail) {
	t.kv("Name", p.Name)
	t.kv("Version", p.Version)
	t.kv("ID", p.ID)
	t.kv("Signed ID", p.SignedID)
	t.kv("Size", strconv.FormatInt(p.Size, 10))
	t.kv("Publisher key", p.PublisherKeyID)
	var m struct {
		DeviceTypes []string `json:"device_types"`
		CreatedAt   string   `json:"created_at"`
		Files       []struct {
			Type string `json:"type"`
			Size int64  `json:"size"`
		} `json:"files"`
	}
	if json.Unmarshal(p.Manifest, &m) == nil {
		files, bytes := 0, int64(0)
		for _, f := range m.Files {
			if f.Type == tgsp.TypeFile {
				files++
				bytes += f.Size
			}
		}
		t.kv("Device types", strings.Join(m.DeviceTypes, ","))
		t.kv("Files", fmt.Sprintf("%d (%d bytes)", files, bytes))
		t.kv("Packed", m.CreatedAt)
	}
	t.kv("Expires", ts(p.ExpiresAt))
	t.kv("Pushed", ts(p.CreatedAt))
	var dp tgsp.DPCert
	switch {
	case len(p.DPCert) == 0 || string(p.DPCert) == "null":
		t.kv("DP certificate", "none")
	case json.Unmarshal(p.DPCert, &dp) == nil:
		t.kv("DP certificate", fmt.Sprintf("ε=%g δ=%g (%s, noise %g, %d steps)", dp.Epsilon, dp.Delta, dp.Accountant, dp.NoiseMultiplier, dp.Steps))
	default:
		t.kv("DP certificate", "unreadable")
	}
	ev := "none"
	if len(p.Evidence) > 0 && string(p.Evidence) != "null" {
		ev = "attached (-o json shows it)"
	}
	t.kv("Evidence", ev)
}

func (a *App) packageCmd() *cobra.Command {
	var out string
	recipient := &cobra.Command{
		Use:   "recipient [--out FILE]",
		Short: "Print the control plane's recipient key: pack with `tgsp pack --recipient` set to it",
		Long: `recipient prints the control plane's TGSP recipient public key of the tenant (PEM), creating
it on first use. Packages must be packed to it, or the control plane can neither accept them nor
release their keys to devices:

  tgctl package recipient > cp.pub
  tgsp pack --signer-key S.key --recipient cp.pub --name resnet --version 1.0.0 --out P.tgsp DIR`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			k, err := c.PackageRecipient(cmd.Context())
			if err != nil {
				return err
			}
			if _, err := tgsp.ParseRecipientPublicKey([]byte(k.PublicKeyPEM)); err != nil {
				return fmt.Errorf("the server sent a recipient key that does not parse: %w", err)
			}
			if out != "" {
				if err := os.WriteFile(out, []byte(k.PublicKeyPEM), 0o644); err != nil {
					return err
				}
			}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, k)
			}
			if out != "" {
				_, err = fmt.Fprintf(a.Stdout, "recipient key %s written to %s\n", k.KeyID, out)
				return err
			}
			_, err = fmt.Fprint(a.Stdout, k.PublicKeyPEM)
			return err
		},
	}
	recipient.Flags().StringVar(&out, "out", "", "write the key to FILE instead of stdout")
	push := &cobra.Command{
		Use:   "push P.tgsp",
		Short: "Push a package: verified against the pinned publishers, stored once per name and version",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("%s is not a regular file", args[0])
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, created, err := c.PushPackage(cmd.Context(), f, fi.Size())
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, p)
			}
			what := "pushed"
			if !created {
				what = "already stored (identical file)"
			}
			_, err = fmt.Fprintf(a.Stdout, "package %s@%s %s: id %s, %d bytes\n", p.Name, p.Version, what, p.ID, p.Size)
			return err
		},
	}
	var name string
	list := &cobra.Command{
		Use:   "list [--name N]",
		Short: "List the tenant's packages",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			pkgs, err := c.ListPackages(cmd.Context(), name)
			if err != nil {
				return err
			}
			pkgs = nonNil(pkgs)
			return a.render(pkgs, func(t *tableWriter) { packageTable(t, pkgs) })
		},
	}
	list.Flags().StringVar(&name, "name", "", "only versions of this package")
	get := &cobra.Command{
		Use:   "get NAME@VERSION|ID",
		Short: "Show a package: its manifest summary and DP certificate (-o json: everything)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.GetPackage(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.render(p, func(t *tableWriter) { packageDetail(t, p) })
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME@VERSION|ID",
		Short: "Delete a package and its file (refused while a rollout uses it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeletePackage(cmd.Context(), args[0]); err != nil {
				return err
			}
			return a.done("package", args[0], "deleted")
		},
	}
	var dlOut string
	download := &cobra.Command{
		Use:   "download NAME@VERSION|ID --out FILE",
		Short: "Download a package file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			if dlOut == "" {
				return usagef("--out FILE is required")
			}
			if _, err := os.Stat(dlOut); err == nil {
				return errors.New(dlOut + " exists; refusing to overwrite it")
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			// Written beside the target and renamed, so FILE is whole or absent.
			tmp, err := os.CreateTemp(filepath.Dir(dlOut), ".tgctl-download-*")
			if err != nil {
				return err
			}
			defer func() {
				tmp.Close()
				if err != nil {
					os.Remove(tmp.Name())
				}
			}()
			n, err := c.DownloadPackage(cmd.Context(), args[0], tmp)
			if err != nil {
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Chmod(tmp.Name(), 0o644); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), dlOut); err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, map[string]any{"file": dlOut, "size": n})
			}
			_, err = fmt.Fprintf(a.Stdout, "%d bytes written to %s\n", n, dlOut)
			return err
		},
	}
	download.Flags().StringVar(&dlOut, "out", "", "the file to write (must not exist)")
	return group("package", "Manage the tenant's package registry", recipient, push, list, get, del, download)
}
