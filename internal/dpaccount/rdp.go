package dpaccount

import (
	"math"
	"slices"
	"sync"
)

// rdpOrders is the grid of Rényi orders α the RDP accountant minimizes
// over. It is the union of the grids the reference tools use, so that on
// the same RDP values this package never reports a larger ε than they do:
//
//	1.1, 1.2, …, 10.9      Opacus RDPAccountant.DEFAULT_ALPHAS and dp_accounting's DEFAULT_RDP_ORDERS
//	1.25, 1.75, 2.25       TF Privacy's compute_dp_sgd_privacy grid (the rest of its fractional orders are above)
//	11, 12, …, 63          all of them (Opacus starts at 12, dp_accounting at 11, TF Privacy at 5)
//	128, 256, 512, 1024    TF Privacy and dp_accounting (1024 is dp_accounting's), for very small ε
var rdpOrders = func() []float64 {
	var o []float64
	for x := 1; x < 100; x++ {
		o = append(o, 1+float64(x)/10)
	}
	o = append(o, 1.25, 1.75, 2.25)
	for a := 11; a <= 63; a++ {
		o = append(o, float64(a))
	}
	o = append(o, 128, 256, 512, 1024)
	slices.Sort(o)
	return slices.Compact(o)
}()

// Orders returns a copy of the RDP order grid (see the package
// documentation).
func Orders() []float64 { return slices.Clone(rdpOrders) }

// maxFracTerms bounds the fractional-order series. It converges for every
// order above 1 but only polynomially once the erfc factors saturate;
// orders that need more terms are left out of the minimum (their RDP is
// reported as +Inf), which can only make ε larger.
const maxFracTerms = 20000

// logFracTol is log(1e-11), the fractional series' relative tolerance.
var logFracTol = math.Log(1e-11)

// logFactorials[k] = log(k!) for k ≤ 1024, the largest integer order.
var logFactorials = sync.OnceValue(func() []float64 {
	f := make([]float64, 1025)
	for k := range f {
		f[k], _ = math.Lgamma(float64(k) + 1)
	}
	return f
})

// rdpSampledGaussian returns the Rényi divergence of order alpha > 1
// between one step of the Poisson-subsampled Gaussian mechanism and its
// neighbour, D_α((1−q)N(0,σ²) + qN(1,σ²) ‖ N(0,σ²)) = log(A_α)/(α−1)
// (Mironov, Talwar, Zhang 2019). This direction dominates the other
// (their Theorem 5), so it is the RDP of the mechanism under add/remove
// adjacency. The result may be +Inf.
func rdpSampledGaussian(q, sigma, alpha float64) float64 {
	if q == 1 {
		return alpha / (2 * sigma * sigma)
	}
	if math.IsInf(1/(2*sigma*sigma), 1) {
		return math.Inf(1) // σ < 1e-154: no finite guarantee at any order
	}
	var logA float64
	if alpha == math.Trunc(alpha) && alpha <= 1024 {
		logA = logAInt(q, sigma, int(alpha))
	} else {
		logA = logAFrac(q, sigma, alpha)
	}
	if math.IsNaN(logA) || logA < 0 {
		// A_α ≥ 1 always; a negative value is rounding of a divergence
		// that is 0 to working precision.
		return 0
	}
	return logA / (alpha - 1)
}

// logAInt returns log(A_α) for an integer order α ≥ 2 and 0 < q < 1 from
// the binomial expansion (Mironov et al. 2019, Sec. 3.1)
//
//	A_α = Σ_{i=0..α} C(α,i) q^i (1−q)^(α−i) exp((i²−i)/(2σ²)).
//
// Since Σ C(α,i) q^i (1−q)^(α−i) = 1, it sums A_α − 1 instead, whose terms
// (with expm1 in place of exp, so i = 0, 1 vanish) are all positive: no
// cancellation, and full relative precision even when A_α − 1 is tiny.
func logAInt(q, sigma float64, alpha int) float64 {
	lf := logFactorials()
	lq, l1q := math.Log(q), math.Log1p(-q)
	c := 1 / (2 * sigma * sigma)
	n := alpha - 1
	var buf [64]float64
	terms := buf[:0]
	if n > len(buf) {
		terms = make([]float64, 0, n)
	}
	maxT := math.Inf(-1)
	for i := 2; i <= alpha; i++ {
		fi := float64(i)
		x := (fi*fi - fi) * c
		var lx float64
		if x > 40 {
			lx = x // log(e^x − 1) = x to within e^-40
		} else {
			lx = logExpm1(x)
		}
		t := lf[alpha] - lf[i] - lf[alpha-i] + fi*lq + float64(alpha-i)*l1q + lx
		terms = append(terms, t)
		if t > maxT {
			maxT = t
		}
	}
	if math.IsInf(maxT, 0) || math.IsNaN(maxT) {
		return maxT
	}
	var s float64
	for _, t := range terms {
		s += math.Exp(t - maxT)
	}
	logAm1 := maxT + math.Log(s)
	return logAddExp(0, logAm1) // log(1 + (A−1))
}

// logAFrac returns log(A_α) for a fractional order α > 1 and 0 < q < 1 from
// the two series of Mironov et al. 2019, Sec. 3.3: the integral defining
// A_α is split at z0 = σ² log(1/q − 1) + 1/2, where q·exp((2z−1)/(2σ²))
// equals 1−q, and each side is expanded binomially in the smaller of the
// two mixture terms; the Gaussian integrals over each half-line are erfc
// values. Coefficients C(α,i) change sign for i > α, so the partial sums
// are kept as signed logarithms.
func logAFrac(q, sigma, alpha float64) float64 {
	lq, l1q := math.Log(q), math.Log1p(-q)
	c := 1 / (2 * sigma * sigma)
	z0 := sigma*sigma*(l1q-lq) + 0.5
	inv := 1 / (math.Sqrt2 * sigma)
	const logHalf = -math.Ln2
	a0, a1 := zeroLog, zeroLog
	lastS0, lastS1 := math.Inf(1), math.Inf(1)
	logCoef, neg := 0.0, false // log|C(α,i)| and its sign, for i = 0
	for i := range maxFracTerms {
		fi := float64(i)
		j := alpha - fi
		s0 := logCoef + fi*lq + j*l1q + (fi*fi-fi)*c + logHalf + logErfc((fi-z0)*inv)
		s1 := logCoef + j*lq + fi*l1q + (j*j-j)*c + logHalf + logErfc((z0-j)*inv)
		a0 = a0.add(signedLog{neg, s0})
		a1 = a1.add(signedLog{neg, s1})
		// Past i = α the coefficients alternate in sign, so once the terms
		// decrease, what is left of each series is smaller than its next
		// term: stop when that is below 1e-11 of A_α − 1 (which is what
		// the RDP is made of) or 2e-16 of A_α, whichever is larger.
		total := a0.add(a1)
		if fi > alpha && s0 < lastS0 && s1 < lastS1 && !total.neg {
			tol := max(logExpm1(total.log)+logFracTol, total.log-36)
			if math.Max(s0, s1) < tol {
				return total.log
			}
		}
		lastS0, lastS1 = s0, s1
		// C(α,i+1) = C(α,i)·(α−i)/(i+1).
		logCoef += math.Log(math.Abs(j)) - math.Log(fi+1)
		if j < 0 {
			neg = !neg
		}
	}
	return math.Inf(1)
}

// rdpCurve returns the total RDP of events at each order: the sum over
// events of Steps × the per-step RDP (RDP composes additively).
func rdpCurve(events []Event, orders []float64) []float64 {
	total := make([]float64, len(orders))
	for _, e := range mergeEvents(events) {
		for k, a := range orders {
			total[k] += float64(e.Steps) * rdpSampledGaussian(e.SampleRate, e.NoiseMultiplier, a)
		}
	}
	return total
}

// epsilonBalle converts RDP to (ε, δ)-DP with the conversion of Balle et
// al. 2020 (Hypothesis testing interpretations and Rényi differential
// privacy, Theorem 21), as Opacus's get_privacy_spent does:
//
//	ε = min_α  R_α − (log δ + log α)/(α−1) + log((α−1)/α),
//
// together with the bound that needs no order at all: if δ² ≥ 1 − e^(−R_α)
// for some α then the total variation distance is at most δ
// (Bretagnolle–Huber, KL ≤ R_α) and ε = 0, as dp_accounting does. It
// returns ε ≥ 0 and the minimizing order (0 when every R_α is +Inf, with
// ε = +Inf).
func epsilonBalle(orders, rdp []float64, delta float64) (eps, order float64) {
	eps = math.Inf(1)
	logDelta := math.Log(delta)
	for k, a := range orders {
		r := rdp[k]
		if math.IsInf(r, 1) || math.IsNaN(r) {
			continue
		}
		var e float64
		if delta*delta+math.Expm1(-r) >= 0 {
			e = 0
		} else {
			e = r - (logDelta+math.Log(a))/(a-1) + math.Log1p(-1/a)
		}
		if e < eps {
			eps, order = e, a
		}
	}
	return max(eps, 0), order
}

// epsilonClassic converts RDP to (ε, δ)-DP with the original conversion
// of Mironov 2017 (Rényi differential privacy, Proposition 3),
//
//	ε = min_α  R_α + log(1/δ)/(α−1),
//
// which TF Privacy and Opacus used before 2021 and which several
// published figures were computed with. The tests use it to reproduce
// those figures; the PRV accountant uses it as a tail bound (with δ = τ it
// is a t with P(privacy loss > t) ≤ τ, by Markov's inequality on
// e^((α−1)·loss)).
func epsilonClassic(orders, rdp []float64, delta float64) (eps, order float64) {
	eps = math.Inf(1)
	logInvDelta := -math.Log(delta)
	for k, a := range orders {
		r := rdp[k]
		if math.IsInf(r, 1) || math.IsNaN(r) {
			continue
		}
		if e := r + logInvDelta/(a-1); e < eps {
			eps, order = e, a
		}
	}
	return max(eps, 0), order
}
