package integration

import (
	"bytes"
	"os"
	"testing"
)

// TestShippedAgentHasNoFaultHooks: the tg-agent built as shipped (no build
// tags) holds none of the fault hooks the rollout tests use
// (agent/internal/install/fault_on.go, build tag faultinject), while the
// faultinject build does — so this check can fail.
func TestShippedAgentHasNoFaultHooks(t *testing.T) {
	for _, c := range []struct {
		bin   string
		hooks bool
	}{{bins.agent, false}, {bins.faultAgent, true}} {
		b, err := os.ReadFile(c.bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"TG_FAULT_KILL_AT", "TG_FAULT_DIR", "TG_FAULT_SELFTEST", "FAULT INJECTION", "selftest-fail"} {
			if bytes.Contains(b, []byte(s)) != c.hooks {
				t.Errorf("%s: contains %q: %t, want %t", c.bin, s, !c.hooks, c.hooks)
			}
		}
	}
}
