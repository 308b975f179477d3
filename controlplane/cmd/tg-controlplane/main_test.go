package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane"
)

func TestExitCodes(t *testing.T) {
	t.Setenv("TG_ENVIRONMENT", "")
	t.Setenv("TG_KEY_MASTER", "")
	t.Setenv("DATABASE_URL", "")
	dir := t.TempDir()
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"version", []string{"version"}, 0, "tg-controlplane ", ""},
		{"man", []string{"man"}, 0, `.TH "TG\-CONTROLPLANE" "1"`, ""},
		{"completion", []string{"completion", "zsh"}, 0, "#compdef tg-controlplane", ""},
		{"unknown command", []string{"bogus"}, 2, "", "unknown command"},
		{"unknown flag", []string{"serve", "--nope"}, 2, "", "unknown flag"},
		{"init without tenant", []string{"init", "--data-dir", dir}, 2, "", "--tenant is required"},
		{"stray argument", []string{"serve", "x"}, 2, "", "unexpected arguments"},
		{"init", []string{"init", "--tenant", "acme", "--data-dir", dir, "-o", "json"}, 0, `"api_key": "tgk_`, ""},
		{"init twice", []string{"init", "--tenant", "acme", "--data-dir", dir}, 1, "", "tenant already exists"},
		{"bad tenant", []string{"init", "--tenant", "Not_A_Slug", "--data-dir", dir}, 1, "", "must match"},
		{"missing config", []string{"serve", "--config", filepath.Join(dir, "missing.yaml")}, 2, "", "read config"},
		{"mosquitto-config", []string{"mosquitto-config", "--data-dir", dir, "--out", filepath.Join(dir, "mosq")}, 0, "require_certificate true", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if code != 0 && strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
				t.Errorf("stderr is not one line: %q", errb.String())
			}
		})
	}
	for _, f := range []string{"ca.pem", "crl.pem", "server.crt", "server.key", "acl", "controlplane.crt", "controlplane.key", "mosquitto.conf"} {
		if _, err := os.Stat(filepath.Join(dir, "mosq", f)); err != nil {
			t.Errorf("mosquitto-config: %v", err)
		}
	}
	acl, _ := os.ReadFile(filepath.Join(dir, "mosq", "acl"))
	if !strings.Contains(string(acl), "user controlplane") || !strings.Contains(string(acl), "user op-") {
		t.Errorf("ACL lacks the control plane or the admin operator:\n%s", acl)
	}
}

// The control-plane .deb's default configuration parses, points at the
// unit's StateDirectory, and is refused only for the one decision it leaves
// to the operator (whose EK certificates to trust).
func TestPackagedConfig(t *testing.T) {
	t.Setenv("TG_ENVIRONMENT", "")
	t.Setenv("DATABASE_URL", "")
	t.Setenv("TG_KEY_MASTER", strings.Repeat("ab", 32))
	t.Setenv("TG_SECRET_KEY", strings.Repeat("s", 32))
	cfg, err := controlplane.LoadConfig(filepath.Join("..", "..", "..", "packaging", "controlplane", "controlplane.yaml"), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Finish()
	if !cfg.Production() || cfg.DataDir != controlplane.DefaultProdDataDir {
		t.Errorf("environment %q, data_dir %q; want production, %s", cfg.Environment, cfg.DataDir, controlplane.DefaultProdDataDir)
	}
	err = cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "enrollment.ek_roots") || strings.Count(err.Error(), "\n") != 0 {
		t.Fatalf("Validate() = %v; want only the ek_roots error", err)
	}
	cfg.Enrollment.EKRoots = []string{"/etc/tensorguard/ek-roots/vendor.pem"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("with ek_roots set: %v", err)
	}
}
