package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// TestEventLogPath: under systemd, when the unit copied the log into the
// runtime directory, the agent reads the copy; without one (or outside
// systemd), the securityfs file of its TPM.
func TestEventLogPath(t *testing.T) {
	const sysfs = "/sys/kernel/security/tpm0/binary_bios_measurements"
	t.Setenv("RUNTIME_DIRECTORY", "")
	if got := eventLogPath("/dev/tpmrm0"); got != sysfs {
		t.Errorf("outside systemd: %q, want %q", got, sysfs)
	}
	dir := t.TempDir()
	t.Setenv("RUNTIME_DIRECTORY", dir)
	if got := eventLogPath("/dev/tpmrm0"); got != sysfs {
		t.Errorf("runtime directory without a copy: %q, want %q", got, sysfs)
	}
	cred := filepath.Join(dir, EventLogCopy)
	if err := os.WriteFile(cred, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	if got := eventLogPath("/dev/tpmrm0"); got != cred {
		t.Errorf("with the copy: %q, want %q", got, cred)
	}
}
