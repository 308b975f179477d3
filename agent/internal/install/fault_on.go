//go:build faultinject

package install

// Fault injection for the end-to-end tests over real binaries
// (integration/): compiled only with -tags faultinject, never into an agent
// we ship (fault_off.go is the default build; a test in integration/
// checks the shipped binary has none of this). The environment arms it:
//
//	TG_FAULT_SELFTEST=1     every self-test fails, as a model computing other
//	                        outputs than its test vectors would
//	TG_FAULT_KILL_AT=POINT  the agent SIGKILLs itself at checkpoint POINT
//	                        (e.g. persisted:key_grant, download:partial)
//	TG_FAULT_DIR=D          switches a test flips while the agent runs:
//	                        while D/selftest-fail exists every self-test
//	                        fails; while D/hold@POINT exists the pipeline
//	                        waits at checkpoint POINT
//
// The checkpoints are the ones the package's own crash tests stop at
// (Installer.checkpoint).

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// FaultInjection reports whether this build has the fault hooks: true with
// the faultinject build tag.
const FaultInjection = true

// The environment variables that arm the faults, and the switch files of
// EnvFaultDir.
const (
	EnvFaultSelfTest  = "TG_FAULT_SELFTEST"
	EnvFaultKillAt    = "TG_FAULT_KILL_AT"
	EnvFaultDir       = "TG_FAULT_DIR"
	FaultSelfTestFile = "selftest-fail"
	FaultHoldPrefix   = "hold@"
)

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// faultHook returns the checkpoint hook the environment arms, or nil.
func faultHook(log *slog.Logger) func(point string) bool {
	kill, dir := os.Getenv(EnvFaultKillAt), os.Getenv(EnvFaultDir)
	if kill == "" && dir == "" {
		return nil
	}
	if log == nil {
		log = slog.Default()
	}
	log.Warn("FAULT INJECTION armed (test build)", "kill_at", kill, "dir", dir)
	return func(point string) bool {
		if dir != "" {
			hold := filepath.Join(dir, FaultHoldPrefix+point)
			for logged := false; exists(hold); logged = true {
				if !logged {
					log.Warn("FAULT INJECTION: holding", "point", point, "while", hold)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		if point == kill {
			log.Warn("FAULT INJECTION: SIGKILL", "point", point)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
		return false
	}
}

// faultSelfTest fails the self-test when the environment says so.
func faultSelfTest() error {
	switch dir := os.Getenv(EnvFaultDir); {
	case os.Getenv(EnvFaultSelfTest) == "1":
		return errors.New("fault injection: " + EnvFaultSelfTest + "=1 fails every self-test")
	case dir != "" && exists(filepath.Join(dir, FaultSelfTestFile)):
		return errors.New("fault injection: " + filepath.Join(dir, FaultSelfTestFile) + " fails every self-test")
	}
	return nil
}
