// Command tg-agent is the TensorGuardFlow device agent.
//
//	tg-agent run     [--config F]                       run the daemon (systemd Type=notify)
//	tg-agent enroll  --server URL --ca-hash H (--token T | --token-file F) [--config F]
//	tg-agent status  [--config F] [-o json]             identity from the state file, no TPM access
//	tg-agent version [-o json]
//	tg-agent completion bash|zsh|fish   shell completion script (cobra)
//	tg-agent man                         the manual page (roff; hidden, for packaging)
//
// Exit codes: 0 success; 1 runtime failure (systemd may restart); 2 the
// configuration or the credentials must be fixed first (invalid config, bad
// flags, enrollment refused, identity not in this TPM) — the unit sets
// RestartPreventExitStatus=2. Errors are one line on stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/agent"
	"github.com/tensorguard/tensorguardflow/internal/manpage"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitConfig  = 2
)

// configError marks errors that exit with exitConfig.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "tg-agent: "+oneLine(err.Error()))
	var ce *configError
	var ee *agent.EnrollError
	switch {
	case errors.As(err, &ce), errors.As(err, &ee), errors.Is(err, agent.ErrKeyMismatch),
		strings.HasPrefix(err.Error(), "unknown command"):
		return exitConfig
	}
	return exitFailure
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "tg-agent",
		Short:         "TensorGuardFlow device agent",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &configError{err} })
	root.AddCommand(runCmd(stderr), enrollCmd(stdout, stderr), statusCmd(stdout), versionCmd(stdout))
	root.AddCommand(manpage.Command(root, manpage.Header{Source: "TensorGuardFlow " + agent.Version}))
	return root
}

// loadConfig reads path; a missing file is allowed (defaults) only when
// allowMissing, for commands whose flags can supply everything.
func loadConfig(path string, allowMissing bool) (*agent.Config, error) {
	cfg, err := agent.LoadConfig(path)
	if errors.Is(err, fs.ErrNotExist) && allowMissing {
		cfg = agent.DefaultConfig()
		cfg.Environment = os.Getenv(agent.EnvEnvironment)
		return cfg, nil
	}
	if err != nil {
		return nil, &configError{err}
	}
	return cfg, nil
}

func newLogger(cfg *agent.Config, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	lv.Set(cfg.LogLevel())
	opts := &slog.HandlerOptions{Level: lv}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), lv
	}
	return slog.New(slog.NewTextHandler(w, opts)), lv
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

func runCmd(stderr io.Writer) *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent daemon",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := loadConfig(configPath, false)
			if err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return &configError{fmt.Errorf("config %s: %w", configPath, err)}
			}
			logger, lv := newLogger(cfg, stderr)
			a, err := agent.New(cfg, logger, agent.WithConfigPath(configPath), agent.WithLevelVar(lv))
			if err != nil {
				return &configError{err}
			}
			ctx, stop := signalContext()
			defer stop()
			return a.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", agent.DefaultConfigPath, "config file")
	return cmd
}

func enrollCmd(stdout, stderr io.Writer) *cobra.Command {
	var configPath, server, token, tokenFile, caHash, caFile, output string
	cmd := &cobra.Command{
		Use:   "enroll",
		Short: "Enroll this device once and write the identity to the state file",
		Long: "Enroll this device with the control plane using a one-time token and its TPM (or, with\n" +
			"tpm: {none: true}, a software key kept in the state file), then exit.\n" +
			"Flags override the config file, which may be absent. Prefer --token-file or TG_ENROLL_TOKEN\n" +
			"to --token: command lines are visible to other users.",
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			cfg, err := loadConfig(configPath, !c.Flags().Changed("config"))
			if err != nil {
				return err
			}
			if server != "" {
				cfg.ServerURL = server
			}
			if caHash != "" {
				cfg.CAHash, cfg.CAFile = caHash, ""
			}
			if caFile != "" {
				cfg.CAFile, cfg.CAHash = caFile, ""
			}
			if token != "" {
				cfg.Token, cfg.TokenFile = token, ""
			}
			if tokenFile != "" {
				cfg.TokenFile, cfg.Token = tokenFile, ""
			}
			if err := cfg.Validate(); err != nil {
				return &configError{err}
			}
			logger, _ := newLogger(cfg, stderr)
			a, err := agent.New(cfg, logger)
			if err != nil {
				return &configError{err}
			}
			ctx, stop := signalContext()
			defer stop()
			st, fresh, err := a.Enroll(ctx)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(stdout, struct {
					*agent.Status
					AlreadyEnrolled bool `json:"already_enrolled"`
				}{st, !fresh})
			}
			verb := "enrolled"
			if !fresh {
				verb = "already enrolled"
			}
			fmt.Fprintf(stdout, "%s as %s (tenant %s, fleet %s); certificate valid until %s\n",
				verb, st.DeviceID, st.TenantID, st.FleetID, st.CertNotAfter.Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", agent.DefaultConfigPath, "config file (optional for enroll)")
	f.StringVar(&server, "server", "", "control plane URL, https://host:port")
	f.StringVar(&token, "token", "", "one-time enrollment token (visible in process lists; prefer --token-file)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the enrollment token")
	f.StringVar(&caHash, "ca-hash", "", "pin of the control plane's CA, sha256:<hex>")
	f.StringVar(&caFile, "ca-file", "", "PEM file with the control plane's CA (instead of --ca-hash)")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func statusCmd(stdout io.Writer) *cobra.Command {
	var configPath, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the device identity and agent state (no TPM access)",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			cfg, err := loadConfig(configPath, !c.Flags().Changed("config"))
			if err != nil {
				return err
			}
			st, err := agent.ReadStatus(cfg)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(stdout, st)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
			row("enrolled", st.Enrolled)
			if st.Enrolled {
				row("device", st.DeviceID)
				row("tenant", st.TenantID)
				row("fleet", st.FleetID)
				row("tpm", st.TPMKind)
				row("certificate serial", st.CertSerial)
				row("certificate not after", st.CertNotAfter.Format(time.RFC3339))
				row("enrolled at", st.EnrolledAt.Format(time.RFC3339))
				row("control plane", st.ControlPlaneURL)
				row("broker", st.BrokerURL)
				kem := "none"
				if st.KEMKey != "" {
					kem = st.KEMKey + ", not registered"
					if st.KEMKeyRegistered {
						kem = st.KEMKey + ", registered"
					}
				}
				row("package key", kem)
				model := func(m *agent.ModelStatus) string {
					switch {
					case m == nil:
						return "none"
					case m.Committed:
						return m.Name + " " + m.Version
					}
					return m.Name + " " + m.Version + " (on trial)"
				}
				row("model", model(st.Model))
				row("previous model", model(st.PreviousModel))
			}
			row("running", st.Running)
			if st.Running {
				row("connected", st.Connected)
				row("outbox pending", st.OutboxPending)
				row("outbox dropped", st.OutboxDropped)
				serving := "none"
				if st.Serving != nil {
					serving = st.Serving.Name + " " + st.Serving.Version
				}
				row("serving", serving)
			}
			row("session", st.Session)
			row("state", st.StatePath)
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&configPath, "config", agent.DefaultConfigPath, "config file (defaults apply when absent)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func versionCmd(stdout io.Writer) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			v := map[string]string{"version": agent.Version, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
			if output == "json" {
				return writeJSON(stdout, v)
			}
			fmt.Fprintf(stdout, "tg-agent %s (%s, %s)\n", v["version"], v["go"], v["platform"])
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return &configError{fmt.Errorf("unexpected argument %q", args[0])}
	}
	return nil
}

func checkOutput(o string) error {
	if o != "text" && o != "json" {
		return &configError{fmt.Errorf("--output %q: want text or json", o)}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
