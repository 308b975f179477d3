package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/agent"
)

func TestExitCodesAndOutput(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	state := filepath.Join(dir, "agent.db")
	if err := os.WriteFile(good, []byte("version: 1\nserver_url: https://cp:8000\nstate_path: "+state+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sim := filepath.Join(dir, "sim.yaml")
	if err := os.WriteFile(sim, []byte("version: 1\nserver_url: https://cp:8000\nca_hash: sha256:"+strings.Repeat("ab", 32)+
		"\nstate_path: "+filepath.Join(dir, "sim.db")+"\ntpm: {simulator: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: 1\nserver_url: https://cp:8000\nsurprise: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args     []string
		code     int
		stdout   string
		stderrIn string
	}{
		{args: []string{"version"}, stdout: "tg-agent "},
		{args: []string{"version", "-o", "json"}, stdout: `"version"`},
		{args: []string{"man"}, stdout: `.TH "TG\-AGENT" "1"`},
		{args: []string{"completion", "bash"}, stdout: "__start_tg-agent"},
		{args: []string{"completion", "fish"}, stdout: "complete -c tg-agent"},
		{args: []string{"version", "-o", "yaml"}, code: 2, stderrIn: "--output"},
		{args: []string{"frobnicate"}, code: 2, stderrIn: "unknown command"},
		{args: []string{"run", "--nope"}, code: 2, stderrIn: "unknown flag"},
		{args: []string{"run", "--config", bad}, code: 2, stderrIn: "surprise"},
		{args: []string{"run", "--config", filepath.Join(dir, "missing.yaml")}, code: 2, stderrIn: "read config"},
		{args: []string{"status", "--config", good}, stdout: "enrolled  false"},
		{args: []string{"status", "--config", good, "-o", "json"}, stdout: `"enrolled": false`},
		{args: []string{"enroll", "--config", sim}, code: 2, stderrIn: "not enrolled"},
		{args: []string{"enroll", "--server", "http://cp", "--config", good}, code: 2, stderrIn: "server_url"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Setenv("TG_ENVIRONMENT", "")
			t.Setenv("TG_ENROLL_TOKEN", "")
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, errb.String())
			}
			if !strings.Contains(out.String(), tc.stdout) {
				t.Fatalf("stdout %q, want it to contain %q", out.String(), tc.stdout)
			}
			if tc.code != 0 {
				lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
				last := lines[len(lines)-1]
				if !strings.HasPrefix(last, "tg-agent: ") || !strings.Contains(last, tc.stderrIn) {
					t.Fatalf("stderr %q, want a last line 'tg-agent: …%s…'", errb.String(), tc.stderrIn)
				}
			}
			if strings.Contains(strings.Join(tc.args, " "), "-o json") && tc.code == 0 && !json.Valid(out.Bytes()) {
				t.Fatalf("not JSON: %s", out.String())
			}
		})
	}
}

// The agent .deb's default configuration parses, keeps its state in the
// unit's StateDirectory, and is refused until the operator names the
// control plane.
func TestPackagedConfig(t *testing.T) {
	t.Setenv("TG_ENVIRONMENT", "production")
	cfg, err := agent.LoadConfig(filepath.Join("..", "..", "..", "packaging", "agent", "agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StatePath != agent.DefaultStatePath || filepath.Dir(cfg.StatePath) != "/var/lib/tensorguard/agent" {
		t.Errorf("state_path %q; want %q in the unit's StateDirectory", cfg.StatePath, agent.DefaultStatePath)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "server_url") {
		t.Fatalf("Validate() = %v; want the missing server_url named", err)
	}
}
