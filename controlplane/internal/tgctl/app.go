package tgctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/manpage"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Version is tgctl's version, set at build time with
// -ldflags "-X github.com/tensorguard/tensorguardflow/controlplane/internal/tgctl.Version=1.2.3";
// when unset it is the module version from the build info, or "dev".
var Version = ""

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command ran and failed: API error, verification failure, I/O
	ExitUsage   = 2 // the command line is wrong
)

// App is one tgctl invocation's environment: its streams, environment
// variables and clock, injected so tests run commands in-process.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads an environment variable (os.Getenv by default).
	Getenv func(string) string
	// Now is the clock (time.Now by default).
	Now    func() time.Time
	global globalFlags
}

// globalFlags are the persistent flags of the root command.
type globalFlags struct {
	server, apiKey, caFile, caHash, context, output string
	timeout                                         time.Duration
}

// Main runs tgctl with args (without the program name) and returns the
// exit code. Errors are printed to Stderr as one line:
// "tgctl: <code>: <message> (request <id>)" for an API error.
func (a *App) Main(ctx context.Context, args []string) int {
	a.defaults()
	root := a.NewRootCommand()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	if cmd == nil {
		cmd = root
	}
	usage := fmt.Sprintf("Run '%s --help' for usage.", cmd.CommandPath())
	var ue *usageError
	var re *runError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(a.Stderr, "tgctl: %v\n%s\n", ue.err, usage)
		return ExitUsage
	case errors.As(err, &re):
		fmt.Fprintln(a.Stderr, "tgctl: "+oneLine(FormatError(re.err)))
		return ExitFailure
	default:
		// Whatever cobra itself returns (unknown command or flag, wrong
		// number of arguments) is a usage error.
		fmt.Fprintf(a.Stderr, "tgctl: %v\n%s\n", err, usage)
		return ExitUsage
	}
}

func (a *App) defaults() {
	if a.Stdin == nil {
		a.Stdin = os.Stdin
	}
	if a.Stdout == nil {
		a.Stdout = os.Stdout
	}
	if a.Stderr == nil {
		a.Stderr = os.Stderr
	}
	if a.Getenv == nil {
		a.Getenv = os.Getenv
	}
	if a.Now == nil {
		a.Now = time.Now
	}
}

// FormatError renders an error for the one-line message on stderr.
func FormatError(err error) string {
	var ae *wire.APIError
	if errors.As(err, &ae) {
		s := ae.Code + ": " + ae.Message
		if ae.RequestID != "" {
			s += " (request " + ae.RequestID + ")"
		}
		return s
	}
	return err.Error()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// usageError marks an error in the command line (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// runError marks an error of a command that ran (exit 1).
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// NewRootCommand assembles tgctl's command tree. It is the one place
// commands are registered: see addCommands.
func (a *App) NewRootCommand() *cobra.Command {
	a.defaults()
	root := &cobra.Command{
		Use:   "tgctl",
		Short: "Operate a TensorGuardFlow control plane",
		Long: `tgctl operates a TensorGuardFlow control plane through its REST API (/api/v1).

The server and API key come from --server/--api-key, else TG_BASE_URL/TG_API_KEY,
else the context that 'tgctl login' wrote (` + "`$XDG_CONFIG_HOME/tensorguard/tgctl.yaml`" + `).
TLS trust likewise: --ca-file/--ca-hash, else TG_CA_FILE/TG_CA_HASH, else the context.
Every command prints a table by default and the API's JSON with -o json.`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true},
	}
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	root.SetIn(a.Stdin)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.global.server, "server", "", "control-plane URL, e.g. https://cp.example:8000 (env TG_BASE_URL)")
	pf.StringVar(&a.global.apiKey, "api-key", "", "operator API key tgk_… (env TG_API_KEY)")
	pf.StringVar(&a.global.caFile, "ca-file", "", "trust only the CA certificates in this PEM file (env TG_CA_FILE)")
	pf.StringVar(&a.global.caHash, "ca-hash", "", "pin the platform CA: sha256:<hex> of its DER (env TG_CA_HASH)")
	pf.StringVar(&a.global.context, "context", "", "the named context of the context file to use")
	pf.StringVarP(&a.global.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&a.global.timeout, "timeout", client.DefaultTimeout, "timeout of each API request")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		switch a.global.output {
		case "table", "json":
			return nil
		}
		return usagef("-o %q: want table or json", a.global.output)
	}
	addCommands(root, a)
	root.AddCommand(manpage.Command(root, manpage.Header{Source: "TensorGuardFlow " + version()}))
	wrapRunErrors(root)
	return root
}

// addCommands registers every subcommand. Commands that need no server
// (version, and `tgctl dp` when it lands: pure computation, JSON on stdout)
// simply never call a.client(); nothing else is needed to add one.
func addCommands(root *cobra.Command, a *App) {
	root.AddCommand(
		a.loginCmd(),
		a.logoutCmd(),
		a.contextCmd(),
		a.whoamiCmd(),
		a.caCmd(),
		a.operatorCmd(),
		a.apikeyCmd(),
		a.fleetCmd(),
		a.tokenCmd(),
		a.deviceCmd(),
		a.attestCmd(),
		a.attestationCmd(),
		a.policyCmd(),
		a.rolloutCmd(),
		a.publisherCmd(),
		a.packageCmd(),
		a.auditCmd(),
		a.mqttCmd(),
		a.versionCmd(),
		a.dpCmd(),
	)
}

// wrapRunErrors marks what every RunE returns as a runtime failure (exit 1)
// unless it is already a usage error, so Main can tell them apart from the
// errors cobra returns for a bad command line.
func wrapRunErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			err := run(cmd, args)
			var ue *usageError
			if err == nil || errors.As(err, &ue) {
				return err
			}
			return &runError{err}
		}
	}
	// Wrong arguments are a usage error, with the command's usage line.
	if c.Args != nil {
		args := c.Args
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usagef("%s: %v (usage: %s)", cmd.CommandPath(), err, cmd.UseLine())
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapRunErrors(sub)
	}
}

// version returns the version string.
func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func (a *App) userAgent() string { return "tgctl/" + version() }
