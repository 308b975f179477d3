package dpaccount

import (
	"fmt"
	"math"
)

// Kind names an accountant.
type Kind string

// The accountants.
const (
	// RDP is Rényi DP of the Poisson-subsampled Gaussian (Mironov, Talwar,
	// Zhang 2019) with the conversion of Balle et al. 2020, Theorem 21.
	RDP Kind = "rdp"
	// PRV is numerical composition of privacy random variables (Gopi, Lee,
	// Wutschitz 2021) with explicit error bounds.
	PRV Kind = "prv"
	// Moments is the moments accountant of Abadi et al. 2016.
	Moments Kind = "moments"
)

// ParseKind returns the accountant named s ("rdp", "prv" or "moments").
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case RDP, PRV, Moments:
		return k, nil
	}
	return "", fmt.Errorf("%w: accountant %q: want rdp, prv or moments", ErrInvalid, s)
}

// Event is Steps steps of the Poisson-subsampled Gaussian mechanism with
// sampling rate SampleRate and noise multiplier NoiseMultiplier: each step
// includes every record independently with probability SampleRate, sums
// the records' contributions clipped to L2 norm C, and adds N(0, σ²C²)
// noise with σ = NoiseMultiplier.
type Event struct {
	SampleRate, NoiseMultiplier float64
	Steps                       int
}

// Result is the privacy spent by a sequence of events at one δ. Its JSON
// form suits records such as dp_cert.json; an infinite ε (see Epsilon)
// has none, and encoding it fails.
type Result struct {
	Accountant Kind `json:"accountant"`
	// Epsilon is the accountant's ε: for RDP and Moments a guarantee; for
	// PRV the estimate, which lies between EpsilonLow and EpsilonHigh.
	Epsilon float64 `json:"epsilon"`
	Delta   float64 `json:"delta"`
	// Order is the order that minimized ε: the Rényi order α for RDP, the
	// moment order λ for Moments (which is Rényi order λ+1); 0 for PRV and
	// when there are no steps.
	Order float64 `json:"optimal_order,omitempty"`
	// EpsilonLow ≤ true ε ≤ EpsilonHigh for PRV, from its error
	// parameters; both equal Epsilon for RDP and Moments. EpsilonHigh is
	// always a valid guarantee: compare it with a budget.
	EpsilonLow  float64 `json:"epsilon_low"`
	EpsilonHigh float64 `json:"epsilon_high"`
	// EpsError and DeltaError are the PRV error parameters used (0 for
	// the others).
	EpsError   float64 `json:"eps_error,omitempty"`
	DeltaError float64 `json:"delta_error,omitempty"`
	// Steps is the total number of steps accounted.
	Steps int `json:"steps"`
}

// Epsilon returns the ε for which the composition of events is (ε, δ)-DP
// under add/remove-one adjacency, as computed by the accountant kind. PRV
// uses the default error parameters (see PRVOptions and EpsilonPRV). ε is
// never negative or NaN; it is +Inf when the noise is too small for any
// finite guarantee (RDP, Moments).
func Epsilon(kind Kind, events []Event, delta float64) (Result, error) {
	if _, err := ParseKind(string(kind)); err != nil {
		return Result{}, err
	}
	if kind == PRV {
		return EpsilonPRV(events, delta, PRVOptions{})
	}
	if err := validate(events, delta); err != nil {
		return Result{}, err
	}
	r := Result{Accountant: kind, Delta: delta, Steps: totalSteps(events)}
	if r.Steps == 0 {
		return r, nil // no mechanism ran: nothing was spent
	}
	switch kind {
	case RDP:
		r.Epsilon, r.Order = epsilonBalle(rdpOrders, rdpCurve(events, rdpOrders), delta)
	case Moments:
		r.Epsilon, r.Order = momentsEpsilon(events, delta)
	}
	r.EpsilonLow, r.EpsilonHigh = r.Epsilon, r.Epsilon
	return r, nil
}

func validate(events []Event, delta float64) error {
	if !(delta > 0 && delta < 1) {
		return fmt.Errorf("%w: delta %v: want 0 < δ < 1", ErrInvalid, delta)
	}
	for i, e := range events {
		switch {
		case !(e.SampleRate > 0 && e.SampleRate <= 1):
			return fmt.Errorf("%w: event %d: sample rate %v: want 0 < q ≤ 1", ErrInvalid, i, e.SampleRate)
		case !(e.NoiseMultiplier > 0) || math.IsInf(e.NoiseMultiplier, 0):
			return fmt.Errorf("%w: event %d: noise multiplier %v: want a finite σ > 0", ErrInvalid, i, e.NoiseMultiplier)
		case e.Steps < 0:
			return fmt.Errorf("%w: event %d: steps %d: want ≥ 0", ErrInvalid, i, e.Steps)
		}
	}
	return nil
}

// totalSteps sums the steps of events, saturating instead of overflowing.
func totalSteps(events []Event) int {
	n := 0
	for _, e := range events {
		if n > math.MaxInt-e.Steps {
			return math.MaxInt
		}
		n += e.Steps
	}
	return n
}

// mergeEvents drops events without steps and merges events with the same
// mechanism (q, σ), keeping first-seen order: the accountants compose
// identical steps by multiplication (RDP) or one power (PRV).
func mergeEvents(events []Event) []Event {
	var out []Event
next:
	for _, e := range events {
		if e.Steps == 0 {
			continue
		}
		for i := range out {
			if out[i].SampleRate == e.SampleRate && out[i].NoiseMultiplier == e.NoiseMultiplier {
				if out[i].Steps > math.MaxInt-e.Steps {
					out[i].Steps = math.MaxInt
				} else {
					out[i].Steps += e.Steps
				}
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}
