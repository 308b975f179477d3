package tgctl

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/internal/dpaccount"
)

// dpJSON runs tgctl with args, which must succeed without any server or
// context, and decodes its JSON output.
func dpJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	r := run(t, newEnv(t), "", args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("tgctl %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("tgctl %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
	return out
}

func TestDpEpsilon(t *testing.T) {
	t.Parallel()
	const q, sigma, steps, delta = 256.0 / 60000, 1.1, 14062, 1e-5
	events := []dpaccount.Event{{SampleRate: q, NoiseMultiplier: sigma, Steps: steps}}
	for _, kind := range []dpaccount.Kind{dpaccount.RDP, dpaccount.PRV, dpaccount.Moments} {
		want, err := dpaccount.Epsilon(kind, events, delta)
		if err != nil {
			t.Fatal(err)
		}
		out := dpJSON(t, "dp", "epsilon", "--accountant", string(kind), "--sample-rate", "0.004266666666666667",
			"--noise-multiplier", "1.1", "--steps", "14062", "--delta", "1e-5")
		if out["accountant"] != string(kind) || out["epsilon"] != want.Epsilon || out["delta"] != delta ||
			out["sample_rate"] != q || out["noise_multiplier"] != sigma || out["steps"] != float64(steps) {
			t.Errorf("%s: %v, want ε %v for the run", kind, out, want.Epsilon)
		}
		_, hasOrder := out["optimal_order"]
		_, hasBounds := out["epsilon_high"]
		if kind == dpaccount.PRV {
			if hasOrder || !hasBounds || out["epsilon_low"] != want.EpsilonLow || out["epsilon_high"] != want.EpsilonHigh ||
				out["eps_error"] != 0.01 || out["delta_error"] != want.DeltaError {
				t.Errorf("prv: %v", out)
			}
		} else if !hasOrder || hasBounds || out["optimal_order"] != want.Order {
			t.Errorf("%s: %v, want optimal_order %v and no bounds", kind, out, want.Order)
		}
	}
}

// TestDpRunFlags checks the two ways to give the sampling rate and the
// length of the run.
func TestDpRunFlags(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args      []string
		wantQ     float64
		wantSteps float64
	}{
		// TF Privacy's compute_dp_sgd_privacy counts ceil(60·60000/256).
		{[]string{"--batch-size", "256", "--dataset-size", "60000", "--epochs", "60"}, 256.0 / 60000, 14063},
		{[]string{"--batch-size", "256", "--dataset-size", "60000", "--steps", "14062"}, 256.0 / 60000, 14062},
		// 60/0.004 is 15000.000000000002 in floating point: still 15000.
		{[]string{"--sample-rate", "0.004", "--epochs", "60"}, 0.004, 15000},
		{[]string{"--sample-rate", "0.004", "--epochs", "0.5"}, 0.004, 125},
		{[]string{"--sample-rate", "0.3", "--epochs", "1"}, 0.3, 4},
		{[]string{"--sample-rate", "1", "--steps", "0"}, 1, 0},
	} {
		args := append([]string{"dp", "epsilon", "--noise-multiplier", "1.1", "--delta", "1e-5"}, tt.args...)
		out := dpJSON(t, args...)
		if out["sample_rate"] != tt.wantQ || out["steps"] != tt.wantSteps {
			t.Errorf("%v: q %v, steps %v; want %v, %v", tt.args, out["sample_rate"], out["steps"], tt.wantQ, tt.wantSteps)
		}
		_, hasBatch := out["batch_size"]
		_, hasEpochs := out["epochs"]
		if hasBatch != (tt.args[0] == "--batch-size") || hasEpochs != strings.Contains(strings.Join(tt.args, " "), "--epochs") {
			t.Errorf("%v: output %v should echo exactly the run flags given", tt.args, out)
		}
	}
	// No steps, no privacy spent.
	if out := dpJSON(t, "dp", "epsilon", "--sample-rate", "1", "--steps", "0", "--noise-multiplier", "1", "--delta", "1e-5"); out["epsilon"] != 0.0 {
		t.Errorf("0 steps: %v", out)
	}
}

func TestDpNoise(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		accountant string
		tol        float64
	}{{"rdp", dpaccount.NoiseRelTolerance}, {"moments", dpaccount.NoiseRelTolerance}, {"prv", dpaccount.NoiseRelTolerancePRV}} {
		out := dpJSON(t, "dp", "noise", "--accountant", tt.accountant, "--batch-size", "256", "--dataset-size", "60000",
			"--epochs", "60", "--delta", "1e-5", "--target-epsilon", "3")
		sigma, _ := out["noise_multiplier"].(float64)
		bound := out["epsilon"]
		if tt.accountant == "prv" {
			bound = out["epsilon_high"]
		}
		if out["target_epsilon"] != 3.0 || out["steps"] != 14063.0 || !(sigma > 0.9 && sigma < 1.2) || !(bound.(float64) <= 3) {
			t.Errorf("%s: %v", tt.accountant, out)
			continue
		}
		// Just below the answer, the target is missed.
		kind, _ := dpaccount.ParseKind(tt.accountant)
		r, err := dpaccount.Epsilon(kind, []dpaccount.Event{{SampleRate: 256.0 / 60000, NoiseMultiplier: sigma / (1 + 2*tt.tol), Steps: 14063}}, 1e-5)
		if err != nil || r.EpsilonHigh <= 3 {
			t.Errorf("%s: σ/(1+2·tol) still meets ε = 3 (%v, %v): σ = %v is not the smallest", tt.accountant, r.EpsilonHigh, err, sigma)
		}
	}
}

// TestDpErrors checks that bad command lines exit 2 and unanswerable
// questions exit 1, each with one line saying why and nothing on stdout.
func TestDpErrors(t *testing.T) {
	t.Parallel()
	run0 := []string{"--sample-rate", "0.01", "--steps", "100", "--delta", "1e-5"}
	eps := func(extra ...string) []string {
		return append(append([]string{"dp", "epsilon", "--noise-multiplier", "1"}, run0...), extra...)
	}
	for _, tt := range []struct {
		args     []string
		wantCode int
		wantMsg  string
	}{
		{[]string{"dp", "epsilon", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5"}, 2, "sampling rate is required"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--delta", "1e-5"}, 2, "length is required"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "10"}, 2, "--delta is required"},
		{[]string{"dp", "epsilon", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5"}, 2, "--noise-multiplier is required"},
		{eps("--accountant", "gdp"), 2, `--accountant "gdp"`},
		{eps("--batch-size", "256"), 2, "not both"},
		{eps("--epochs", "3"), 2, "--steps or --epochs, not both"},
		{eps("--eps-error", "0.1"), 2, "prv only"},
		{eps("--accountant", "prv", "--delta-error", "NaN"), 2, "finite"},
		{eps("--accountant", "prv", "--delta-error", "1e-4"), 2, "δ error"},
		{eps("--bogus"), 2, "unknown flag: --bogus"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "1", "--batch-size", "256", "--steps", "1", "--delta", "1e-5"}, 2, "go together"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "1", "--batch-size", "600", "--dataset-size", "500", "--steps", "1", "--delta", "1e-5"}, 2, "0 < B ≤ N"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0", "--steps", "1", "--delta", "1e-5"}, 2, "--sample-rate 0"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "1", "--sample-rate", "NaN", "--steps", "1", "--delta", "1e-5"}, 2, "--sample-rate NaN"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "-1", "--delta", "1e-5"}, 2, "--steps -1"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--epochs", "-2", "--delta", "1e-5"}, 2, "--epochs -2"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "1", "--delta", "1"}, 2, "--delta 1"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "-1", "--sample-rate", "0.1", "--steps", "1", "--delta", "1e-5"}, 2, "--noise-multiplier -1"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "x", "--sample-rate", "0.1", "--steps", "1", "--delta", "1e-5"}, 2, "invalid argument"},
		{[]string{"dp", "noise", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5"}, 2, "--target-epsilon is required"},
		{[]string{"dp", "noise", "--sample-rate", "0.1", "--steps", "0", "--delta", "1e-5", "--target-epsilon", "1"}, 2, "at least 1"},
		{[]string{"dp", "noise", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5", "--target-epsilon", "Inf"}, 2, "finite ε"},
		{[]string{"dp", "noise", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5", "--target-epsilon", "1"}, 2, "unknown flag"},
		{[]string{"dp", "epsilon", "extra", "--noise-multiplier", "1", "--sample-rate", "0.1", "--steps", "1", "--delta", "1e-5"}, 2, "unknown command"},
		{[]string{"dp", "nope"}, 2, `unknown command "nope"`},
		// Valid, but no answer in range.
		{[]string{"dp", "epsilon", "--accountant", "prv", "--noise-multiplier", "0.001", "--sample-rate", "0.5", "--steps", "1", "--delta", "1e-5"}, 1, "grid points"},
		{[]string{"dp", "epsilon", "--noise-multiplier", "1e-200", "--sample-rate", "0.5", "--steps", "1", "--delta", "1e-5"}, 1, "ε is unbounded"},
		{[]string{"dp", "noise", "--accountant", "prv", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5", "--target-epsilon", "0.005"}, 1, "eps error"},
	} {
		r := run(t, newEnv(t), "", tt.args...)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		want := 1 // exit 1: one line; exit 2: one line and the usage hint
		if tt.wantCode == ExitUsage {
			want = 2
		}
		if r.code != tt.wantCode || r.stdout != "" || len(lines) != want || !strings.HasPrefix(lines[0], "tgctl: ") || !strings.Contains(lines[0], tt.wantMsg) {
			t.Errorf("tgctl %s: exit %d, stdout %q, stderr %q; want exit %d and one line containing %q",
				strings.Join(tt.args, " "), r.code, r.stdout, r.stderr, tt.wantCode, tt.wantMsg)
		}
	}
}

func TestDpHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"dp"}, {"dp", "--help"}, {"dp", "epsilon", "--help"}, {"dp", "noise", "--help"}} {
		r := run(t, newEnv(t), "", args...)
		if r.code != 0 {
			t.Fatalf("tgctl %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
		for _, want := range []string{"rdp", "prv", "moments", "--batch-size", "--epochs", "Balle", "docs/privacy.md"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("tgctl %s: help does not mention %s", strings.Join(args, " "), want)
			}
		}
	}
	// The example in the help is what the command prints.
	out := dpJSON(t, "dp", "epsilon", "--batch-size", "256", "--dataset-size", "60000", "--epochs", "60", "--noise-multiplier", "1.1", "--delta", "1e-5")
	if e := out["epsilon"].(float64); math.Floor(e*100) != 259 || out["optimal_order"] != 8.1 {
		t.Errorf("help example: %v", out)
	}
}
