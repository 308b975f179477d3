package dpsgd

import (
	"errors"
	"fmt"
	"math"
)

// Config holds the DP-SGD and optimizer settings of one training run.
type Config struct {
	// Enabled turns DP-SGD on: per-example clipping to MaxGradNorm and
	// Gaussian noise of standard deviation NoiseMultiplier·MaxGradNorm.
	// Off, a step uses the plain mean gradient of the batch.
	Enabled bool
	// NoiseMultiplier is σ: the noise standard deviation in units of
	// MaxGradNorm. 0 is allowed (clipping only, no privacy).
	NoiseMultiplier float64
	// MaxGradNorm is C, the bound on every example's gradient L2 norm over
	// all parameters jointly.
	MaxGradNorm float64
	// SampleRate is q, the Poisson sampling probability of each example per
	// step, the value the accountant is given.
	SampleRate float64
	// DatasetSize is N, the number of examples the batches are sampled
	// from. With DP on, the noised gradient sum is divided by the expected
	// batch size q·N (not the realised one: dividing by a data-dependent
	// count would leak it).
	DatasetSize int

	// AdamW: learning rate, moment decay rates, epsilon and decoupled
	// weight decay (θ ← θ·(1 − LR·WeightDecay) before the Adam update).
	LR, Beta1, Beta2, Eps, WeightDecay float64

	// Seed derives the parameter initialisation, and, only when the
	// environment says TG_DETERMINISTIC=true, the noise and the sampling.
	Seed uint64

	// PerExample selects how per-example gradients are computed; the zero
	// value is the fastest measured (see the package doc).
	PerExample PerExampleMethod

	// BucketMultiple pads a batch up to the next multiple of this size, so
	// the variable Poisson batch sizes share a few compiled graphs.
	// 0 means 32.
	BucketMultiple int
	// MaxPhysicalBatch splits a larger logical batch into pieces of at most
	// this many examples (memory bound); 0 means no limit.
	MaxPhysicalBatch int
}

// PerExampleMethod is a way of computing per-example gradients.
type PerExampleMethod int

const (
	// PerExampleTapped backpropagates through the linear operations by
	// hand and forms per-example weight gradients from (input, output
	// gradient) pairs: ghost norms for dense layers, one batched product
	// for convolutions.
	PerExampleTapped PerExampleMethod = iota
	// PerExampleExpanded is Opacus' "expanded weights": every weight is
	// broadcast to one copy per example and GoMLX's autodiff returns the
	// gradient of each copy. Kept for comparison; slower here.
	PerExampleExpanded
)

// DefaultConfig returns DP on, σ=1.0, C=1.0, and Adam's usual constants.
// SampleRate and DatasetSize have no sensible default.
func DefaultConfig() Config {
	return Config{
		Enabled:         true,
		NoiseMultiplier: 1.0,
		MaxGradNorm:     1.0,
		LR:              1e-3,
		Beta1:           0.9,
		Beta2:           0.999,
		Eps:             1e-8,
		BucketMultiple:  32,
	}
}

// ErrInvalidConfig is wrapped by every Validate failure.
var ErrInvalidConfig = errors.New("invalid dpsgd config")

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if c.Enabled {
		if !finite(c.NoiseMultiplier) || c.NoiseMultiplier < 0 {
			return bad("noise multiplier %v must be >= 0", c.NoiseMultiplier)
		}
		if !finite(c.MaxGradNorm) || c.MaxGradNorm <= 0 {
			return bad("max grad norm %v must be > 0", c.MaxGradNorm)
		}
		if !(c.SampleRate > 0 && c.SampleRate <= 1) {
			return bad("sample rate %v must be in (0, 1]", c.SampleRate)
		}
		if c.DatasetSize <= 0 {
			return bad("dataset size %d must be > 0 with DP on", c.DatasetSize)
		}
	}
	if !finite(c.LR) || c.LR <= 0 {
		return bad("learning rate %v must be > 0", c.LR)
	}
	if !(c.Beta1 >= 0 && c.Beta1 < 1) || !(c.Beta2 >= 0 && c.Beta2 < 1) {
		return bad("betas (%v, %v) must be in [0, 1)", c.Beta1, c.Beta2)
	}
	if !finite(c.Eps) || c.Eps <= 0 {
		return bad("eps %v must be > 0", c.Eps)
	}
	if !finite(c.WeightDecay) || c.WeightDecay < 0 {
		return bad("weight decay %v must be >= 0", c.WeightDecay)
	}
	if c.PerExample != PerExampleTapped && c.PerExample != PerExampleExpanded {
		return bad("unknown per-example method %d", c.PerExample)
	}
	if c.BucketMultiple < 0 || c.MaxPhysicalBatch < 0 {
		return bad("bucket multiple and max physical batch must be >= 0")
	}
	return nil
}

// ExpectedBatchSize is q·N, the divisor of the noised gradient sum.
func (c Config) ExpectedBatchSize() float64 {
	return c.SampleRate * float64(c.DatasetSize)
}
