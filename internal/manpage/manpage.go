// Package manpage renders a cobra command tree as one roff manual page
// (section 1) and provides the hidden `man` subcommand that prints it. The
// .deb packages ship the pages it writes at build time (packaging/), so the
// pages always describe the binary they came with.
//
// The page is self-contained roff (man(7) macros only) with every input
// escaped: text never starts a request, and backslashes and hyphens are
// written as roff escapes, so `man --warnings` and lintian find nothing to
// report. Hidden commands, help and completion are left out of COMMANDS;
// completion has a section of its own.
package manpage

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Header is what the page's .TH line carries besides the name.
type Header struct {
	// Date is the page's date, e.g. "2026-01-31" (empty: none, which
	// keeps builds reproducible).
	Date string
	// Source is the product and version, e.g. "TensorGuardFlow 1.2.3".
	Source string
	// Manual is the manual's title; default "TensorGuardFlow Manual".
	Manual string
}

// Write renders root and every visible subcommand as one page.
func Write(w io.Writer, root *cobra.Command, h Header) error {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	if h.Manual == "" {
		h.Manual = "TensorGuardFlow Manual"
	}
	p := &page{}
	name := root.Name()
	p.req(".TH", strings.ToUpper(name), "1", h.Date, h.Source, h.Manual)
	p.req(".SH", "NAME")
	p.text(name + " - " + root.Short)
	p.req(".SH", "SYNOPSIS")
	p.req(".B", name)
	p.text("[options] command [arguments]")
	p.req(".SH", "DESCRIPTION")
	p.para(description(root))
	if fs := visibleFlags(root.NonInheritedFlags()); len(fs) > 0 {
		p.req(".SH", "OPTIONS")
		p.flags(fs)
	}
	p.req(".SH", "COMMANDS")
	for _, c := range commands(root) {
		p.command(c)
	}
	p.req(".SH", "SHELL COMPLETION")
	p.text("The packages install completion for bash, zsh and fish;")
	p.req(".B", name+" completion bash|zsh|fish")
	p.text("prints the script for a shell.")
	p.req(".SH", "EXIT STATUS")
	p.text("0 on success; otherwise non-zero with a one-line reason on standard error (see")
	p.req(".B", name+" --help")
	p.text("for each command).")
	p.req(".SH", "SEE ALSO")
	p.text("The project's documentation: https://github.com/tensorguard/tensorguardflow")
	_, err := io.WriteString(w, p.b.String())
	return err
}

// Command is the hidden `man` subcommand: it prints root's page on standard
// output.
func Command(root *cobra.Command, h Header) *cobra.Command {
	return &cobra.Command{
		Use:    "man",
		Short:  "Print the manual page (roff) on standard output",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return Write(c.OutOrStdout(), root, h)
		},
	}
}

// commands lists the visible subcommands depth-first, parents before
// children, in cobra's (sorted) order.
func commands(c *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, sub := range c.Commands() {
		// cobra's completion command is described once, in SHELL
		// COMPLETION, not with its generated per-shell help.
		if !sub.IsAvailableCommand() || sub.IsAdditionalHelpTopicCommand() || sub.Name() == "completion" {
			continue
		}
		if sub.Runnable() {
			out = append(out, sub)
		}
		out = append(out, commands(sub)...)
	}
	return out
}

func description(c *cobra.Command) string {
	if c.Long != "" {
		return c.Long
	}
	return c.Short
}

func visibleFlags(fs *pflag.FlagSet) []*pflag.Flag {
	var out []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && f.Name != "help" {
			out = append(out, f)
		}
	})
	return out
}

type page struct{ b strings.Builder }

// req writes a request with quoted, escaped arguments.
func (p *page) req(name string, args ...string) {
	p.b.WriteString(name)
	for _, a := range args {
		p.b.WriteString(` "` + strings.ReplaceAll(escape(a), `"`, `\(dq`) + `"`)
	}
	p.b.WriteByte('\n')
}

// text writes running text, one output line per input line.
func (p *page) text(s string) {
	for _, line := range strings.Split(s, "\n") {
		line = escape(line)
		if line == "" {
			p.b.WriteString(".PP\n")
			continue
		}
		// A line starting with a control character would be a request.
		if line[0] == '.' || line[0] == '\'' {
			line = `\&` + line
		}
		p.b.WriteString(line + "\n")
	}
}

// para writes text as a no-fill block when it looks preformatted (tables,
// indented examples) and as filled paragraphs otherwise.
func (p *page) para(s string) {
	s = strings.TrimRight(s, "\n")
	if strings.Contains(s, "\n ") || strings.Contains(s, "\n\t") || strings.Contains(s, "  ") {
		p.b.WriteString(".nf\n")
		p.text(s)
		p.b.WriteString(".fi\n")
		return
	}
	p.text(s)
}

func (p *page) command(c *cobra.Command) {
	p.req(".SS", c.CommandPath()+strings.TrimPrefix(c.UseLine(), c.CommandPath()))
	p.para(description(c))
	for _, f := range visibleFlags(c.NonInheritedFlags()) {
		p.flag(f)
	}
}

func (p *page) flags(fs []*pflag.Flag) {
	for _, f := range fs {
		p.flag(f)
	}
}

func (p *page) flag(f *pflag.Flag) {
	spec := "--" + f.Name
	if f.Shorthand != "" {
		spec = "-" + f.Shorthand + ", " + spec
	}
	if f.Value.Type() != "bool" {
		spec += " " + f.Value.Type()
	}
	p.req(".TP")
	p.req(".B", spec)
	usage := f.Usage
	if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" && f.DefValue != "0" {
		usage += fmt.Sprintf(" (default %s)", f.DefValue)
	}
	p.text(usage)
}

// escape makes s literal roff text: backslashes and hyphens become
// escapes (a bare "-" may be typeset as a hyphen, breaking copied flags).
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	return s
}
