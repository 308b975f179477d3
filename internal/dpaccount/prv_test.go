package dpaccount

import (
	"math"
	"math/cmplx"
	"math/rand/v2"
	"testing"
)

// gaussianEpsilon returns the exact ε of a composition of Gaussian
// mechanisms with total μ = sqrt(Σ steps/σ²) (μ-GDP, Dong, Roth, Su 2019
// Cor. 2.13): δ(ε) = Φ(−ε/μ + μ/2) − e^ε·Φ(−ε/μ − μ/2), solved by
// bisection. It uses only math.Erfc.
func gaussianEpsilon(mu, delta float64) float64 {
	phi := func(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }
	d := func(eps float64) float64 { return phi(-eps/mu+mu/2) - math.Exp(eps)*phi(-eps/mu-mu/2) }
	lo, hi := 0.0, 1.0
	for d(hi) > delta {
		hi *= 2
	}
	for range 200 {
		mid := (lo + hi) / 2
		if d(mid) > delta {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// TestPRVGaussianExact checks PRV against the closed form for q = 1, where
// the loss of each step is exactly Gaussian: the bounds must bracket the
// exact ε, and the estimate must be far closer than the bounds promise.
func TestPRVGaussianExact(t *testing.T) {
	t.Parallel()
	tests := []struct {
		events []Event
		delta  float64
	}{
		{[]Event{{1, 10, 100}}, 1e-5},
		{[]Event{{1, 1, 1}}, 1e-5},
		{[]Event{{1, 30, 1000}}, 1e-6},
		{[]Event{{1, 10, 50}, {1, 5, 50}}, 1e-5}, // heterogeneous: μ² = 50/100 + 50/25
	}
	for _, tt := range tests {
		var mu2 float64
		for _, e := range tt.events {
			mu2 += float64(e.Steps) / (e.NoiseMultiplier * e.NoiseMultiplier)
		}
		want := gaussianEpsilon(math.Sqrt(mu2), tt.delta)
		r, err := Epsilon(PRV, tt.events, tt.delta)
		if err != nil {
			t.Fatalf("%v: %v", tt.events, err)
		}
		if !(r.EpsilonLow <= want && want <= r.EpsilonHigh) {
			t.Errorf("%v: exact ε %.6f outside [%.6f, %.6f]", tt.events, want, r.EpsilonLow, r.EpsilonHigh)
		}
		if math.Abs(r.Epsilon-want) > 1e-3 {
			t.Errorf("%v: estimate %.6f, exact %.6f", tt.events, r.Epsilon, want)
		}
		// RDP is an upper bound, and for the Gaussian a loose one.
		rdp, _ := Epsilon(RDP, tt.events, tt.delta)
		if rdp.Epsilon < want {
			t.Errorf("%v: RDP ε %.6f below the exact %.6f", tt.events, rdp.Epsilon, want)
		}
	}
}

// TestPRVBelowRDP checks PRV against RDP on DP-SGD settings: its upper
// bound is below RDP's ε (RDP's conversion is lossy) yet within a sane
// factor of it (RDP is loosest for small q and σ < 1, about 2× here), and
// its bounds bracket its estimate.
func TestPRVBelowRDP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		q, sigma float64
		steps    int
		delta    float64
	}{
		{256.0 / 60000, 1.1, 14062, 1e-5},
		{0.01, 1.0, 1000, 1e-5},
		{0.001, 0.8, 5000, 1e-6},
		{0.05, 2.0, 500, 1e-5},
		{0.1, 4.0, 200, 1e-7},
	}
	for _, tt := range tests {
		ev := []Event{{tt.q, tt.sigma, tt.steps}}
		p, err := Epsilon(PRV, ev, tt.delta)
		if err != nil {
			t.Fatalf("%v: %v", ev, err)
		}
		r, _ := Epsilon(RDP, ev, tt.delta)
		if !(p.EpsilonLow <= p.Epsilon && p.Epsilon <= p.EpsilonHigh) {
			t.Errorf("%v: bounds [%v, %v] do not bracket %v", ev, p.EpsilonLow, p.EpsilonHigh, p.Epsilon)
		}
		if p.EpsilonHigh > r.Epsilon || p.Epsilon < 0.3*r.Epsilon {
			t.Errorf("%v: PRV %.4f (≤ %.4f), RDP %.4f: want PRV below RDP and above 0.3×RDP", ev, p.Epsilon, p.EpsilonHigh, r.Epsilon)
		}
		t.Logf("q=%v σ=%v steps=%d δ=%v: PRV %.4f [%.4f, %.4f], RDP %.4f", tt.q, tt.sigma, tt.steps, tt.delta, p.Epsilon, p.EpsilonLow, p.EpsilonHigh, r.Epsilon)
	}
}

// TestPRVBoundsTighten checks that smaller error parameters give narrower
// brackets, each inside the last, around the same estimate.
func TestPRVBoundsTighten(t *testing.T) {
	t.Parallel()
	ev := []Event{{0.01, 1.0, 2000}}
	const delta = 1e-5
	prev := Result{EpsilonLow: math.Inf(-1), EpsilonHigh: math.Inf(1)}
	for _, epsErr := range []float64{0.2, 0.05, 0.01, 0.002} {
		r, err := EpsilonPRV(ev, delta, PRVOptions{EpsError: epsErr, DeltaError: delta * epsErr / 10})
		if err != nil {
			t.Fatal(err)
		}
		width := r.EpsilonHigh - r.EpsilonLow
		if width > 2.2*epsErr || width >= prev.EpsilonHigh-prev.EpsilonLow {
			t.Errorf("eps error %v: bracket [%v, %v] not narrower than [%v, %v]", epsErr, r.EpsilonLow, r.EpsilonHigh, prev.EpsilonLow, prev.EpsilonHigh)
		}
		if r.EpsilonLow < prev.EpsilonLow || r.EpsilonHigh > prev.EpsilonHigh {
			t.Errorf("eps error %v: bracket [%v, %v] leaves the coarser [%v, %v]", epsErr, r.EpsilonLow, r.EpsilonHigh, prev.EpsilonLow, prev.EpsilonHigh)
		}
		if r.EpsError != epsErr || r.DeltaError != delta*epsErr/10 {
			t.Errorf("result reports error parameters %v, %v", r.EpsError, r.DeltaError)
		}
		prev = r
	}
}

// TestPRVSparseMatchesDense checks the closed-form evaluation of δ(ε) from
// the sparse spectrum against the inverse transform, homogeneous and
// heterogeneous, odd and even step counts.
func TestPRVSparseMatchesDense(t *testing.T) {
	t.Parallel()
	for _, events := range [][]Event{
		{{256.0 / 60000, 1.1, 3001}},
		{{0.02, 1.0, 800}},
		{{0.01, 1.0, 700}, {0.02, 1.5, 300}},
		{{0.01, 1.0, 700}, {0.02, 1.5, 301}},
	} {
		g, err := newPRVGrid(events, 0.01, 1e-9)
		if err != nil {
			t.Fatal(err)
		}
		targets := [3]float64{1e-6 - 1e-9, 1e-6, 1e-6 + 1e-9}
		sr, sa := g.epsilons(events, targets, false)
		dr, da := g.epsilons(events, targets, true)
		for i := range targets {
			if math.Abs(sr[i]-dr[i]) > 1e-9 || math.Abs(sa[i]-da[i]) > 1e-9 {
				t.Errorf("%v target %v: sparse (%v, %v), dense (%v, %v)", events, targets[i], sr[i], sa[i], dr[i], da[i])
			}
		}
	}
}

// TestPRVAddDirection checks that the add direction is accounted: it is
// computed, and for the subsampled Gaussian it is the smaller one.
func TestPRVAddDirection(t *testing.T) {
	t.Parallel()
	ev := []Event{{0.02, 1.0, 500}}
	g, err := newPRVGrid(ev, 0.01, 1e-8)
	if err != nil {
		t.Fatal(err)
	}
	rem, add := g.epsilons(ev, [3]float64{1e-5, 1e-5, 1e-5}, false)
	if !(add[1] > 0 && add[1] < rem[1]) {
		t.Errorf("ε remove %v, add %v: want 0 < add < remove", rem[1], add[1])
	}
	// At q = 1 both directions are the same Gaussian.
	ev = []Event{{1, 5, 10}}
	g, _ = newPRVGrid(ev, 0.01, 1e-8)
	rem, add = g.epsilons(ev, [3]float64{1e-5, 1e-5, 1e-5}, false)
	if math.Abs(rem[1]-add[1]) > 1e-6 {
		t.Errorf("q = 1: ε remove %v, add %v: want equal", rem[1], add[1])
	}
}

// TestLossMeans checks the per-step loss means against closed forms at
// q = 1 (both KL divergences are 1/(2σ²)) and against the distribution
// functions by integrating t·dF.
func TestLossMeans(t *testing.T) {
	t.Parallel()
	rem, add := lossMeans(1, 2)
	if math.Abs(rem-0.125) > 1e-14 || math.Abs(add-0.125) > 1e-14 {
		t.Errorf("q = 1, σ = 2: means %v, %v, want 0.125", rem, add)
	}
	// E[Y] = ∫₀^∞ (1−F) − ∫_{−∞}^0 F by the trapezoid rule on a fine grid
	// with a point at 0.
	const q, sigma = 0.05, 1.2
	mean := func(cdf func(float64) cdfValue) float64 {
		const h, half = 1e-4, 60000
		f := func(i int) float64 {
			c := cdf(float64(i) * h)
			if c.survival {
				return 1 - c.v
			}
			return c.v
		}
		var s float64
		for i := -half; i < half; i++ {
			if i >= 0 {
				s += h * ((1 - f(i)) + (1 - f(i+1))) / 2
			} else {
				s -= h * (f(i) + f(i+1)) / 2
			}
		}
		return s
	}
	rem, add = lossMeans(q, sigma)
	wr := mean(func(t float64) cdfValue { return removeCDF(q, sigma, t) })
	wa := mean(func(t float64) cdfValue { return addCDF(q, sigma, t) })
	if math.Abs(rem-wr) > 1e-9 || math.Abs(add-wa) > 1e-9 {
		t.Errorf("means (%v, %v), from the distribution functions (%v, %v)", rem, add, wr, wa)
	}
	if !(rem > 0 && add > 0) {
		t.Errorf("KL(Q‖P) = %v and KL(P‖Q) = %v: want both positive", rem, add)
	}
}

func TestFFTMatchesDFT(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 4, 8, 16, 32, 64, 128, 512} {
		x := make([]complex128, n)
		for i := range x {
			x[i] = complex(rng.NormFloat64(), rng.NormFloat64())
		}
		a := append([]complex128(nil), x...)
		fftForward(a)
		for p := range n {
			k := bitReverse(p, n)
			var want complex128
			for j, v := range x {
				want += v * cmplx.Exp(complex(0, -2*math.Pi*float64(j*k%n)/float64(n)))
			}
			if cmplx.Abs(a[p]-want) > 1e-12*float64(n) {
				t.Fatalf("n=%d bin %d: %v, DFT %v", n, k, a[p], want)
			}
		}
		fftInverse(a)
		for j := range x {
			if cmplx.Abs(a[j]-x[j]) > 1e-13*float64(n) {
				t.Fatalf("n=%d: inverse(forward(x))[%d] = %v, want %v", n, j, a[j], x[j])
			}
		}
	}
	// A long transform keeps double precision: round trip of 2^16 points.
	n := 1 << 16
	x := make([]complex128, n)
	for i := range x {
		x[i] = complex(rng.Float64(), rng.Float64())
	}
	a := append([]complex128(nil), x...)
	fftForward(a)
	fftInverse(a)
	var worst float64
	for i := range x {
		worst = max(worst, cmplx.Abs(a[i]-x[i]))
	}
	if worst > 1e-14 {
		t.Errorf("2^16 round trip: worst error %v", worst)
	}
}

func TestPairPartner(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 4, 8, 64, 4096} {
		seen := make([]int, n)
		forEachPair(n, func(p, pm int) {
			seen[p]++
			if pm != p {
				seen[pm]++
			}
			if pairPartner(p) != pm || pairPartner(pm) != p {
				t.Fatalf("n=%d: pair (%d, %d) but pairPartner says %d, %d", n, p, pm, pairPartner(p), pairPartner(pm))
			}
			if k, km := bitReverse(p, n), bitReverse(pm, n); (k+km)%n != 0 {
				t.Fatalf("n=%d: positions %d, %d hold bins %d, %d, not k and n−k", n, p, pm, k, km)
			}
		})
		for p, c := range seen {
			if c != 1 {
				t.Fatalf("n=%d: position %d visited %d times", n, p, c)
			}
		}
	}
}
