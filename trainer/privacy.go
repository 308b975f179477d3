package trainer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/tensorguard/tensorguardflow/internal/dpaccount"
	"github.com/tensorguard/tensorguardflow/trainer/client"
)

// Default DP settings.
const (
	defaultDelta       = 1e-5
	defaultMaxGradNorm = 1.0
)

// resolveDP checks a client's DP configuration and fills its defaults:
// the sample rate from dataset_size and batch_size, the accountant, δ, and
// the noise multiplier from the target ε and planned steps when it is not
// given.
func resolveDP(c *client.DPConfig) (DPParams, error) {
	if !c.Enabled {
		return DPParams{}, nil
	}
	bad := func(format string, args ...any) (DPParams, error) {
		return DPParams{}, fmt.Errorf("dp_config: "+format, args...)
	}
	if c.Accountant == "" {
		c.Accountant = string(dpaccount.RDP)
	}
	kind, err := dpaccount.ParseKind(c.Accountant)
	if err != nil {
		return bad("accountant: %v", err)
	}
	switch {
	case c.SampleRate != 0 && (c.DatasetSize != 0 || c.BatchSize != 0):
		return bad("give sample_rate or dataset_size and batch_size, not both")
	case c.SampleRate == 0 && c.DatasetSize > 0 && c.BatchSize > 0 && c.BatchSize <= c.DatasetSize:
		c.SampleRate = float64(c.BatchSize) / float64(c.DatasetSize)
	case c.SampleRate == 0:
		return bad("sampling needs sample_rate (Poisson rate q) or dataset_size and batch_size (q = batch/dataset)")
	}
	if !(c.SampleRate > 0 && c.SampleRate <= 1) {
		return bad("sample_rate %v must be in (0, 1]", c.SampleRate)
	}
	if c.TargetDelta == 0 {
		c.TargetDelta = defaultDelta
	}
	if !(c.TargetDelta > 0 && c.TargetDelta < 1) {
		return bad("target_delta %v must be in (0, 1)", c.TargetDelta)
	}
	if c.MaxGradNorm == 0 {
		c.MaxGradNorm = defaultMaxGradNorm
	}
	if !(c.MaxGradNorm > 0) || math.IsInf(c.MaxGradNorm, 0) {
		return bad("max_grad_norm %v must be positive", c.MaxGradNorm)
	}
	if c.TargetEpsilon < 0 || math.IsNaN(c.TargetEpsilon) || math.IsInf(c.TargetEpsilon, 0) {
		return bad("target_epsilon %v must be positive", c.TargetEpsilon)
	}
	if c.NoiseMultiplier == 0 {
		if c.TargetEpsilon == 0 || c.PlannedSteps <= 0 {
			return bad("noise_multiplier is required (or target_epsilon with planned_steps, to have it computed)")
		}
		sigma, err := dpaccount.NoiseMultiplier(kind, c.SampleRate, c.PlannedSteps, c.TargetDelta, c.TargetEpsilon)
		if err != nil {
			return bad("no noise multiplier reaches ε=%g in %d steps: %v", c.TargetEpsilon, c.PlannedSteps, err)
		}
		c.NoiseMultiplier = sigma
	}
	if !(c.NoiseMultiplier > 0) || math.IsInf(c.NoiseMultiplier, 0) {
		return bad("noise_multiplier %v must be positive", c.NoiseMultiplier)
	}
	return DPParams{Enabled: true, NoiseMultiplier: c.NoiseMultiplier, MaxGradNorm: c.MaxGradNorm, SampleRate: c.SampleRate}, nil
}

// ledger is the privacy spent by a client: the DP steps taken, grouped by
// their (q, σ). It is stored as JSON with the client.
type ledger []dpaccount.Event

func parseLedger(s string) (ledger, error) {
	var l ledger
	if s == "" {
		return l, nil
	}
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, fmt.Errorf("privacy ledger: %w", err)
	}
	return l, nil
}

func (l ledger) add(q, sigma float64, steps int) ledger {
	if n := len(l); n > 0 && l[n-1].SampleRate == q && l[n-1].NoiseMultiplier == sigma {
		out := append(ledger(nil), l...)
		out[n-1].Steps += steps
		return out
	}
	return append(append(ledger(nil), l...), dpaccount.Event{SampleRate: q, NoiseMultiplier: sigma, Steps: steps})
}

func (l ledger) steps() int64 {
	var n int64
	for _, e := range l {
		n += int64(e.Steps)
	}
	return n
}

func (l ledger) String() string {
	b, _ := json.Marshal(l)
	return string(b)
}

// epsilon is the ε spent (the accountant's upper bound: PRV's high end).
func (l ledger) epsilon(dp client.DPConfig) (float64, error) {
	if len(l) == 0 {
		return 0, nil
	}
	r, err := dpaccount.Epsilon(dpaccount.Kind(dp.Accountant), l, dp.TargetDelta)
	if err != nil {
		return 0, err
	}
	return r.EpsilonHigh, nil
}

// errBudget is a step the privacy budget does not allow.
var errBudget = errors.New("DP_BUDGET_EXCEEDED")

// checkBudget refuses taking more steps when ε after them would exceed the
// target (no target: no limit).
func checkBudget(l ledger, dp client.DPConfig, more int) error {
	if !dp.Enabled || dp.TargetEpsilon == 0 || more <= 0 {
		return nil
	}
	eps, err := l.add(dp.SampleRate, dp.NoiseMultiplier, more).epsilon(dp)
	if err != nil {
		return err
	}
	if eps > dp.TargetEpsilon {
		spent, _ := l.epsilon(dp)
		return fmt.Errorf("%w: %d more step(s) would spend ε=%.4g of target_epsilon %g (spent so far %.4g after %d steps)",
			errBudget, more, eps, dp.TargetEpsilon, spent, l.steps())
	}
	return nil
}

// remainingSteps is how many more steps fit the budget (binary search).
func remainingSteps(l ledger, dp client.DPConfig) int64 {
	if !dp.Enabled || dp.TargetEpsilon == 0 {
		return 0
	}
	lo, hi := 0, 1
	for checkBudget(l, dp, hi) == nil && hi < 1<<30 {
		lo, hi = hi, hi*2
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if checkBudget(l, dp, mid) == nil {
			lo = mid
		} else {
			hi = mid
		}
	}
	return int64(lo)
}

func privacyView(l ledger, dp client.DPConfig) (client.Privacy, error) {
	p := client.Privacy{Enabled: dp.Enabled, Steps: l.steps()}
	if !dp.Enabled {
		return p, nil
	}
	eps, err := l.epsilon(dp)
	if err != nil {
		return p, err
	}
	p.Accountant, p.Epsilon, p.Delta = dp.Accountant, eps, dp.TargetDelta
	p.SampleRate, p.NoiseMultiplier, p.TargetEpsilon = dp.SampleRate, dp.NoiseMultiplier, dp.TargetEpsilon
	if dp.TargetEpsilon > 0 {
		p.RemainingEpsilon = math.Max(0, dp.TargetEpsilon-eps)
		p.RemainingSteps = remainingSteps(l, dp)
	}
	return p, nil
}
