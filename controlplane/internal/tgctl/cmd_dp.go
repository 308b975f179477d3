package tgctl

import (
	"errors"
	"fmt"
	"math"

	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/internal/dpaccount"
)

// tgctl dp: differential-privacy accounting for DP-SGD (DESIGN.md §5).
// Pure computation over internal/dpaccount: no server, no context, JSON on
// stdout whatever -o says.

const dpIntro = `dp computes the privacy of DP-SGD with Poisson sampling: the ε for which a run is
(ε, δ)-DP under add/remove-one adjacency (dp epsilon), or the noise multiplier that
reaches a target ε (dp noise). It needs no server and always prints JSON.

`

const dpHelp = `Accountants (--accountant):
  rdp      Rényi DP of the subsampled Gaussian (Mironov et al. 2019), converted with
           Balle et al. 2020, Thm 21, as current Opacus does; minimized over the
           orders 1.1…10.9, 1.25, 1.75, 2.25, 11…63, 128, 256, 512, 1024. (default)
  prv      numerical composition of privacy random variables (Gopi et al. 2021):
           the tightest; "epsilon" is the estimate and epsilon_low/epsilon_high
           bound the true ε (set by --eps-error, default 0.01, and --delta-error,
           default δ/1000). epsilon_high is the guarantee to quote.
  moments  the moments accountant of Abadi et al. 2016: orders λ = 1…32 and
           ε = min (α(λ) + log(1/δ))/λ; never below rdp, for comparison with old
           figures.

The run: the sampling rate is --sample-rate Q, or --batch-size B with --dataset-size N
(Q = B/N, the expected batch of Poisson sampling); the length is --steps, or --epochs
E (steps = ceil(E/Q)). Errors are one line on stderr: exit 2 for a wrong command
line, 1 for a question outside the accountant's range.

See docs/privacy.md.`

// dpRun holds the flags that describe a DP-SGD run.
type dpRun struct {
	accountant                        string
	sampleRate, epochs, delta         float64
	batchSize, datasetSize, steps     int
	epsError, deltaError              float64
	q                                 float64 // resolved sampling rate
	n                                 int     // resolved steps
	kind                              dpaccount.Kind
	batchGiven, epochsGiven, prvGiven bool
}

func (r *dpRun) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&r.accountant, "accountant", "rdp", "rdp, prv or moments")
	f.Float64Var(&r.sampleRate, "sample-rate", 0, "Poisson sampling rate q in (0, 1]")
	f.IntVar(&r.batchSize, "batch-size", 0, "expected batch size B (with --dataset-size: q = B/N)")
	f.IntVar(&r.datasetSize, "dataset-size", 0, "number of training records N (with --batch-size)")
	f.IntVar(&r.steps, "steps", 0, "number of DP-SGD steps")
	f.Float64Var(&r.epochs, "epochs", 0, "number of epochs E instead of --steps (steps = ceil(E/q))")
	f.Float64Var(&r.delta, "delta", 0, "δ in (0, 1), e.g. 1e-5 (required)")
	f.Float64Var(&r.epsError, "eps-error", 0, "prv: the ε error bound (default 0.01)")
	f.Float64Var(&r.deltaError, "delta-error", 0, "prv: the δ error bound (default δ/1000)")
}

// resolve checks the run's flags and works out q, the steps and the
// accountant. minSteps is 0 for epsilon and 1 for noise.
func (r *dpRun) resolve(cmd *cobra.Command, minSteps int) error {
	f := cmd.Flags()
	kind, err := dpaccount.ParseKind(r.accountant)
	if err != nil {
		return usagef("--accountant %q: want rdp, prv or moments", r.accountant)
	}
	r.kind = kind
	r.prvGiven = f.Changed("eps-error") || f.Changed("delta-error")
	if r.prvGiven && kind != dpaccount.PRV {
		return usagef("--eps-error and --delta-error apply to --accountant prv only")
	}
	if r.prvGiven && !(finite(r.epsError) && r.epsError >= 0 && finite(r.deltaError) && r.deltaError >= 0) {
		return usagef("--eps-error and --delta-error must be finite and positive")
	}

	rateGiven := f.Changed("sample-rate")
	r.batchGiven = f.Changed("batch-size") || f.Changed("dataset-size")
	switch {
	case rateGiven && r.batchGiven:
		return usagef("give --sample-rate or --batch-size with --dataset-size, not both")
	case rateGiven:
		if !(finite(r.sampleRate) && r.sampleRate > 0 && r.sampleRate <= 1) {
			return usagef("--sample-rate %v: want 0 < q ≤ 1", r.sampleRate)
		}
		r.q = r.sampleRate
	case r.batchGiven:
		if !f.Changed("batch-size") || !f.Changed("dataset-size") {
			return usagef("--batch-size and --dataset-size go together")
		}
		if r.batchSize <= 0 || r.datasetSize <= 0 || r.batchSize > r.datasetSize {
			return usagef("--batch-size %d of --dataset-size %d: want 0 < B ≤ N", r.batchSize, r.datasetSize)
		}
		r.q = float64(r.batchSize) / float64(r.datasetSize)
	default:
		return usagef("the sampling rate is required: --sample-rate Q, or --batch-size B with --dataset-size N")
	}

	r.epochsGiven = f.Changed("epochs")
	switch {
	case f.Changed("steps") && r.epochsGiven:
		return usagef("give --steps or --epochs, not both")
	case f.Changed("steps"):
		if r.steps < minSteps {
			return usagef("--steps %d: want at least %d", r.steps, minSteps)
		}
		r.n = r.steps
	case r.epochsGiven:
		if !(finite(r.epochs) && r.epochs > 0) {
			return usagef("--epochs %v: want a positive number", r.epochs)
		}
		x := r.epochs / r.q
		if x > 1<<53 {
			return usagef("--epochs %v at q = %v is too many steps", r.epochs, r.q)
		}
		// E/q is often an integer that floating point misses by an ulp
		// (60/0.004); do not let that add a step.
		if rounded := math.Round(x); math.Abs(x-rounded) <= 1e-9*x {
			x = rounded
		}
		r.n = int(math.Ceil(x))
	default:
		return usagef("the length is required: --steps N or --epochs E")
	}

	if !f.Changed("delta") {
		return usagef("--delta is required, e.g. --delta 1e-5 (below 1/N)")
	}
	if !(finite(r.delta) && r.delta > 0 && r.delta < 1) {
		return usagef("--delta %v: want 0 < δ < 1", r.delta)
	}
	return nil
}

func (r *dpRun) prvOptions() dpaccount.PRVOptions {
	return dpaccount.PRVOptions{EpsError: r.epsError, DeltaError: r.deltaError}
}

// dpResult is the JSON both commands print: the run, then what the
// accountant found. Fields that do not apply are left out.
type dpResult struct {
	Accountant      dpaccount.Kind `json:"accountant"`
	Epsilon         float64        `json:"epsilon"`
	EpsilonLow      *float64       `json:"epsilon_low,omitempty"`
	EpsilonHigh     *float64       `json:"epsilon_high,omitempty"`
	OptimalOrder    *float64       `json:"optimal_order,omitempty"`
	TargetEpsilon   *float64       `json:"target_epsilon,omitempty"`
	Delta           float64        `json:"delta"`
	SampleRate      float64        `json:"sample_rate"`
	NoiseMultiplier float64        `json:"noise_multiplier"`
	Steps           int            `json:"steps"`
	BatchSize       int            `json:"batch_size,omitempty"`
	DatasetSize     int            `json:"dataset_size,omitempty"`
	Epochs          float64        `json:"epochs,omitempty"`
	EpsError        *float64       `json:"eps_error,omitempty"`
	DeltaError      *float64       `json:"delta_error,omitempty"`
}

func (r *dpRun) result(res dpaccount.Result, sigma float64) (dpResult, error) {
	if math.IsInf(res.EpsilonHigh, 1) {
		return dpResult{}, fmt.Errorf("ε is unbounded: σ = %v is too little noise for any finite guarantee at δ = %v", sigma, r.delta)
	}
	out := dpResult{
		Accountant:      res.Accountant,
		Epsilon:         res.Epsilon,
		Delta:           r.delta,
		SampleRate:      r.q,
		NoiseMultiplier: sigma,
		Steps:           r.n,
	}
	if r.batchGiven {
		out.BatchSize, out.DatasetSize = r.batchSize, r.datasetSize
	}
	if r.epochsGiven {
		out.Epochs = r.epochs
	}
	if res.Order > 0 {
		out.OptimalOrder = &res.Order
	}
	if res.Accountant == dpaccount.PRV {
		out.EpsilonLow, out.EpsilonHigh = &res.EpsilonLow, &res.EpsilonHigh
		out.EpsError, out.DeltaError = &res.EpsError, &res.DeltaError
	}
	return out, nil
}

// dpError maps the accountant's errors: invalid input is a usage error
// (exit 2), anything else a failure (exit 1).
func dpError(err error) error {
	if errors.Is(err, dpaccount.ErrInvalid) {
		return usagef("%v", err)
	}
	return err
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func (a *App) dpCmd() *cobra.Command {
	c := group("dp", "Differential-privacy accounting for DP-SGD (needs no server)", a.dpEpsilonCmd(), a.dpNoiseCmd())
	c.Long = dpIntro + dpHelp
	return c
}

func (a *App) dpEpsilonCmd() *cobra.Command {
	var run dpRun
	var sigma float64
	cmd := &cobra.Command{
		Use:   "epsilon --noise-multiplier S (--sample-rate Q | --batch-size B --dataset-size N) (--steps N | --epochs E) --delta D [--accountant rdp|prv|moments]",
		Short: "Compute the ε a DP-SGD run spends",
		Long: `epsilon prints the ε for which the run is (ε, δ)-DP, with the accountant's details:
optimal_order (rdp: the Rényi order α; moments: the moment order λ), or for prv
epsilon_low/epsilon_high and the error parameters.

  tgctl dp epsilon --batch-size 256 --dataset-size 60000 --epochs 60 \
      --noise-multiplier 1.1 --delta 1e-5
  → {"accountant": "rdp", "epsilon": 2.59…, "optimal_order": 8.1, …, "steps": 14063, …}

` + dpHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := run.resolve(cmd, 0); err != nil {
				return err
			}
			if !cmd.Flags().Changed("noise-multiplier") {
				return usagef("--noise-multiplier is required")
			}
			if !(finite(sigma) && sigma > 0) {
				return usagef("--noise-multiplier %v: want a finite σ > 0", sigma)
			}
			events := []dpaccount.Event{{SampleRate: run.q, NoiseMultiplier: sigma, Steps: run.n}}
			var res dpaccount.Result
			var err error
			if run.kind == dpaccount.PRV {
				res, err = dpaccount.EpsilonPRV(events, run.delta, run.prvOptions())
			} else {
				res, err = dpaccount.Epsilon(run.kind, events, run.delta)
			}
			if err != nil {
				return dpError(err)
			}
			out, err := run.result(res, sigma)
			if err != nil {
				return err
			}
			return writeJSON(a.Stdout, out)
		},
	}
	run.register(cmd)
	cmd.Flags().Float64Var(&sigma, "noise-multiplier", 0, "noise multiplier σ: the noise's standard deviation over the clipping norm (required)")
	return cmd
}

func (a *App) dpNoiseCmd() *cobra.Command {
	var run dpRun
	var target float64
	cmd := &cobra.Command{
		Use:   "noise --target-epsilon E (--sample-rate Q | --batch-size B --dataset-size N) (--steps N | --epochs E) --delta D [--accountant rdp|prv|moments]",
		Short: "Find the noise multiplier that reaches a target ε",
		Long: `noise prints the smallest noise multiplier σ whose ε is at most --target-epsilon
(for prv, whose epsilon_high is), with the ε it gives. σ is found by bisection to a
relative 1e-6 (rdp, moments) or 1e-3 (prv), never below the answer.

  tgctl dp noise --batch-size 256 --dataset-size 60000 --epochs 60 \
      --target-epsilon 3 --delta 1e-5
  → {"accountant": "rdp", "epsilon": 2.99…, "target_epsilon": 3, "noise_multiplier": 1.01…, …}

` + dpHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := run.resolve(cmd, 1); err != nil {
				return err
			}
			if !cmd.Flags().Changed("target-epsilon") {
				return usagef("--target-epsilon is required")
			}
			if !(finite(target) && target > 0) {
				return usagef("--target-epsilon %v: want a finite ε > 0", target)
			}
			var sigma float64
			var err error
			if run.kind == dpaccount.PRV {
				sigma, err = dpaccount.NoiseMultiplierPRV(run.q, run.n, run.delta, target, run.prvOptions())
			} else {
				sigma, err = dpaccount.NoiseMultiplier(run.kind, run.q, run.n, run.delta, target)
			}
			if err != nil {
				return dpError(err)
			}
			events := []dpaccount.Event{{SampleRate: run.q, NoiseMultiplier: sigma, Steps: run.n}}
			var res dpaccount.Result
			if run.kind == dpaccount.PRV {
				res, err = dpaccount.EpsilonPRV(events, run.delta, run.prvOptions())
			} else {
				res, err = dpaccount.Epsilon(run.kind, events, run.delta)
			}
			if err != nil {
				return dpError(err)
			}
			out, err := run.result(res, sigma)
			if err != nil {
				return err
			}
			out.TargetEpsilon = &target
			return writeJSON(a.Stdout, out)
		},
	}
	run.register(cmd)
	cmd.Flags().Float64Var(&target, "target-epsilon", 0, "the ε to reach (required)")
	return cmd
}
