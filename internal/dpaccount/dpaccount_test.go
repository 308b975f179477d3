package dpaccount

import (
	"errors"
	"math"
	"testing"
)

var kinds = []Kind{RDP, PRV, Moments}

func mustEpsilon(t *testing.T, kind Kind, events []Event, delta float64) Result {
	t.Helper()
	r, err := Epsilon(kind, events, delta)
	if err != nil {
		t.Fatalf("%s %v δ=%v: %v", kind, events, delta, err)
	}
	return r
}

func TestInvalidInputs(t *testing.T) {
	t.Parallel()
	nan, inf := math.NaN(), math.Inf(1)
	good := Event{0.01, 1, 100}
	for _, tt := range []struct {
		name   string
		kind   Kind
		events []Event
		delta  float64
	}{
		{"unknown accountant", "gdp", []Event{good}, 1e-5},
		{"empty accountant", "", []Event{good}, 1e-5},
		{"q = 0", RDP, []Event{{0, 1, 10}}, 1e-5},
		{"q < 0", RDP, []Event{{-0.1, 1, 10}}, 1e-5},
		{"q > 1", RDP, []Event{{1.5, 1, 10}}, 1e-5},
		{"q NaN", RDP, []Event{{nan, 1, 10}}, 1e-5},
		{"q Inf", RDP, []Event{{inf, 1, 10}}, 1e-5},
		{"σ = 0", RDP, []Event{{0.01, 0, 10}}, 1e-5},
		{"σ < 0", RDP, []Event{{0.01, -1, 10}}, 1e-5},
		{"σ NaN", RDP, []Event{{0.01, nan, 10}}, 1e-5},
		{"σ Inf", RDP, []Event{{0.01, inf, 10}}, 1e-5},
		{"steps < 0", RDP, []Event{good, {0.01, 1, -1}}, 1e-5},
		{"δ = 0", RDP, []Event{good}, 0},
		{"δ = 1", RDP, []Event{good}, 1},
		{"δ < 0", RDP, []Event{good}, -1e-5},
		{"δ NaN", RDP, []Event{good}, nan},
		{"δ Inf", RDP, []Event{good}, inf},
	} {
		for _, kind := range kinds {
			if tt.kind != RDP {
				kind = tt.kind
			}
			_, err := Epsilon(kind, tt.events, tt.delta)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s (%s): error %v, want ErrInvalid", tt.name, kind, err)
			}
		}
	}
	for _, opts := range []PRVOptions{{EpsError: -0.1}, {EpsError: nan}, {EpsError: inf}, {DeltaError: 1e-5}, {DeltaError: 2e-5}, {DeltaError: -1e-9}, {DeltaError: nan}} {
		if _, err := EpsilonPRV([]Event{good}, 1e-5, opts); !errors.Is(err, ErrInvalid) {
			t.Errorf("PRV options %+v: error %v, want ErrInvalid", opts, err)
		}
	}
	for _, tt := range []struct {
		name           string
		q              float64
		steps          int
		delta, epsilon float64
	}{
		{name: "steps = 0", q: 0.01, steps: 0, delta: 1e-5, epsilon: 1},
		{name: "target 0", q: 0.01, steps: 100, delta: 1e-5, epsilon: 0},
		{name: "target < 0", q: 0.01, steps: 100, delta: 1e-5, epsilon: -1},
		{name: "target NaN", q: 0.01, steps: 100, delta: 1e-5, epsilon: nan},
		{name: "target Inf", q: 0.01, steps: 100, delta: 1e-5, epsilon: inf},
		{name: "q = 0", q: 0, steps: 100, delta: 1e-5, epsilon: 1},
		{name: "δ = 1", q: 0.01, steps: 100, delta: 1, epsilon: 1},
	} {
		for _, kind := range kinds {
			if _, err := NoiseMultiplier(kind, tt.q, tt.steps, tt.delta, tt.epsilon); !errors.Is(err, ErrInvalid) {
				t.Errorf("NoiseMultiplier %s (%s): error %v, want ErrInvalid", tt.name, kind, err)
			}
		}
	}
	if _, err := NoiseMultiplier("gdp", 0.01, 100, 1e-5, 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("NoiseMultiplier of an unknown accountant: %v", err)
	}
	// A valid question without an answer in range.
	if _, err := NoiseMultiplier(PRV, 0.01, 100, 1e-5, 0.005); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("PRV target below its eps error: %v, want ErrOutOfRange", err)
	}
	if _, err := NoiseMultiplier(RDP, 1, 1000000, 1e-5, 1e-4); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("a target that needs σ ≈ 5e7: %v, want ErrOutOfRange", err)
	}
	if _, err := EpsilonPRV([]Event{{1, 1e-3, 1}}, 1e-5, PRVOptions{}); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("PRV with a loss of ~5e5: %v, want ErrOutOfRange (grid too large)", err)
	}
}

// TestNothingSpent checks that no steps spend nothing, in every accountant.
func TestNothingSpent(t *testing.T) {
	t.Parallel()
	for _, kind := range kinds {
		for _, events := range [][]Event{nil, {{0.01, 1, 0}}, {{0.5, 0.1, 0}, {1, 2, 0}}} {
			r := mustEpsilon(t, kind, events, 1e-5)
			if r.Epsilon != 0 || r.EpsilonLow != 0 || r.EpsilonHigh != 0 || r.Order != 0 || r.Steps != 0 || r.Accountant != kind || r.Delta != 1e-5 {
				t.Errorf("%s %v: %+v, want ε = 0", kind, events, r)
			}
		}
	}
}

// TestMonotone checks that ε grows with the steps and the sampling rate
// and falls with the noise, in every accountant.
func TestMonotone(t *testing.T) {
	t.Parallel()
	const delta = 1e-5
	base := Event{0.01, 1.0, 1000}
	for _, kind := range kinds {
		eps := func(e Event) float64 { return mustEpsilon(t, kind, []Event{e}, delta).Epsilon }
		e0 := eps(base)
		prev := 0.0
		for _, steps := range []int{1, 10, 100, 1000, 3000} {
			e := base
			e.Steps = steps
			if got := eps(e); got <= prev {
				t.Errorf("%s: ε(%d steps) = %v, not above %v", kind, steps, got, prev)
			} else {
				prev = got
			}
		}
		prev = 0
		for _, q := range []float64{0.001, 0.005, 0.01, 0.02, 0.05} {
			e := base
			e.SampleRate = q
			if got := eps(e); got <= prev {
				t.Errorf("%s: ε(q=%v) = %v, not above %v", kind, q, got, prev)
			} else {
				prev = got
			}
		}
		prev = math.Inf(1)
		for _, sigma := range []float64{0.8, 0.9, 1.0, 1.5, 3} {
			e := base
			e.NoiseMultiplier = sigma
			if got := eps(e); got >= prev {
				t.Errorf("%s: ε(σ=%v) = %v, not below %v", kind, sigma, got, prev)
			} else {
				prev = got
			}
		}
		// Larger δ, smaller ε.
		if e2 := mustEpsilon(t, kind, []Event{base}, 1e-3).Epsilon; e2 >= e0 {
			t.Errorf("%s: ε(δ=1e-3) = %v not below ε(δ=1e-5) = %v", kind, e2, e0)
		}
	}
}

// TestComposition checks heterogeneous composition where it is exact:
// RDP (and so the moments) add across events; splitting a run into parts
// changes nothing; Gaussian steps (q = 1) compose like one Gaussian with
// 1/σ² summed, exactly for RDP and within the bounds for PRV.
func TestComposition(t *testing.T) {
	t.Parallel()
	a, b := Event{0.01, 1.0, 300}, Event{0.05, 2.0, 200}
	sum := rdpCurve([]Event{a, b}, rdpOrders)
	ra, rb := rdpCurve([]Event{a}, rdpOrders), rdpCurve([]Event{b}, rdpOrders)
	for k := range sum {
		if want := ra[k] + rb[k]; math.Abs(sum[k]-want) > 1e-15*want {
			t.Fatalf("α=%v: RDP of the composition %v, sum %v", rdpOrders[k], sum[k], want)
		}
	}
	r := mustEpsilon(t, RDP, []Event{a, b}, 1e-5)
	if want, order := epsilonBalle(rdpOrders, sum, 1e-5); r.Epsilon != want || r.Order != order {
		t.Errorf("RDP of [a b]: %v at %v, want %v at %v", r.Epsilon, r.Order, want, order)
	}
	for _, kind := range kinds {
		whole := mustEpsilon(t, kind, []Event{{0.01, 1.0, 1200}, b}, 1e-5)
		parts := mustEpsilon(t, kind, []Event{{0.01, 1.0, 500}, b, {0.01, 1.0, 0}, {0.01, 1.0, 700}}, 1e-5)
		if whole != parts {
			t.Errorf("%s: split run %+v, whole %+v", kind, parts, whole)
		}
		if whole.Steps != 1400 {
			t.Errorf("%s: steps %d, want 1400", kind, whole.Steps)
		}
	}
	// Gaussians: 100 steps at σ=10 then 25 at σ=5 is μ² = 1 + 1 = 2, the
	// same as one step at σ = 1/√2.
	g := []Event{{1, 10, 100}, {1, 5, 25}}
	one := []Event{{1, 1 / math.Sqrt2, 1}}
	if x, y := mustEpsilon(t, RDP, g, 1e-5), mustEpsilon(t, RDP, one, 1e-5); math.Abs(x.Epsilon-y.Epsilon) > 1e-12 {
		t.Errorf("RDP: Gaussian composition %v, single %v", x.Epsilon, y.Epsilon)
	}
	x, y := mustEpsilon(t, PRV, g, 1e-5), mustEpsilon(t, PRV, one, 1e-5)
	if !(x.EpsilonLow <= y.EpsilonHigh && y.EpsilonLow <= x.EpsilonHigh) || math.Abs(x.Epsilon-y.Epsilon) > 2e-3 {
		t.Errorf("PRV: Gaussian composition %+v, single %+v", x, y)
	}
}

// TestResultShape checks the fields each accountant fills.
func TestResultShape(t *testing.T) {
	t.Parallel()
	ev := []Event{{0.01, 1.1, 500}}
	delta := 1e-6
	for _, kind := range kinds {
		r := mustEpsilon(t, kind, ev, delta)
		if r.Accountant != kind || r.Delta != 1e-6 || r.Steps != 500 || !(r.Epsilon > 0) {
			t.Errorf("%s: %+v", kind, r)
		}
		if !(r.EpsilonLow <= r.Epsilon && r.Epsilon <= r.EpsilonHigh) {
			t.Errorf("%s: bounds [%v, %v] around %v", kind, r.EpsilonLow, r.EpsilonHigh, r.Epsilon)
		}
		switch kind {
		case PRV:
			if r.Order != 0 || r.EpsError != DefaultPRVEpsError || r.DeltaError != delta/1000 || r.EpsilonHigh-r.Epsilon < DefaultPRVEpsError {
				t.Errorf("PRV: %+v", r)
			}
		default:
			if r.Order <= 1 && kind == RDP || r.Order < 1 || r.EpsilonLow != r.Epsilon || r.EpsilonHigh != r.Epsilon || r.EpsError != 0 {
				t.Errorf("%s: %+v", kind, r)
			}
		}
	}
	// Moments uses integer orders and the classical conversion, so it is
	// never below RDP.
	m, r := mustEpsilon(t, Moments, ev, 1e-6), mustEpsilon(t, RDP, ev, 1e-6)
	if m.Epsilon < r.Epsilon || m.Order != math.Trunc(m.Order) || m.Order > 32 {
		t.Errorf("moments %+v vs RDP %+v", m, r)
	}
}

// TestInfiniteEpsilon: too little noise for any finite RDP guarantee is
// ε = +Inf, not an error and not NaN.
func TestInfiniteEpsilon(t *testing.T) {
	t.Parallel()
	for _, kind := range []Kind{RDP, Moments} {
		r := mustEpsilon(t, kind, []Event{{0.5, 1e-200, 10}}, 1e-5)
		if !math.IsInf(r.Epsilon, 1) || !math.IsInf(r.EpsilonHigh, 1) {
			t.Errorf("%s: %+v, want ε = +Inf", kind, r)
		}
	}
}

func TestNoiseMultiplierRoundTrip(t *testing.T) {
	t.Parallel()
	const q, steps, delta = 256.0 / 60000, 14062, 1e-5
	for _, kind := range kinds {
		tol := NoiseRelTolerance
		if kind == PRV {
			tol = NoiseRelTolerancePRV
		}
		for _, target := range []float64{1, 3, 8} {
			sigma, err := NoiseMultiplier(kind, q, steps, delta, target)
			if err != nil {
				t.Fatalf("%s ε=%v: %v", kind, target, err)
			}
			at := mustEpsilon(t, kind, []Event{{q, sigma, steps}}, delta)
			below := mustEpsilon(t, kind, []Event{{q, sigma / (1 + 2*tol), steps}}, delta)
			if at.EpsilonHigh > target || below.EpsilonHigh <= target {
				t.Errorf("%s ε=%v: σ = %v gives ε ≤ %v; σ/(1+2·tol) gives %v: want the first ≤ target < the second", kind, target, sigma, at.EpsilonHigh, below.EpsilonHigh)
			}
			t.Logf("%s: σ = %.5f for ε = %v (q = 256/60000, %d steps, δ = %v)", kind, sigma, target, steps, delta)
			if kind == PRV {
				break // one PRV search is enough: each costs ~10 PRV evaluations
			}
		}
	}
	// And back: the ε of σ = 1.1 as a target gives σ = 1.1 again.
	r := mustEpsilon(t, RDP, []Event{{q, 1.1, steps}}, delta)
	sigma, err := NoiseMultiplier(RDP, q, steps, delta, r.Epsilon)
	if err != nil || math.Abs(sigma-1.1) > 1.1*2*NoiseRelTolerance {
		t.Errorf("RDP: σ for ε(1.1) = %v is %v (%v), want 1.1", r.Epsilon, sigma, err)
	}
}
