package dpaccount

import (
	"fmt"
	"math"
)

// DefaultPRVEpsError is the PRV accountant's default ε error: Opacus's
// PRVAccountant.get_epsilon default, so timings and figures compare.
const DefaultPRVEpsError = 0.01

// MaxPRVPoints bounds the PRV grid (and so its memory: about 16 bytes a
// point, twice for heterogeneous events). Questions that need more points
// fail with ErrOutOfRange; a larger ε error needs fewer.
const MaxPRVPoints = 1 << 22

// PRVOptions are the PRV accountant's error parameters (Gopi, Lee,
// Wutschitz 2021): the reported bounds satisfy
// EpsilonLow ≤ ε(δ) ≤ EpsilonHigh with EpsilonHigh = ε̂(δ − DeltaError) +
// EpsError and EpsilonLow = ε̂(δ + DeltaError) − EpsError, ε̂ being the
// estimate from the discretized composition.
type PRVOptions struct {
	// EpsError is the ε error; 0 means DefaultPRVEpsError. The grid's mesh
	// is EpsError / sqrt(n/2 · log(12/DeltaError)) for n steps (their
	// Theorem 5.5), so the cost grows as sqrt(n)/EpsError.
	EpsError float64
	// DeltaError is the δ error, below δ; 0 means δ/1000 (the Opacus and
	// prv_accountant default).
	DeltaError float64
}

// EpsilonPRV is Epsilon(PRV, events, delta) with explicit error
// parameters.
func EpsilonPRV(events []Event, delta float64, opts PRVOptions) (Result, error) {
	if err := validate(events, delta); err != nil {
		return Result{}, err
	}
	epsErr, deltaErr := opts.EpsError, opts.DeltaError
	if epsErr == 0 {
		epsErr = DefaultPRVEpsError
	}
	if deltaErr == 0 {
		deltaErr = delta / 1000
	}
	if !(epsErr > 0) || math.IsInf(epsErr, 0) {
		return Result{}, fmt.Errorf("%w: PRV eps error %v: want a finite value > 0", ErrInvalid, opts.EpsError)
	}
	if !(deltaErr > 0 && deltaErr < delta) {
		return Result{}, fmt.Errorf("%w: PRV delta error %v: want 0 < δ error < δ = %v", ErrInvalid, opts.DeltaError, delta)
	}
	r := Result{Accountant: PRV, Delta: delta, EpsError: epsErr, DeltaError: deltaErr, Steps: totalSteps(events)}
	merged := mergeEvents(events)
	if len(merged) == 0 {
		return r, nil // nothing ran, nothing spent
	}
	g, err := newPRVGrid(merged, epsErr, deltaErr)
	if err != nil {
		return Result{}, err
	}
	if float64(g.n)*0x1p-52 > delta-deltaErr {
		return Result{}, fmt.Errorf("%w: PRV: δ − δ error = %v is below the float64 resolution of a %d-point grid; use a larger δ or RDP", ErrOutOfRange, delta-deltaErr, g.n)
	}
	targets := [3]float64{delta - deltaErr, delta, delta + deltaErr}
	epsRem, epsAdd := g.epsilons(merged, targets, false)
	// The mechanism is (ε, δ)-DP under add/remove adjacency when both
	// directions are: the larger ε of the two at each δ.
	high := max(epsRem[0], epsAdd[0]) + epsErr
	est := max(epsRem[1], epsAdd[1])
	low := max(epsRem[2], epsAdd[2]) - epsErr
	r.Epsilon = max(est, 0)
	r.EpsilonHigh = max(high, r.Epsilon)
	r.EpsilonLow = min(max(low, 0), r.Epsilon)
	return r, nil
}

// prvGrid is the discretization of the composition: n points spaced h,
// the composed loss at index k being offset + (k − n/2)·h for the
// direction's offset.
type prvGrid struct {
	n     int
	h     float64
	steps float64 // total steps, as a float (for the centre per step)
	// centre is the grid's centre for the whole composition; each step's
	// grid is centred at centre/steps, so that n steps land on it.
	centre float64
	// theta is the probability mass below which a single step's far tail
	// is dropped (δ error / (1000·steps), negligible against δ error).
	theta float64
}

// newPRVGrid chooses the mesh from the error parameters and the range from
// RDP tail bounds (Gopi et al. Remark 5.6, with both tails bounded
// separately so the window is no wider than the composition needs): the
// composed privacy loss exceeds tHi with probability at most δerr/8 and
// lies below −tLo with probability at most δerr/8, in either direction;
// one step's loss leaves [−sLo, sHi] with probability at most
// δerr/(8·steps). One unit of margin is added on each side, and the point
// count is rounded up to a power of two (which only widens the window).
func newPRVGrid(events []Event, epsErr, deltaErr float64) (*prvGrid, error) {
	steps := 0.0
	for _, e := range events {
		steps += float64(e.Steps)
	}
	h := epsErr / math.Sqrt(steps/2*math.Log(12/deltaErr))
	// Each event's per-step RDP curve, and the composition's.
	perStep := make([][]float64, len(events))
	total := make([]float64, len(rdpOrders))
	for i, e := range events {
		perStep[i] = make([]float64, len(rdpOrders))
		for k, a := range rdpOrders {
			perStep[i][k] = rdpSampledGaussian(e.SampleRate, e.NoiseMultiplier, a)
			total[k] += float64(e.Steps) * perStep[i][k]
		}
	}
	const margin = 1.0
	tau := deltaErr / 8
	tHi, _ := epsilonClassic(rdpOrders, total, tau)
	tLo := lowerTail(rdpOrders, total, tau)
	lo, hi := -tLo-margin, tHi+margin
	centre := (lo + hi) / 2
	half := (hi - lo) / 2
	tau1 := deltaErr / (8 * steps)
	c1 := centre / steps
	for _, one := range perStep {
		sHi, _ := epsilonClassic(rdpOrders, one, tau1)
		sLo := lowerTail(rdpOrders, one, tau1)
		half = max(half, sHi+margin-c1, sLo+margin+c1)
	}
	points := 2 * half / h
	if math.IsNaN(points) || points > MaxPRVPoints {
		return nil, fmt.Errorf("%w: PRV: the composition needs %.3g grid points, above the limit %d; raise the eps error or use RDP", ErrOutOfRange, points, MaxPRVPoints)
	}
	n := 1024
	for float64(n) < points {
		n <<= 1
	}
	return &prvGrid{n: n, h: h, steps: steps, centre: centre, theta: deltaErr / (1000 * steps)}, nil
}

// lowerTail returns t with P(loss ≤ −t) ≤ tau for a privacy loss whose RDP
// curve is rdp: by Markov's inequality on exp(−λ·loss), whose mean is
// exp((λ−1)·D_λ) of the reverse pair, and D_λ(reverse) ≤ R_λ for the
// sampled Gaussian (Mironov et al. 2019), P ≤ exp((λ−1)R_λ − λt).
func lowerTail(orders, rdp []float64, tau float64) float64 {
	t := math.Inf(1)
	logInvTau := -math.Log(tau)
	for k, a := range orders {
		if r := rdp[k]; !math.IsInf(r, 1) && !math.IsNaN(r) {
			t = min(t, ((a-1)*r+logInvTau)/a)
		}
	}
	return max(t, 0)
}

// epsilons composes the events and returns, for each target δ, the ε of
// the remove and of the add direction from the discretized composition.
// Each event's loss is discretized in both directions, Fourier
// transformed, raised to the event's step count and multiplied into the
// product; the composed loss distribution is that product's inverse
// transform, read circularly (the tail bounds of newPRVGrid make the
// wrapped mass negligible). Both real sequences travel in one complex
// transform: remove in the real part, add in the imaginary part.
//
// The inverse transform is usually not computed: after many steps the
// product's spectrum has few bins above 1e-300, and δ(ε) is a linear
// functional of the distribution, which sparsePLD evaluates from those
// bins directly. dense forces the inverse transform (for tests).
func (g *prvGrid) epsilons(events []Event, targets [3]float64, dense bool) (rem, add [3]float64) {
	work := make([]complex128, g.n)
	var acc []complex128 // the product so far, in the same packed form
	var shiftRem, shiftAdd float64
	for i, e := range events {
		if i > 0 {
			clear(work)
		}
		sr, sa := g.discretize(e, work)
		shiftRem += float64(e.Steps) * sr
		shiftAdd += float64(e.Steps) * sa
		fftForward(work)
		raisePacked(work, e.Steps)
		if len(events) > 1 {
			if acc == nil {
				acc = make([]complex128, g.n)
				copy(acc, work)
			} else {
				multiplyPacked(acc, work)
			}
		}
	}
	if acc != nil {
		work = acc
	}
	// The sum of all steps, each on the grid centred at centre/steps,
	// sits at index k + (steps−1)·n/2 (mod n) of the circular result.
	rot := 0
	if totalParity(events) == 0 {
		rot = g.n / 2
	}
	offRem, offAdd := g.centre+shiftRem, g.centre+shiftAdd
	if !dense {
		limit := int(float64(g.n) * (0.5*math.Log2(float64(g.n)) + 4) / 3000)
		if sr, sa, ok := sparseSpectra(work, limit); ok {
			pr := sparsePLD{n: g.n, h: g.h, offset: offRem, rot: rot, bins: sr}
			pa := sparsePLD{n: g.n, h: g.h, offset: offAdd, rot: rot, bins: sa}
			return pr.epsilons(targets), pa.epsilons(targets)
		}
	}
	fftInverse(work)
	return epsilonFromPLD(work, false, rot, offRem, g.h, targets),
		epsilonFromPLD(work, true, rot, offAdd, g.h, targets)
}

// forEachPair calls f for each pair of positions (p, pm) holding bins k
// and n−k of a bit-reversed spectrum of length n (see pairPartner), once
// per pair, p ≤ pm.
func forEachPair(n int, f func(p, pm int)) {
	f(0, 0)
	if n > 1 {
		f(1, 1)
	}
	for b := 2; b < n; b <<= 1 {
		for p := b; p < b+b/2; p++ {
			f(p, 3*b-1-p)
		}
	}
}

// totalParity returns the parity of the total step count.
func totalParity(events []Event) int {
	p := 0
	for _, e := range events {
		p ^= e.Steps & 1
	}
	return p
}

// raisePacked replaces the packed transform Z = X + iY of two real
// sequences x (real part) and y (imaginary part), in bit-reversed order,
// with the packed transform of their steps-fold self-convolutions,
// X^steps + i·Y^steps.
func raisePacked(z []complex128, steps int) {
	// |X|^steps < 1e-300 counts as 0: the transform of a probability mass
	// function has modulus ≤ 1, so whatever it multiplies stays negligible.
	cut := math.Exp(-2 * 690.0 / float64(steps)) // on |X|²
	forEachPair(len(z), func(p, pm int) {
		x, y := unpack(z[p], z[pm])
		x, y = powCut(x, steps, cut), powCut(y, steps, cut)
		z[p], z[pm] = repack(x, y)
	})
}

// multiplyPacked sets acc to the packed transform of the convolutions of
// acc's and z's sequences, pairwise.
func multiplyPacked(acc, z []complex128) {
	forEachPair(len(acc), func(p, pm int) {
		ax, ay := unpack(acc[p], acc[pm])
		zx, zy := unpack(z[p], z[pm])
		acc[p], acc[pm] = repack(ax*zx, ay*zy)
	})
}

// repack returns bins k and n−k of the packed transform X + iY given
// X[k] and Y[k] (X and Y being Hermitian: X[n−k] = conj(X[k])).
func repack(x, y complex128) (zk, zm complex128) {
	zk = complex(real(x)-imag(y), imag(x)+real(y))  // x + i·y
	zm = complex(real(x)+imag(y), -imag(x)+real(y)) // conj(x) + i·conj(y)
	return zk, zm
}

// unpack separates bin k of a packed transform into the transforms of
// its real and imaginary sequences, given bins k and n−k:
// X[k] = (Z[k] + conj(Z[n−k]))/2, Y[k] = (Z[k] − conj(Z[n−k]))/(2i).
func unpack(zk, zm complex128) (x, y complex128) {
	x = complex((real(zk)+real(zm))/2, (imag(zk)-imag(zm))/2)
	y = complex((imag(zk)+imag(zm))/2, (real(zm)-real(zk))/2)
	return x, y
}

// powCut returns z^p by repeated squaring, or 0 when |z|² < cut (then
// |z|^p is below 1e-300).
func powCut(z complex128, p int, cut float64) complex128 {
	if real(z)*real(z)+imag(z)*imag(z) < cut {
		return 0
	}
	r := complex(1, 0)
	for p > 0 {
		if p&1 == 1 {
			r *= z
		}
		p >>= 1
		if p > 0 {
			z *= z
		}
	}
	return r
}

// discretize writes one step of e's privacy loss into w: the remove
// direction's probability mass function in the real parts, the add
// direction's in the imaginary parts, on the per-step grid of cells of
// width h centred at centre/steps + (j − n/2)·h. It returns each
// direction's mean correction: the shift that makes the discrete mean
// equal the continuous one, which the error analysis of Gopi et al.
// assumes (their cell-centred discretization).
func (g *prvGrid) discretize(e Event, w []complex128) (shiftRem, shiftAdd float64) {
	q, sigma := e.SampleRate, e.NoiseMultiplier
	t0 := g.centre/g.steps - float64(g.n/2)*g.h // centre of cell 0
	boundary := func(j int) float64 { return t0 + (float64(j)-0.5)*g.h }

	// Remove: loss = log(1−q+q·e^u), u = (2ω−1)/(2σ²), ω ~ (1−q)N(0,σ²) + qN(1,σ²).
	meanRem := g.fill(w, false, func(t float64) cdfValue { return removeCDF(q, sigma, t) }, boundary)
	// Add: loss = −log(1−q+q·e^u), ω ~ N(0,σ²).
	meanAdd := g.fill(w, true, func(t float64) cdfValue { return addCDF(q, sigma, t) }, boundary)
	muRem, muAdd := lossMeans(q, sigma)
	return muRem - meanRem, muAdd - meanAdd
}

// cdfValue is a distribution function's value at a loss t: F(t) for
// t < 0 and 1 − F(t) from 0 up, each computed directly from normal tails,
// so that the small probabilities of either tail keep their precision.
type cdfValue struct {
	v        float64
	survival bool // v is 1 − F(t); otherwise v is F(t)
}

// cellMass returns F(b) − F(a) for a < b.
func cellMass(a, b cdfValue) float64 {
	var m float64
	switch {
	case !a.survival && !b.survival:
		m = b.v - a.v
	case a.survival && b.survival:
		m = a.v - b.v
	case !a.survival && b.survival:
		m = 1 - a.v - b.v
	default: // a ≥ 0 > b cannot happen for a < b; be safe
		m = (1 - a.v) - b.v
	}
	return max(m, 0)
}

// fill writes the cell masses of one direction into w (imaginary parts
// when imagPart) and returns the discrete mean of the masses written. The
// distribution function is evaluated only over the cells that carry more
// than theta of tail mass, found by bisection: everything else is 0.
func (g *prvGrid) fill(w []complex128, imagPart bool, cdf func(float64) cdfValue, boundary func(int) float64) float64 {
	n := g.n
	// First boundary whose F exceeds theta, and last whose 1−F does.
	first := searchBoundary(0, n, func(j int) bool {
		c := cdf(boundary(j))
		return c.survival || c.v > g.theta
	})
	last := searchBoundary(0, n, func(j int) bool {
		c := cdf(boundary(j))
		return c.survival && c.v <= g.theta
	})
	// Cells first−1 … last−1 lie between boundaries first−1 and last.
	lo, hi := max(first-1, 0), min(last, n)
	// Mass outside the grid is dropped like the far tails: newPRVGrid made
	// it at most δ error/(8·steps).
	var mass, moment float64
	prev := cdf(boundary(lo))
	t0 := boundary(0) + g.h/2
	for j := lo; j < hi; j++ {
		next := cdf(boundary(j + 1))
		m := cellMass(prev, next)
		prev = next
		if m == 0 {
			continue
		}
		if imagPart {
			w[j] = complex(real(w[j]), m)
		} else {
			w[j] = complex(m, imag(w[j]))
		}
		mass += m
		moment += m * (t0 + float64(j)*g.h)
	}
	if mass == 0 {
		return 0
	}
	return moment / mass
}

// searchBoundary returns the smallest j in [lo, hi] with pred(j) true,
// pred being monotone (false … false true … true); hi if none.
func searchBoundary(lo, hi int, pred func(int) bool) int {
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if pred(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// uThreshold returns log((e^t − (1−q))/q): the value of u at which the
// remove-direction loss log(1−q+q·e^u) equals t; −Inf when t ≤ log(1−q).
func uThreshold(q, t float64) float64 {
	if q == 1 {
		return t
	}
	d := math.Expm1(t) + q
	if d <= 0 {
		return math.Inf(-1)
	}
	return math.Log(d / q)
}

// removeCDF is the distribution function of one step's remove-direction
// loss: P(ω ≤ σ²·u*(t) + 1/2) for ω ~ (1−q)N(0,σ²) + qN(1,σ²).
func removeCDF(q, sigma, t float64) cdfValue {
	u := uThreshold(q, t)
	if math.IsInf(u, -1) {
		return cdfValue{v: 0}
	}
	w := sigma*u + 0.5/sigma // (σ²u + 1/2)/σ
	w1 := w - 1/sigma
	if t < 0 {
		return cdfValue{v: (1-q)*normalCDF(w) + q*normalCDF(w1)}
	}
	return cdfValue{v: (1-q)*normalSF(w) + q*normalSF(w1), survival: true}
}

// addCDF is the distribution function of one step's add-direction loss,
// −log(1−q+q·e^u) for ω ~ N(0,σ²): it is ≤ t when u ≥ u*(−t).
func addCDF(q, sigma, t float64) cdfValue {
	u := uThreshold(q, -t)
	if math.IsInf(u, -1) {
		return cdfValue{v: 0, survival: true} // t ≥ −log(1−q): certain
	}
	w := sigma*u + 0.5/sigma
	if t < 0 {
		return cdfValue{v: normalSF(w)}
	}
	return cdfValue{v: normalCDF(w), survival: true}
}

// lossMeans returns the means of one step's loss in each direction,
// KL(Q‖P) and KL(P‖Q) for Q = (1−q)N(0,σ²)+qN(1,σ²), P = N(0,σ²), by
// Gauss–Legendre quadrature over the Gaussian variable.
func lossMeans(q, sigma float64) (remove, add float64) {
	// g(ω) = log(1−q+q·e^u): the remove loss; the add loss is −g.
	lq, l1q := math.Log(q), math.Log1p(-q)
	g := func(omega float64) float64 {
		u := (2*omega - 1) / (2 * sigma * sigma)
		if v := q * math.Expm1(u); v > -0.5 && u < 30 {
			return math.Log1p(v) // precise near u = 0
		}
		return logAddExp(l1q, lq+u) // q·e^u large, or 1−q+q·e^u near 0 (q near 1)
	}
	e0 := gaussianMean(func(x float64) float64 { return g(sigma * x) }, sigma)
	e1 := gaussianMean(func(x float64) float64 { return g(sigma*x + 1) }, sigma)
	return (1-q)*e0 + q*e1, -e0
}

// gaussianMean returns E[f(X)] for X ~ N(0,1), f smooth on the scale
// `scale` (panels are no wider than a quarter of it, nor narrower than
// 1e-4 — a σ that small never gets a PRV grid anyway), by composite
// 8-point Gauss–Legendre quadrature over [−38, 38] (the density is below
// 1e-313 outside).
func gaussianMean(f func(float64) float64, scale float64) float64 {
	const lim = 38.0
	width := max(min(0.25, scale/4), 1e-4)
	panels := int(math.Ceil(2 * lim / width))
	width = 2 * lim / float64(panels)
	var s float64
	for p := range panels {
		a := -lim + float64(p)*width
		mid, rad := a+width/2, width/2
		for i, x := range glNodes {
			t := mid + rad*x
			s += glWeights[i] * rad * math.Exp(-t*t/2) * f(t)
		}
	}
	return s / math.Sqrt(2*math.Pi)
}

// glNodes and glWeights are the 8-point Gauss–Legendre rule on [−1, 1],
// computed by Newton's method on the Legendre polynomial P8.
var glNodes, glWeights = gaussLegendre(8)

func gaussLegendre(n int) (nodes, weights []float64) {
	nodes, weights = make([]float64, n), make([]float64, n)
	for i := range n {
		x := math.Cos(math.Pi * (float64(i) + 0.75) / (float64(n) + 0.5))
		var dp float64
		for range 100 {
			p0, p1 := 1.0, x
			for k := 2; k <= n; k++ {
				p0, p1 = p1, ((2*float64(k)-1)*x*p1-(float64(k)-1)*p0)/float64(k)
			}
			dp = float64(n) * (x*p1 - p0) / (x*x - 1)
			dx := p1 / dp
			x -= dx
			if math.Abs(dx) < 1e-16 {
				break
			}
		}
		// Recompute the derivative at the converged node for the weight.
		p0, p1 := 1.0, x
		for k := 2; k <= n; k++ {
			p0, p1 = p1, ((2*float64(k)-1)*x*p1-(float64(k)-1)*p0)/float64(k)
		}
		dp = float64(n) * (x*p1 - p0) / (x*x - 1)
		nodes[i] = x
		weights[i] = 2 / ((1 - x*x) * dp * dp)
	}
	return nodes, weights
}

// epsilonFromPLD returns, for each target δ, the smallest ε with
// δ(ε) = Σ_k p_k·(1 − e^(ε − t_k))⁺ ≤ target, where p_k is the real (or,
// with imagPart, imaginary) part of z[(k+rot) mod n] and t_k = offset +
// (k − n/2)·h. It scans down from the top of the grid keeping the suffix
// sums Σ p_i and Σ p_i·e^(t_k − t_i) (the latter rescaled at each step, so
// nothing overflows); between grid points δ(ε) = d1 − e^(ε−t_k)·d2 is
// solved exactly. A target met everywhere on the grid gives its bottom
// point.
func epsilonFromPLD(z []complex128, imagPart bool, rot int, offset, h float64, targets [3]float64) [3]float64 {
	n := len(z)
	var eps [3]float64
	var found [3]bool
	decay := math.Exp(-h)
	t := func(k int) float64 { return offset + float64(k-n/2)*h }
	var d1, d2 float64 // over indices > k: Σ p, Σ p·e^(t_k − t_i)
	for k := n - 1; k >= 0; k-- {
		delta := d1 - d2 // δ(t_k)
		done := true
		for i, target := range targets {
			if found[i] {
				continue
			}
			if delta > target {
				// ε in (t_k, t_{k+1}]: d1 − e^(ε−t_k)·d2 = target.
				eps[i] = t(k) + math.Log((d1-target)/d2)
				found[i] = true
				continue
			}
			done = false
		}
		if done {
			return eps
		}
		v := z[(k+rot)&(n-1)]
		p := real(v)
		if imagPart {
			p = imag(v)
		}
		d2 = decay * (d2 + p)
		d1 += p
	}
	for i := range targets {
		if !found[i] {
			eps[i] = t(0)
		}
	}
	return eps
}

// spectralBin is one nonzero bin f ∈ [0, n/2] of a composed loss
// distribution's transform, with the weight of its term in the inverse
// transform: p_k = Σ_bins Re(coef·e^(2πif(k+rot)/n)).
type spectralBin struct {
	f    int
	coef complex128 // c_f·P_f/n, c_f = 2 but 1 for f = 0 and n/2
}

// sparseSpectra lists the nonzero bins of both directions of a packed,
// bit-reversed transform, or reports false when there are more than
// limit.
func sparseSpectra(z []complex128, limit int) (rem, add []spectralBin, ok bool) {
	n := len(z)
	ok = true
	forEachPair(n, func(p, pm int) {
		if !ok || (z[p] == 0 && z[pm] == 0) {
			return
		}
		x, y := unpack(z[p], z[pm])
		f := bitReverse(p, n)
		if f > n/2 {
			f = n - f
			x, y = complex(real(x), -imag(x)), complex(real(y), -imag(y))
		}
		c := 2 / float64(n)
		if f == 0 || f == n/2 {
			c = 1 / float64(n)
		}
		if x != 0 {
			rem = append(rem, spectralBin{f, x * complex(c, 0)})
		}
		if y != 0 {
			add = append(add, spectralBin{f, y * complex(c, 0)})
		}
		ok = len(rem)+len(add) <= limit
	})
	return rem, add, ok
}

// sparsePLD is a composed loss distribution on the grid t_k = offset +
// (k − n/2)·h, k < n, given by the few nonzero bins of its transform. It
// evaluates the suffix sums that δ(ε) needs in closed form, O(bins) each,
// instead of the O(n log n) inverse transform:
//
//	A(k) = Σ_{i>k} p_i,   B(k) = Σ_{i>k} p_i·e^(−h(i−k)),   δ(t_k) = A(k) − B(k),
//
// each bin contributing a geometric series. Angles are reduced modulo 2π
// in integers and every "e^(iφ) − 1" is formed from half-angle sines, so
// no precision is lost for small angles or small h.
type sparsePLD struct {
	n      int
	h      float64
	offset float64
	rot    int
	bins   []spectralBin
}

// epsilons returns, for each target δ, the smallest ε with δ(ε) ≤ target:
// a bisection over k for the grid interval where δ crosses the target,
// then the exact solution within it, as epsilonFromPLD does.
func (s *sparsePLD) epsilons(targets [3]float64) [3]float64 {
	var eps [3]float64
	sums := s.prepare()
	t := func(k int) float64 { return s.offset + float64(k-s.n/2)*s.h }
	for i, target := range targets {
		a0, b0 := sums(0)
		if a0-b0 <= target {
			eps[i] = t(0)
			continue
		}
		// δ(t_lo) > target ≥ δ(t_hi); δ(t_{n−1}) = 0.
		lo, hi := 0, s.n-1
		a, b := a0, b0
		for hi-lo > 1 {
			mid := int(uint(lo+hi) >> 1)
			am, bm := sums(mid)
			if am-bm > target {
				lo, a, b = mid, am, bm
			} else {
				hi = mid
			}
		}
		eps[i] = t(lo) + math.Log((a-target)/b)
	}
	return eps
}

// prepare precomputes the per-bin denominators and returns the function
// computing (A(k), B(k)).
func (s *sparsePLD) prepare() func(k int) (float64, float64) {
	n, h := s.n, s.h
	type binTerm struct {
		idx      int        // f
		coef     complex128 // weight, with the rotation's sign folded in
		invD1    complex128 // 1/(1 − e^(iθ)), θ = 2πf/n
		invD2    complex128 // e^(−h)/(1 − e^(iθ−h))
		constant bool       // f = 0
	}
	terms := make([]binTerm, len(s.bins))
	emh := math.Expm1(-h)
	for i, b := range s.bins {
		bt := binTerm{idx: b.f, coef: b.coef, constant: b.f == 0}
		if s.rot != 0 && b.f%2 == 1 {
			bt.coef = -bt.coef // e^(iπf) for a rotation by n/2
		}
		if !bt.constant {
			sn, cs := math.Sincos(math.Pi * float64(b.f) / float64(n)) // half of θ
			sinT, oneMinusCos := 2*sn*cs, 2*sn*sn
			bt.invD1 = 1 / complex(oneMinusCos, -sinT)
			// 1 − e^(−h)·e^(iθ) = −expm1(−h)·cos θ + (1 − cos θ) − i·e^(−h)·sin θ.
			eh := 1 + emh
			d2 := complex(-emh*(1-oneMinusCos)+oneMinusCos, -eh*sinT)
			bt.invD2 = complex(eh, 0) / d2
		}
		terms[i] = bt
	}
	expm1h := math.Expm1(h)
	return func(k int) (float64, float64) {
		m := n - 1 - k // number of grid points above k
		em := math.Expm1(-h * float64(m))
		ea := 1 + em
		var a, b float64
		for _, bt := range terms {
			if bt.constant {
				c := real(bt.coef)
				a += c * float64(m)
				b += c * -em / expm1h
				continue
			}
			// E = e^(iθ(k+1)) from the half angle, reduced mod n.
			j := (bt.idx * (k + 1)) % n
			sn, cs := math.Sincos(math.Pi * float64(j) / float64(n))
			twoS2, sin := 2*sn*sn, 2*sn*cs
			eMinus1 := complex(-twoS2, sin)
			e := complex(1-twoS2, sin)
			// Σ_{i=k+1}^{n−1} e^(iθi) = (E − 1)/(1 − e^(iθ)).
			a += real(bt.coef * eMinus1 * bt.invD1)
			// Σ_{i=k+1}^{n−1} e^(iθi)·e^(−h(i−k)) = E·e^(−h)·(1 − e^(−hm)·conj(E))/(1 − e^(iθ−h)).
			tail := complex(-em+twoS2*ea, sin*ea)
			b += real(bt.coef * e * tail * bt.invD2)
		}
		return a, b
	}
}
