package dpaccount

import (
	"math"
	"slices"
	"testing"
)

// This file checks the RDP of the subsampled Gaussian against values
// computed here by a different method: direct numerical integration of
// the Rényi divergence's defining integral, sharing no code with rdp.go.
//
//	A_α = E_{x~N(0,σ²)} [(1 − q + q·e^((2x−1)/(2σ²)))^α],   RDP = log(A_α)/(α−1).
//
// Writing v = q·(e^u − 1), u = (2x−1)/(2σ²), the integrand is (1+v)^α and
// E[v] = 0, so A_α − 1 = E[R(v)] with R(v) = (1+v)^α − 1 − αv ≥ 0: the
// quadrature sums positive terms only, and A_α − 1 keeps its relative
// precision even when it is 1e-5. Terms are summed in log space, since
// A_α reaches e^3000 at the larger orders.

// legendreRule returns the n-point Gauss–Legendre nodes and weights on
// [−1, 1] (Newton's method on the three-term recurrence).
func legendreRule(n int) (x, w []float64) {
	x, w = make([]float64, n), make([]float64, n)
	for i := range (n + 1) / 2 {
		z := math.Cos(math.Pi * (float64(i) + 0.75) / (float64(n) + 0.5))
		var d float64
		for {
			p, pPrev := 1.0, 0.0
			for k := 1; k <= n; k++ {
				p, pPrev = ((2*float64(k)-1)*z*p-(float64(k)-1)*pPrev)/float64(k), p
			}
			d = float64(n) * (z*p - pPrev) / (z*z - 1)
			step := p / d
			z -= step
			if math.Abs(step) <= 1e-15 {
				break
			}
		}
		x[i], x[n-1-i] = -z, z
		w[i] = 2 / ((1 - z*z) * d * d)
		w[n-1-i] = w[i]
	}
	return x, w
}

// logR returns log((1+v)^α − 1 − αv) for v > −1, v ≠ 0.
func logR(v, alpha float64) float64 {
	lp := alpha * math.Log1p(v)
	if lp > 50 {
		return lp // the other terms are below e^-50 of it
	}
	if math.Abs(v) < 0.01 {
		// Binomial series from the square term; 12 terms leave < 1e-24.
		c, s, vk := alpha*(alpha-1)/2, 0.0, v*v
		for k := 2; k < 14; k++ {
			s += c * vk
			c *= (alpha - float64(k)) / float64(k+1)
			vk *= v
		}
		return math.Log(s)
	}
	return math.Log(math.Expm1(lp) - alpha*v)
}

// quadratureRDP returns log(A_α)/(α−1) by composite 16-point Gauss–Legendre
// quadrature over z = x/σ ∈ [−40, α/σ + 40] (the integrand peaks near
// z = α/σ) on panels of the given width.
func quadratureRDP(q, sigma, alpha, width float64) float64 {
	nodes, weights := legendreRule(16)
	lo, hi := -40.0, alpha/sigma+40
	panels := int(math.Ceil((hi - lo) / width))
	width = (hi - lo) / float64(panels)
	var logs, ws []float64
	for p := range panels {
		mid := lo + (float64(p)+0.5)*width
		for i, t := range nodes {
			z := mid + t*width/2
			x := sigma * z
			u := (2*x - 1) / (2 * sigma * sigma)
			var v float64
			if u > 700 {
				// q·e^u overflows; log(1+v) is then log(q) + u to double precision.
				lp := alpha * (math.Log(q) + u)
				logs = append(logs, lp-z*z/2)
				ws = append(ws, weights[i]*width/2)
				continue
			}
			v = q * math.Expm1(u)
			if v == 0 {
				continue
			}
			logs = append(logs, logR(v, alpha)-z*z/2)
			ws = append(ws, weights[i]*width/2)
		}
	}
	m := slices.Max(logs)
	var s float64
	for i, l := range logs {
		s += ws[i] * math.Exp(l-m)
	}
	logAm1 := m + math.Log(s) - 0.5*math.Log(2*math.Pi)
	// log A = log(1 + (A−1)).
	var logA float64
	if logAm1 > 0 {
		logA = logAm1 + math.Log1p(math.Exp(-logAm1))
	} else {
		logA = math.Log1p(math.Exp(logAm1))
	}
	return logA / (alpha - 1)
}

func TestRDPMatchesQuadrature(t *testing.T) {
	t.Parallel()
	tests := []struct{ q, sigma, alpha float64 }{
		// The brief's grid: two mechanisms at integer and fractional orders.
		{0.01, 1.1, 2}, {0.01, 1.1, 3.5}, {0.01, 1.1, 8}, {0.01, 1.1, 32},
		{0.1, 2, 2}, {0.1, 2, 3.5}, {0.1, 2, 8}, {0.1, 2, 32},
		// The MNIST benchmark's mechanism near its optimal orders, and
		// harder corners: small orders, small σ, large q, large orders.
		{256.0 / 60000, 1.1, 1.1}, {256.0 / 60000, 1.1, 8.1}, {256.0 / 60000, 1.1, 9},
		{0.001, 0.6, 5.5}, {0.5, 1, 1.5}, {0.5, 1, 2.5}, {0.2, 0.8, 64},
		{1e-4, 5, 128}, {0.3, 3, 10.9}, {0.05, 0.7, 1.75},
	}
	worst := 0.0
	for _, tt := range tests {
		got := rdpSampledGaussian(tt.q, tt.sigma, tt.alpha)
		want := quadratureRDP(tt.q, tt.sigma, tt.alpha, 0.05)
		// The reference must itself have converged: halving the panels
		// changes it by far less than the tolerance.
		if finer := quadratureRDP(tt.q, tt.sigma, tt.alpha, 0.025); math.Abs(finer-want) > 1e-11*want {
			t.Fatalf("q=%v σ=%v α=%v: quadrature not converged: %.15g vs %.15g", tt.q, tt.sigma, tt.alpha, want, finer)
		}
		rel := math.Abs(got-want) / want
		worst = max(worst, rel)
		if rel > 1e-6 {
			t.Errorf("q=%v σ=%v α=%v: RDP %.12g, quadrature %.12g (relative error %.2g)", tt.q, tt.sigma, tt.alpha, got, want, rel)
		}
	}
	t.Logf("largest relative difference from quadrature: %.2g", worst)
}

// TestQuadratureSelfCheck runs the reference on q = 1, where A_α is known
// in closed form: RDP = α/(2σ²).
func TestQuadratureSelfCheck(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ sigma, alpha float64 }{{1.1, 2}, {2, 3.5}, {0.9, 8}} {
		want := tt.alpha / (2 * tt.sigma * tt.sigma)
		if got := quadratureRDP(1, tt.sigma, tt.alpha, 0.05); math.Abs(got-want) > 1e-10*want {
			t.Errorf("σ=%v α=%v: quadrature %.15g, exact %.15g", tt.sigma, tt.alpha, got, want)
		}
		if got := rdpSampledGaussian(1, tt.sigma, tt.alpha); got != want {
			t.Errorf("σ=%v α=%v: RDP at q=1 is %v, want α/(2σ²) = %v", tt.sigma, tt.alpha, got, want)
		}
	}
}

// TestRDPSmallQ checks the regime where A_α − 1 is tiny (q = 1e-7, so
// A_α − 1 ≈ 1e-14). Integer orders sum A_α − 1 itself and keep full
// relative precision: at α = 2 and 3 the expansion has two terms,
// A_2 − 1 = q²(e^(1/σ²) − 1) and A_3 − 1 = 3q²(1−q)(e^(1/σ²) − 1) +
// q³(e^(3/σ²) − 1). The fractional series sums A_α and is accurate to
// 2e-16 of A_α, i.e. in absolute terms, which is what ε needs (R·steps
// changes by 1e-16·steps at most): it must agree with the leading term
// C(α,2)·q²·(e^(1/σ²) − 1) to that absolute precision.
func TestRDPSmallQ(t *testing.T) {
	t.Parallel()
	const q, sigma = 1e-7, 1.0
	e1, e3 := math.Expm1(1/(sigma*sigma)), math.Expm1(3/(sigma*sigma))
	exact := map[float64]float64{
		2: math.Log1p(q * q * e1),
		3: math.Log1p(3*q*q*(1-q)*e1+q*q*q*e3) / 2,
	}
	for alpha, want := range exact {
		if got := rdpSampledGaussian(q, sigma, alpha); math.Abs(got-want) > 1e-13*want {
			t.Errorf("α=%v: RDP %.15g, exact %.15g", alpha, got, want)
		}
	}
	for _, alpha := range []float64{1.5, 2.5, 7.5} {
		logA := alpha * (alpha - 1) / 2 * q * q * e1
		got := rdpSampledGaussian(q, sigma, alpha) * (alpha - 1)
		if math.Abs(got-logA) > 1e-15 {
			t.Errorf("α=%v: log A %.6g, leading term %.6g: absolute error %.2g", alpha, got, logA, math.Abs(got-logA))
		}
	}
}

func TestOrdersGrid(t *testing.T) {
	t.Parallel()
	o := Orders()
	if !slices.IsSorted(o) || len(slices.Compact(slices.Clone(o))) != len(o) {
		t.Fatalf("orders not sorted and unique: %v", o)
	}
	// Supersets of the reference tools' grids (see rdpOrders).
	for _, a := range []float64{1.1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 10.9, 11, 12, 63, 128, 256, 512, 1024} {
		if _, ok := slices.BinarySearch(o, a); !ok {
			t.Errorf("order %v missing from the grid", a)
		}
	}
	if o[0] <= 1 {
		t.Errorf("smallest order %v: the conversions need α > 1", o[0])
	}
	o[0] = 99 // a copy: the grid itself must not change
	if Orders()[0] == 99 {
		t.Error("Orders returned the grid itself, not a copy")
	}
}

// TestConversions pins the two RDP → (ε, δ) conversions on constructed
// values: for pure ε0-DP (R_α = ε0 at every order) the classical
// conversion gives ε0 + log(1/δ)/(α−1) at the largest order, and the
// improved one is smaller at every order by log(α)/(α−1) − log(1−1/α).
func TestConversions(t *testing.T) {
	t.Parallel()
	orders := []float64{2, 4, 32}
	rdp := []float64{1.1, 1.1, 1.1}
	delta := 1e-5
	eps, order := epsilonClassic(orders, rdp, delta)
	if want := 1.1 + math.Log(1/delta)/31; order != 32 || math.Abs(eps-want) > 1e-12 {
		t.Errorf("classical: ε %v at α=%v, want %v at 32", eps, order, want)
	}
	eps, order = epsilonBalle(orders, rdp, delta)
	// dp_accounting's test of the same conversion: 1.32783806176.
	if want := 1.1 - (math.Log(delta)+math.Log(32))/31 + math.Log(31.0/32); order != 32 || math.Abs(eps-want) > 1e-12 || math.Abs(eps-1.32783806176) > 1e-10 {
		t.Errorf("Balle et al.: ε %v at α=%v, want %v at 32", eps, order, want)
	}
	// The total-variation shortcut: a tiny divergence gives ε = 0.
	if eps, _ := epsilonBalle(orders, []float64{1e-12, 1e-12, 1e-12}, 1e-5); eps != 0 {
		t.Errorf("R = 1e-12 at δ = 1e-5: ε %v, want 0 (δ² ≥ 1 − e^(−R))", eps)
	}
	// Infinite divergences are skipped; all infinite is ε = +Inf.
	if eps, order := epsilonBalle(orders, []float64{math.Inf(1), 1, math.Inf(1)}, 1e-5); order != 4 || math.IsInf(eps, 0) {
		t.Errorf("one finite order: ε %v at α=%v, want finite at 4", eps, order)
	}
	if eps, _ := epsilonBalle(orders, []float64{math.Inf(1), math.Inf(1), math.Inf(1)}, 1e-5); !math.IsInf(eps, 1) {
		t.Errorf("all infinite: ε %v, want +Inf", eps)
	}
}
