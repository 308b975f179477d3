package tgctl

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// env is a test's environment: variables (nothing from the real process)
// and a private config directory.
type env map[string]string

func newEnv(t *testing.T) env {
	t.Helper()
	return env{"XDG_CONFIG_HOME": t.TempDir(), "HOME": t.TempDir()}
}

func (e env) configPath() string {
	return filepath.Join(e["XDG_CONFIG_HOME"], "tensorguard", "tgctl.yaml")
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs tgctl in-process with args and the environment e.
func run(t *testing.T, e env, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	a := &App{
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errb,
		Getenv: func(k string) string { return e[k] },
	}
	code := a.Main(context.Background(), args)
	return result{out.String(), errb.String(), code}
}

// mustRun runs tgctl and fails the test unless it exits 0.
func mustRun(t *testing.T, e env, args ...string) string {
	t.Helper()
	r := run(t, e, "", args...)
	if r.code != 0 {
		t.Fatalf("tgctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// noSecret fails if s shows key.
func noSecret(t *testing.T, key string, outputs ...string) {
	t.Helper()
	for _, s := range outputs {
		if key != "" && strings.Contains(s, key) {
			t.Fatalf("output shows the API key:\n%s", s)
		}
	}
}
