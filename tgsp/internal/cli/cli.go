// Package cli implements the tgsp command line (DESIGN.md §5): keygen, pack,
// verify, unpack and inspect. Every failure is one line on stderr naming what
// failed, with exit status 1 (2 for usage errors).
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/tgsp"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

type usageError struct{ error }

// Main runs the tgsp command with args and returns its exit code.
func Main(argv []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(stdout)
	root.SetArgs(argv)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "tgsp: %s\n", oneLine(err))
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		return exitUsage
	}
	return exitFail
}

// args wraps a cobra argument check so its failure is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

func newRoot(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "tgsp",
		Short:         "Create, inspect, verify and unpack TGSP signed and encrypted packages",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(keygenCmd(stdout), packCmd(stdout), verifyCmd(stdout), unpackCmd(stdout), inspectCmd(stdout))
	return root
}

func keygenCmd(stdout io.Writer) *cobra.Command {
	var kind, out string
	c := &cobra.Command{
		Use:   "keygen --kind signer|recipient --out PREFIX",
		Short: "Generate a key pair: PREFIX.key (mode 0600) and PREFIX.pub",
		Args:  args(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			if out == "" {
				return usageError{errors.New("--out PREFIX is required")}
			}
			k := tgsp.KeyKind(kind)
			if k != tgsp.KindSigner && k != tgsp.KindRecipient {
				return usageError{fmt.Errorf("--kind must be signer or recipient, not %q", kind)}
			}
			id, err := tgsp.WriteKeyPair(out, k, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s.key and %s.pub (%s key %s)\n", out, out, kind, id)
			return nil
		},
	}
	c.Flags().StringVar(&kind, "kind", "", "key kind: signer or recipient")
	c.Flags().StringVar(&out, "out", "", "output prefix")
	return c
}

func packCmd(stdout io.Writer) *cobra.Command {
	var (
		signerPath, name, version, evidence, dpCert, out, expires string
		recipients, deviceTypes                                   []string
	)
	c := &cobra.Command{
		Use:   "pack --signer-key S.key --recipient R.pub [--recipient R2.pub ...] [flags] --out P.tgsp INPUT_DIR",
		Short: "Encrypt and sign a directory into a package",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, argv []string) error {
			if out == "" || signerPath == "" || len(recipients) == 0 {
				return usageError{errors.New("--signer-key, at least one --recipient and --out are required")}
			}
			in := argv[0]
			if name == "" {
				name = filepath.Base(filepath.Clean(in))
			}
			opts := tgsp.PackOptions{Name: name, Version: version, DeviceTypes: deviceTypes, CreatedAt: time.Now()}
			var err error
			if opts.ExpiresAt, err = parseExpiry(expires, opts.CreatedAt); err != nil {
				return usageError{err}
			}
			if opts.Signer, err = tgsp.LoadSignerPrivateKey(signerPath); err != nil {
				return err
			}
			for _, r := range recipients {
				k, err := tgsp.LoadRecipientPublicKey(r)
				if err != nil {
					return err
				}
				opts.Recipients = append(opts.Recipients, k)
			}
			if opts.Evidence, err = readDoc(evidence); err != nil {
				return err
			}
			if opts.DPCert, err = readDoc(dpCert); err != nil {
				return err
			}
			m, err := packFile(out, in, opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "packed %s %s@%s: %d entries, %d payload bytes, %d recipient(s), expires %s\n",
				out, m.Name, m.Version, len(m.Files), m.PayloadSize, len(opts.Recipients), m.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&signerPath, "signer-key", "", "signer private key (mode 0600)")
	f.StringArrayVar(&recipients, "recipient", nil, "recipient public key (repeatable)")
	f.StringVar(&name, "name", "", "package name (default: the input directory's name)")
	f.StringVar(&version, "version", "0.1.0", "package semantic version")
	f.StringArrayVar(&deviceTypes, "device-type", nil, `target device type, repeatable (default "*": any)`)
	f.StringVar(&expires, "expires", "8760h", "expiry: a duration from now (e.g. 720h) or an RFC 3339 time")
	f.StringVar(&evidence, "evidence", "", "evidence.json to attach")
	f.StringVar(&dpCert, "dp-cert", "", "dp_cert.json to attach")
	f.StringVar(&out, "out", "", "output package path (must not exist)")
	return c
}

func parseExpiry(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--expires %s must be in the future", s)
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--expires %q is neither a duration nor an RFC 3339 time", s)
	}
	return t, nil
}

func readDoc(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// packFile writes the package to a temporary file beside out and renames it
// into place only when complete, so a failed pack leaves nothing behind.
func packFile(out, in string, opts tgsp.PackOptions) (m *tgsp.Manifest, err error) {
	if _, err := os.Lstat(out); err == nil {
		return nil, fmt.Errorf("%s exists; remove it or choose another --out", out)
	}
	f, err := os.CreateTemp(filepath.Dir(out), ".tgsp-pack-*")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if m, err = tgsp.Pack(f, in, opts); err != nil {
		return nil, err
	}
	if err = f.Sync(); err != nil {
		return nil, err
	}
	if err = f.Chmod(0o644); err != nil {
		return nil, err
	}
	if err = f.Close(); err != nil {
		return nil, err
	}
	if err = os.Rename(f.Name(), out); err != nil {
		return nil, err
	}
	return m, nil
}

// openPackage opens path and parses its structure.
func openPackage(path string) (*tgsp.Package, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	p, err := tgsp.Open(f, fi.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, f, nil
}

func loadTrust(paths []string) ([]*tgsp.SignerPublicKey, error) {
	if len(paths) == 0 {
		return nil, usageError{errors.New("--trust S.pub is required")}
	}
	var keys []*tgsp.SignerPublicKey
	for _, p := range paths {
		k, err := tgsp.LoadSignerPublicKey(p)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func verifyCmd(stdout io.Writer) *cobra.Command {
	var trust []string
	var workers int
	c := &cobra.Command{
		Use:   "verify --trust S.pub P.tgsp",
		Short: "Check the signature, expiry and every shard hash (no decryption key needed)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			keys, err := loadTrust(trust)
			if err != nil {
				return err
			}
			p, f, err := openPackage(argv[0])
			if err != nil {
				return err
			}
			defer f.Close()
			if err := p.Verify(cmd.Context(), keys, time.Now(), workers); err != nil {
				return err
			}
			m := p.Manifest
			fmt.Fprintf(stdout, "OK %s@%s: signature by %s, %d entries, %d payload bytes, expires %s\n",
				m.Name, m.Version, m.PublisherKeyID, len(m.Files), m.PayloadSize, m.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	c.Flags().StringArrayVar(&trust, "trust", nil, "trusted signer public key (repeatable)")
	c.Flags().IntVar(&workers, "workers", 0, "parallel hashing workers (default: number of CPUs)")
	return c
}

func unpackCmd(stdout io.Writer) *cobra.Command {
	var trust []string
	var keyPath, out string
	var workers int
	var checkDigests bool
	c := &cobra.Command{
		Use:   "unpack --trust S.pub --recipient-key R.key --out OUT_DIR P.tgsp",
		Short: "Verify and decrypt a package; OUT_DIR appears only if everything checked",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if out == "" || keyPath == "" {
				return usageError{errors.New("--recipient-key and --out are required")}
			}
			keys, err := loadTrust(trust)
			if err != nil {
				return err
			}
			key, err := tgsp.LoadRecipientPrivateKey(keyPath)
			if err != nil {
				return err
			}
			p, f, err := openPackage(argv[0])
			if err != nil {
				return err
			}
			defer f.Close()
			if err := p.VerifySignature(keys, time.Now()); err != nil {
				return err
			}
			dek, err := p.UnwrapDEK(key)
			if err != nil {
				return err
			}
			err = p.Unpack(cmd.Context(), dek, out, tgsp.UnpackOptions{Workers: workers, CheckDigests: checkDigests})
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "unpacked %s@%s into %s (%d entries)\n", p.Manifest.Name, p.Manifest.Version, out, len(p.Manifest.Files))
			return nil
		},
	}
	f := c.Flags()
	f.StringArrayVar(&trust, "trust", nil, "trusted signer public key (repeatable)")
	f.StringVar(&keyPath, "recipient-key", "", "recipient private key (mode 0600)")
	f.StringVar(&out, "out", "", "output directory (must not exist, or be empty)")
	f.IntVar(&workers, "workers", 0, "parallel decryption workers (default: number of CPUs)")
	f.BoolVar(&checkDigests, "check-digests", false, "also re-read each file and check its keyed plaintext digest")
	return c
}

func inspectCmd(stdout io.Writer) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "inspect P.tgsp",
		Short: "Print the manifest as JSON (structure checked, signature NOT verified)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(_ *cobra.Command, argv []string) error {
			p, f, err := openPackage(argv[0])
			if err != nil {
				return err
			}
			defer f.Close()
			var out []byte
			if all {
				doc := map[string]any{
					"package_id": p.ID(),
					"size":       p.Size(),
					"manifest":   json.RawMessage(p.ManifestBytes),
					"recipients": p.Recipients(),
				}
				if p.EvidenceJSON != nil {
					doc["evidence"] = json.RawMessage(p.EvidenceJSON)
				}
				if p.DPCertJSON != nil {
					doc["dp_cert"] = json.RawMessage(p.DPCertJSON)
				}
				if out, err = json.MarshalIndent(doc, "", "  "); err != nil {
					return err
				}
			} else {
				var buf bytes.Buffer
				if err := json.Indent(&buf, p.ManifestBytes, "", "  "); err != nil {
					return err
				}
				out = buf.Bytes()
			}
			_, err = fmt.Fprintf(stdout, "%s\n", out)
			return err
		},
	}
	c.Flags().BoolVar(&all, "all", false, "wrap the manifest with the package id, recipients, evidence and dp_cert")
	return c
}
