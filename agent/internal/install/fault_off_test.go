//go:build !faultinject

package install

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// TestNoFaultInjectionInDefaultBuild: without the faultinject build tag
// (every agent we ship) the environment of the end-to-end tests' fault
// hooks changes nothing: no checkpoint hook is installed, self-tests are
// not failed, and an install under that environment commits.
// integration/ checks the shipped binary too (no TG_FAULT_ strings).
func TestNoFaultInjectionInDefaultBuild(t *testing.T) {
	t.Setenv("TG_FAULT_SELFTEST", "1")
	t.Setenv("TG_FAULT_KILL_AT", "persisted:"+wire.JobDownloading)
	dir := t.TempDir()
	for _, f := range []string{"selftest-fail", "hold@persisted:" + wire.JobPolicy} { // would fail, would hold for ever
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("TG_FAULT_DIR", dir)
	if FaultInjection {
		t.Fatal("FaultInjection is true in a build without the faultinject tag")
	}
	if faultHook(nil) != nil || faultSelfTest() != nil {
		t.Fatal("fault hooks are active in a build without the faultinject tag")
	}
	e := newEnv(t)
	p := e.start(nil)
	if p.in.cfg.hook != nil {
		t.Error("New installed a checkpoint hook")
	}
	p.stop()
	rec := e.install("job-1", e.pkg(pkgOpts{version: "1.0.0"}))
	if rec.State != wire.JobCommitted {
		t.Fatalf("install under the fault environment: %s (%s: %s), want committed", rec.State, rec.Reason, rec.Detail)
	}
}
