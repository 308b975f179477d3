package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run invokes the CLI in-process and returns exit code, stdout and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

// mustRun fails the test unless the command exits 0.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := run(t, args...)
	if code != 0 {
		t.Fatalf("tgsp %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// oneLineFailure asserts exit code want and a single "tgsp: ..." line on
// stderr containing substr.
func oneLineFailure(t *testing.T, want int, substr string, args ...string) {
	t.Helper()
	code, _, errs := run(t, args...)
	if code != want {
		t.Fatalf("tgsp %s: exit %d, want %d (stderr %q)", strings.Join(args, " "), code, want, errs)
	}
	if strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, "tgsp: ") {
		t.Fatalf("stderr is not one 'tgsp: ' line: %q", errs)
	}
	if !strings.Contains(errs, substr) {
		t.Fatalf("stderr %q does not mention %q", errs, substr)
	}
}

type fixture struct {
	dir, signer, other, rcpt, wrongRcpt, in, pkg string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	d := t.TempDir()
	f := fixture{
		dir: d, signer: filepath.Join(d, "pub"), other: filepath.Join(d, "other"),
		rcpt: filepath.Join(d, "dev"), wrongRcpt: filepath.Join(d, "dev2"),
		in: filepath.Join(d, "in"), pkg: filepath.Join(d, "p.tgsp"),
	}
	mustRun(t, "keygen", "--kind", "signer", "--out", f.signer)
	mustRun(t, "keygen", "--kind", "signer", "--out", f.other)
	mustRun(t, "keygen", "--kind", "recipient", "--out", f.rcpt)
	mustRun(t, "keygen", "--kind", "recipient", "--out", f.wrongRcpt)
	if err := os.MkdirAll(filepath.Join(f.in, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.in, "sub", "w.bin"), bytes.Repeat([]byte("tgsp"), 50000), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "pack", "--signer-key", f.signer+".key", "--recipient", f.rcpt+".pub",
		"--name", "m", "--version", "2.0.0", "--out", f.pkg, f.in)
	return f
}

func TestCLIRoundTrip(t *testing.T) {
	f := newFixture(t)
	if out := mustRun(t, "verify", "--trust", f.signer+".pub", f.pkg); !strings.HasPrefix(out, "OK m@2.0.0") {
		t.Fatalf("verify output %q", out)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "inspect", f.pkg)), &m); err != nil {
		t.Fatalf("inspect is not JSON: %v", err)
	}
	if m["name"] != "m" || m["version"] != "2.0.0" {
		t.Fatalf("inspect: name %v version %v", m["name"], m["version"])
	}
	out := filepath.Join(f.dir, "out")
	mustRun(t, "unpack", "--trust", f.signer+".pub", "--recipient-key", f.rcpt+".key", "--out", out, f.pkg)
	got, err := os.ReadFile(filepath.Join(out, "sub", "w.bin"))
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte("tgsp"), 50000)) {
		t.Fatalf("unpacked content differs (err %v)", err)
	}
}

func TestCLIFailures(t *testing.T) {
	f := newFixture(t)
	out := filepath.Join(f.dir, "out")

	// A flipped payload byte: verify and unpack name the shard; no OUT_DIR.
	b, err := os.ReadFile(f.pkg)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 1
	bad := filepath.Join(f.dir, "bad.tgsp")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	oneLineFailure(t, 1, "hash mismatch in file sub/w.bin shard 0", "verify", "--trust", f.signer+".pub", bad)
	oneLineFailure(t, 1, "hash mismatch", "unpack", "--trust", f.signer+".pub", "--recipient-key", f.rcpt+".key", "--out", out, bad)
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("OUT_DIR exists after a failed unpack (stat err %v)", err)
	}
	// An empty OUT_DIR given by the user is gone after a failure too.
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	oneLineFailure(t, 1, "hash mismatch", "unpack", "--trust", f.signer+".pub", "--recipient-key", f.rcpt+".key", "--out", out, bad)
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("empty OUT_DIR still exists after a failed unpack (stat err %v)", err)
	}
	entries, _ := os.ReadDir(f.dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tgsp-") {
			t.Fatalf("leftover staging file %s", e.Name())
		}
	}

	oneLineFailure(t, 1, "untrusted signer", "verify", "--trust", f.other+".pub", f.pkg)
	oneLineFailure(t, 1, "not a recipient", "unpack", "--trust", f.signer+".pub", "--recipient-key", f.wrongRcpt+".key", "--out", out, f.pkg)
	oneLineFailure(t, 1, "want a \"TGSP RECIPIENT PRIVATE KEY\"", "unpack", "--trust", f.signer+".pub", "--recipient-key", f.signer+".key", "--out", out, f.pkg)
	oneLineFailure(t, 1, "want a \"TGSP SIGNER PUBLIC KEY\"", "verify", "--trust", f.rcpt+".pub", f.pkg)
	oneLineFailure(t, 1, "malformed package", "verify", "--trust", f.signer+".pub", f.signer+".pub")

	// Private keys readable by others are refused.
	if err := os.Chmod(f.rcpt+".key", 0o640); err != nil {
		t.Fatal(err)
	}
	oneLineFailure(t, 1, "chmod 600", "unpack", "--trust", f.signer+".pub", "--recipient-key", f.rcpt+".key", "--out", out, f.pkg)

	// keygen never overwrites; pack never overwrites and leaves nothing on failure.
	oneLineFailure(t, 1, "refusing to overwrite", "keygen", "--kind", "signer", "--out", f.signer)
	oneLineFailure(t, 1, "exists", "pack", "--signer-key", f.signer+".key", "--recipient", f.rcpt+".pub", "--out", f.pkg, f.in)
	newPkg := filepath.Join(f.dir, "new.tgsp")
	oneLineFailure(t, 1, "version", "pack", "--signer-key", f.signer+".key", "--recipient", f.rcpt+".pub", "--version", "1.0", "--out", newPkg, f.in)
	if err := os.Symlink("/etc/hostname", filepath.Join(f.in, "link")); err != nil {
		t.Fatal(err)
	}
	oneLineFailure(t, 1, "symbolic link", "pack", "--signer-key", f.signer+".key", "--recipient", f.rcpt+".pub", "--out", newPkg, f.in)
	if _, err := os.Stat(newPkg); !os.IsNotExist(err) {
		t.Fatalf("a failed pack left %s behind", newPkg)
	}
	entries, _ = os.ReadDir(f.dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tgsp-") {
			t.Fatalf("leftover temporary file %s", e.Name())
		}
	}
}

func TestCLIUsage(t *testing.T) {
	for _, args := range [][]string{
		{"verify", "x.tgsp"},                        // no --trust
		{"keygen", "--kind", "both", "--out", "x"},  // bad kind
		{"pack", "--out", "x.tgsp", "dir"},          // no keys
		{"unpack", "--trust", "s.pub", "p.tgsp"},    // no --out / key
		{"verify", "--trust", "s.pub"},              // no package
		{"frobnicate"},                              // unknown command
		{"pack", "--expires", "soon", "--out", "x"}, // bad flag value / args
		{"inspect", "--no-such-flag", "p.tgsp"},     // unknown flag
	} {
		code, _, errs := run(t, args...)
		if code != 2 || strings.Count(errs, "\n") != 1 {
			t.Errorf("tgsp %v: exit %d, stderr %q; want exit 2 and one line", args, code, errs)
		}
	}
}
