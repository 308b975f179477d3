package dpaccount

import (
	"errors"
	"fmt"
	"math"
)

// The noise-multiplier search range and tolerances.
const (
	// MinNoiseMultiplier and MaxNoiseMultiplier bound the search: a target
	// already met below the minimum, or not met at the maximum, is
	// ErrOutOfRange.
	MinNoiseMultiplier = 1e-3
	MaxNoiseMultiplier = 1e6
	// NoiseRelTolerance is the relative width of the final bracket for RDP
	// and Moments: the σ returned meets the target and σ/(1+tol) does not.
	NoiseRelTolerance = 1e-6
	// NoiseRelTolerancePRV is the same for PRV, whose evaluations cost
	// milliseconds each.
	NoiseRelTolerancePRV = 1e-3
)

// NoiseMultiplier returns the smallest noise multiplier σ (to the
// tolerance above) for which steps steps of the Poisson-subsampled
// Gaussian mechanism with sampling rate sampleRate are (ε, δ)-DP with
// ε ≤ targetEpsilon, as computed by the accountant kind: for PRV the
// upper bound EpsilonHigh (default PRVOptions) must meet the target,
// so the answer is a guarantee for every accountant. The search is a
// bracket by doubling, then bisection on log σ, which relies on ε
// decreasing in σ.
func NoiseMultiplier(kind Kind, sampleRate float64, steps int, delta, targetEpsilon float64) (float64, error) {
	if _, err := ParseKind(string(kind)); err != nil {
		return 0, err
	}
	if kind == PRV {
		return NoiseMultiplierPRV(sampleRate, steps, delta, targetEpsilon, PRVOptions{})
	}
	if err := validateNoise(sampleRate, steps, delta, targetEpsilon); err != nil {
		return 0, err
	}
	eps := func(sigma float64) (float64, error) {
		r, err := Epsilon(kind, []Event{{sampleRate, sigma, steps}}, delta)
		return r.EpsilonHigh, err
	}
	return searchSigma(eps, targetEpsilon, 1, 2, NoiseRelTolerance)
}

// NoiseMultiplierPRV is NoiseMultiplier(PRV, …) with explicit PRV error
// parameters. A target at or below the ε error cannot be met (EpsilonHigh
// is at least the ε error) and is ErrOutOfRange.
func NoiseMultiplierPRV(sampleRate float64, steps int, delta, targetEpsilon float64, opts PRVOptions) (float64, error) {
	if err := validateNoise(sampleRate, steps, delta, targetEpsilon); err != nil {
		return 0, err
	}
	epsErr := opts.EpsError
	if epsErr == 0 {
		epsErr = DefaultPRVEpsError
	}
	if targetEpsilon <= epsErr {
		return 0, fmt.Errorf("%w: target ε %v is not above the PRV eps error %v: lower the eps error", ErrOutOfRange, targetEpsilon, epsErr)
	}
	eps := func(sigma float64) (float64, error) {
		r, err := EpsilonPRV([]Event{{sampleRate, sigma, steps}}, delta, opts)
		if errors.Is(err, ErrOutOfRange) && sigma < 1 {
			// Too little noise for the PRV grid: the loss is far too
			// large, so certainly above any sensible target.
			return math.Inf(1), nil
		}
		return r.EpsilonHigh, err
	}
	// RDP's σ meets the target under RDP, whose ε is an upper bound too,
	// and is close: start the bracket there.
	start, err := NoiseMultiplier(RDP, sampleRate, steps, delta, targetEpsilon)
	if err != nil && !errors.Is(err, ErrOutOfRange) {
		return 0, err
	}
	if err != nil {
		start = 1
	}
	// PRV's σ is usually a few percent below RDP's: step by 1.25.
	return searchSigma(eps, targetEpsilon, start, 1.25, NoiseRelTolerancePRV)
}

func validateNoise(sampleRate float64, steps int, delta, targetEpsilon float64) error {
	if steps < 1 {
		return fmt.Errorf("%w: steps %d: want ≥ 1", ErrInvalid, steps)
	}
	if !(targetEpsilon > 0) || math.IsInf(targetEpsilon, 0) {
		return fmt.Errorf("%w: target epsilon %v: want a finite ε > 0", ErrInvalid, targetEpsilon)
	}
	return validate([]Event{{sampleRate, 1, steps}}, delta)
}

// searchSigma returns the smallest σ in [MinNoiseMultiplier,
// MaxNoiseMultiplier] with eps(σ) ≤ target, to relative tolerance tol: it
// brackets the answer by stepping from start by factor, then bisects.
func searchSigma(eps func(float64) (float64, error), target, start, factor, tol float64) (float64, error) {
	meets := func(sigma float64) (bool, error) {
		e, err := eps(sigma)
		return e <= target, err
	}
	start = min(max(start, MinNoiseMultiplier), MaxNoiseMultiplier)
	ok, err := meets(start)
	if err != nil {
		return 0, err
	}
	lo, hi := start, start // invariant once bracketed: !meets(lo), meets(hi)
	if ok {
		for {
			if lo == MinNoiseMultiplier {
				return 0, fmt.Errorf("%w: even σ = %v meets target ε %v", ErrOutOfRange, MinNoiseMultiplier, target)
			}
			hi, lo = lo, max(lo/factor, MinNoiseMultiplier)
			if ok, err = meets(lo); err != nil {
				return 0, err
			} else if !ok {
				break
			}
		}
	} else {
		for {
			if hi == MaxNoiseMultiplier {
				return 0, fmt.Errorf("%w: σ = %v does not reach target ε %v", ErrOutOfRange, MaxNoiseMultiplier, target)
			}
			lo, hi = hi, min(hi*factor, MaxNoiseMultiplier)
			if ok, err = meets(hi); err != nil {
				return 0, err
			} else if ok {
				break
			}
		}
	}
	for hi/lo-1 > tol {
		mid := math.Sqrt(lo * hi)
		ok, err := meets(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}
