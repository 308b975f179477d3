// Command tg-controlplane is the TensorGuardFlow control plane: tenants,
// fleets and devices, the fleet CA, enrollment and the MQTT broker.
//
//	tg-controlplane init --tenant NAME [--data-dir D] [-o json]
//	tg-controlplane serve [--config F] [--listen A] [--mqtt-listen A] [--data-dir D]
//	tg-controlplane mosquitto-config --out DIR [--config F]
//	tg-controlplane version
//	tg-controlplane completion bash|zsh|fish
//	tg-controlplane man            the manual page (roff; hidden, for packaging)
//
// Exit codes: 0 success, 1 failure (one line on stderr), 2 usage or
// configuration error (bad flags, an unreadable or invalid configuration):
// the unit sets RestartPreventExitStatus=2, since restarting cannot help.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/tensorguard/tensorguardflow/controlplane"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/internal/manpage"
	"github.com/tensorguard/tensorguardflow/trainer"
	"github.com/tensorguard/tensorguardflow/trainer/models"
)

// version is set by the build (-ldflags "-X main.version=…").
var version = "dev"

type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := newRoot(stdout)
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.ExecuteContext(context.Background())
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "tg-controlplane: "+oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		return 2
	}
	return 1
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

type common struct {
	configFile string
	dataDir    string
}

// load builds the configuration: defaults < file < environment < flags.
// Its errors are configuration errors (exit 2).
func (c *common) load(apply func(*controlplane.Config)) (controlplane.Config, error) {
	cfg, err := controlplane.LoadConfig(c.configFile, os.Getenv)
	if err != nil {
		return controlplane.Config{}, usageError{err}
	}
	if c.dataDir != "" {
		cfg.DataDir = c.dataDir
	}
	if apply != nil {
		apply(&cfg)
	}
	cfg.Finish()
	if err := cfg.Validate(); err != nil {
		return controlplane.Config{}, usageError{err}
	}
	return cfg, nil
}

func newRoot(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "tg-controlplane",
		Short:         "TensorGuardFlow control plane",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	var c common
	addCommon := func(cmd *cobra.Command) {
		cmd.Flags().StringVar(&c.configFile, "config", "", "YAML configuration file")
		cmd.Flags().StringVar(&c.dataDir, "data-dir", "", "data directory (default ./.tg-data, /var/lib/tensorguard/controlplane in production)")
	}

	var tenant, output string
	initCmd := &cobra.Command{
		Use:   "init --tenant NAME",
		Short: "First run: create a tenant, its CA and an admin API key (printed once)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant == "" {
				return usageError{errors.New("init: --tenant is required")}
			}
			if output != "" && output != "json" && output != "text" {
				return usageError{fmt.Errorf("-o: %q is neither text nor json", output)}
			}
			cfg, err := c.load(nil)
			if err != nil {
				return err
			}
			res, err := controlplane.Init(cmd.Context(), cfg, tenant)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintf(stdout, "tenant:      %s\noperator:    %s (admin)\napi key:     %s\nca hash:     %s\ndata dir:    %s\n",
				res.Tenant, res.OperatorID, res.APIKey, res.CAHash, res.DataDir)
			if res.KEKGenerated {
				fmt.Fprintf(stdout, "kek:         generated a DEVELOPMENT key (%s); production needs TG_KEY_MASTER\n", res.KEKSource)
			}
			fmt.Fprintln(stdout, "The API key is shown only now; store it safely.")
			return nil
		},
	}
	addCommon(initCmd)
	initCmd.Flags().StringVar(&tenant, "tenant", "", "tenant id (a slug: ^[a-z0-9][a-z0-9-]{0,62}$)")
	initCmd.Flags().StringVarP(&output, "output", "o", "", "output format: text or json")

	var listen, mqttListen string
	serveCmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the API (HTTPS on :8000) and the MQTT broker (:8883)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.load(func(cfg *controlplane.Config) {
				if listen != "" {
					cfg.HTTP.Listen = listen
				}
				if mqttListen != "" {
					cfg.MQTT.Listen = mqttListen
				}
			})
			if err != nil {
				return err
			}
			// The trainer (TG-Tinker, /v1/…) shares the listener, the API
			// keys, the database and the tenants' keys of the control plane.
			var th lateHandler
			cp, err := controlplane.New(cfg, controlplane.WithHandler(&th))
			if err != nil {
				return err
			}
			db, backend := cp.TrainerDB()
			tr, err := trainer.New(cmd.Context(), trainer.Config{DB: db, Backend: backend, Host: trainerHost{cp},
				Models: models.Default(), Logger: controlplane.NewLogger(cfg.Log, os.Stderr).With("subsystem", "trainer")})
			if err != nil {
				return err
			}
			th.set(tr.Handler())
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error { return cp.Run(gctx) })
			g.Go(func() error { return tr.Run(gctx) })
			return g.Wait()
		},
	}
	addCommon(serveCmd)
	serveCmd.Flags().StringVar(&listen, "listen", "", "API listen address (default :8000)")
	serveCmd.Flags().StringVar(&mqttListen, "mqtt-listen", "", "embedded MQTT broker listen address (default :8883)")

	var outDir string
	mosqCmd := &cobra.Command{
		Use:   "mosquitto-config --out DIR",
		Short: "Write CA, CRL, server certificate, ACL and a control-plane client identity for an external mosquitto; print its config snippet and how to run it",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if outDir == "" {
				return usageError{errors.New("mosquitto-config: --out is required")}
			}
			if output != "" && output != "json" && output != "text" {
				return usageError{fmt.Errorf("-o: %q is neither text nor json", output)}
			}
			cfg, err := c.load(nil)
			if err != nil {
				return err
			}
			files, err := controlplane.WriteMosquittoConfig(cmd.Context(), cfg, outDir)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(files)
			}
			_, err = io.WriteString(stdout, files.Config+controlplane.MosquittoInstructions(files))
			return err
		},
	}
	addCommon(mosqCmd)
	mosqCmd.Flags().StringVar(&outDir, "out", "", "directory for mosquitto.conf, ca.pem, crl.pem, server.crt, server.key, acl, controlplane.crt/key")
	mosqCmd.Flags().StringVarP(&output, "output", "o", "", "output format: text (the snippet) or json")

	var newKEKFile, newKEKEnv string
	rotateCmd := &cobra.Command{
		Use:   "rotate-kek (--new-kek-file F | --new-kek-env NAME)",
		Short: "Rewrap every tenant's data key and the platform CA key under a new KEK (stop the control plane first)",
		Long: `Rewraps everything the KEK protects under a new one: every tenant's data key (one
transaction) and the platform CA key. What the data keys seal (CA keys, package keys,
trainer artifacts) does not change and stays readable. Stop the control plane, run this,
point kek.file (or TG_KEY_MASTER) at the new key, and start it again. Running it again
after an interruption finishes the job.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (newKEKFile == "") == (newKEKEnv == "") {
				return usageError{errors.New("rotate-kek: give exactly one of --new-kek-file and --new-kek-env")}
			}
			cfg, err := c.load(nil)
			if err != nil {
				return err
			}
			r, err := controlplane.RotateKEK(cmd.Context(), cfg, kek.Config{File: newKEKFile, Env: newKEKEnv})
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(stdout).Encode(r)
			}
			fmt.Fprintf(stdout, "rewrapped %d tenant data key(s) (%d already under the new KEK); platform CA key %s\n", r.Tenants, r.Already, r.PlatformKey)
			fmt.Fprintln(stdout, "Now point kek (or TG_KEY_MASTER) at the new key and start the control plane.")
			return nil
		},
	}
	addCommon(rotateCmd)
	rotateCmd.Flags().StringVar(&newKEKFile, "new-kek-file", "", "key file of the new KEK (hex or base64, mode 0600/0400)")
	rotateCmd.Flags().StringVar(&newKEKEnv, "new-kek-env", "", "environment variable holding the new KEK")
	rotateCmd.Flags().StringVarP(&output, "output", "o", "", "output format: text or json")

	versionCmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			v := version
			if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
				v = bi.Main.Version
			}
			if output == "json" {
				return json.NewEncoder(stdout).Encode(map[string]string{"version": v})
			}
			_, err := fmt.Fprintln(stdout, "tg-controlplane "+v)
			return err
		},
	}
	versionCmd.Flags().StringVarP(&output, "output", "o", "", "output format: text or json")

	root.AddCommand(initCmd, serveCmd, mosqCmd, rotateCmd, versionCmd)
	root.AddCommand(manpage.Command(root, manpage.Header{Source: "TensorGuardFlow " + version}))
	return root
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s: unexpected arguments %q", cmd.Name(), args)}
	}
	return nil
}
