package manpage

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func testRoot() *cobra.Command {
	root := &cobra.Command{Use: "tg-demo", Short: "A demo tool"}
	run := &cobra.Command{
		Use:   "run",
		Short: "Run it",
		Long:  ".starts with a dot\nback\\slash and --flags",
		RunE:  func(*cobra.Command, []string) error { return nil },
	}
	run.Flags().String("config", "/etc/x.yaml", "config file")
	run.Flags().BoolP("verbose", "v", false, "say more")
	hidden := &cobra.Command{Use: "secret", Hidden: true, RunE: func(*cobra.Command, []string) error { return nil }}
	root.AddCommand(run, hidden)
	return root
}

func TestWrite(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := Write(&b, testRoot(), Header{Source: "TensorGuardFlow 1.0.0"}); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		`.TH "TG\-DEMO" "1" "" "TensorGuardFlow 1.0.0" "TensorGuardFlow Manual"`,
		"tg\\-demo \\- A demo tool\n",
		`.SS "tg\-demo run [flags]"`,
		"\\&.starts with a dot\n",
		"back\\eslash and \\-\\-flags\n",
		`.B "\-\-config string"`,
		"config file (default /etc/x.yaml)\n",
		`.B "\-v, \-\-verbose"`,
		`.SH "SHELL COMPLETION"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	for _, unwanted := range []string{"secret", `"tg\-demo help`, `.SS "tg\-demo completion`} {
		if strings.Contains(page, unwanted) {
			t.Errorf("page has %q (hidden or help):\n%s", unwanted, page)
		}
	}
	for i, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, "'") || (strings.HasPrefix(line, ".") && !isRequest(line)) {
			t.Errorf("line %d is an unintended roff request: %q", i+1, line)
		}
	}
}

func isRequest(line string) bool {
	for _, r := range []string{".TH ", ".SH ", ".SS ", ".B ", ".TP", ".PP", ".nf", ".fi"} {
		if strings.HasPrefix(line, r) {
			return true
		}
	}
	return false
}

func TestCommandPrintsThePage(t *testing.T) {
	t.Parallel()
	root := testRoot()
	root.AddCommand(Command(root, Header{}))
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"man"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), `.TH "TG\-DEMO" "1"`) {
		t.Errorf("man printed %q…", out.String()[:min(len(out.String()), 80)])
	}
	if strings.Contains(out.String(), `"tg\-demo man"`) {
		t.Error("the hidden man command documents itself")
	}
}
