// Package dpaccount computes the privacy spent by DP-SGD: the ε for which
// a sequence of Poisson-subsampled Gaussian mechanisms is (ε, δ)-DP, by
// three accountants, and the inverse, the noise multiplier that reaches a
// target ε. The trainer (budgets, dp_cert.json) and `tgctl dp` share it;
// it imports only the standard library.
//
// # Conventions
//
// A step includes each record independently with probability q (Poisson
// sampling), sums the records' contributions clipped to L2 norm C, and
// adds N(0, σ²C²) noise: σ is the noise multiplier. Neighbouring datasets
// differ by adding or removing one record; both directions are accounted.
// An Event is Steps such steps with one (q, σ); a run whose q or σ changes
// is a list of events (composition does not depend on their order).
// Logarithms are natural.
//
// # Guarantees
//
// For valid input (ErrInvalid describes invalid input) every accountant
// returns ε ≥ 0, never NaN, with EpsilonLow ≤ Epsilon ≤ EpsilonHigh, and
// EpsilonHigh is a valid upper bound on the true ε: compare it with a
// budget. RDP and Moments may return +Inf (no finite guarantee, e.g.
// σ < 1e-154) but never fail on valid input; PRV fails with ErrOutOfRange
// when its grid would exceed MaxPRVPoints or δ approaches float64
// resolution. No steps spend ε = 0. All functions are safe for concurrent
// use.
//
// # RDP
//
// Rényi DP of the sampled Gaussian mechanism, Mironov, Talwar, Zhang 2019
// ("Rényi differential privacy of the sampled Gaussian mechanism"):
// R(α) = log(A_α)/(α−1) per step, additive over steps. Integer orders use
// the binomial expansion, summed as A_α − 1 (all terms positive, so it
// keeps its relative precision when q is tiny) in log space with log
// factorials from lgamma; fractional orders use the paper's two series
// split at z0 = σ²·log(1/q − 1) + 1/2 with erfc in log space (asymptotic
// series past 26), kept as signed logarithms because the coefficients
// alternate, and stopped, once alternating and decreasing, at 1e-11 of
// A_α − 1 (or 2e-16 of A_α); an order that needs more than 20000 terms is
// dropped (+Inf), which can only raise ε. q = 1 is α/(2σ²). The tests
// check this against direct numerical integration of the divergence
// (agreement to about 1e-10).
//
// (ε, δ) follows from the conversion of Balle et al. 2020 ("Hypothesis
// testing interpretations and Rényi differential privacy", Theorem 21),
// the one current Opacus uses,
//
//	ε = min_α  R(α) − (log δ + log α)/(α−1) + log((α−1)/α),
//
// and ε = 0 when δ² ≥ 1 − e^(−R(α)) for some α (the total variation bound
// dp_accounting also applies). The orders are the union of the reference
// tools' grids (Orders): 1.1, 1.2, …, 10.9 (Opacus, dp_accounting), 1.25,
// 1.75, 2.25 (TF Privacy), 11, …, 63, and 128, 256, 512, 1024; on the same
// divergences ε is never above what Opacus or TF Privacy report. The
// optimal order is reported; at 1.1 or 1024 the grid limited the result.
//
// Figures published before 2021 (TF Privacy's tutorial ε = 3.01, Opacus's
// MNIST README) used the classical conversion ε = R(α) + log(1/δ)/(α−1)
// (Mironov 2017), which is larger; the tests reproduce them with it.
//
// # PRV
//
// Numerical composition of privacy random variables, Gopi, Lee, Wutschitz
// 2021 ("Numerical composition of differential privacy"). Each event's
// privacy loss, log(Q/P) under Q and log(P/Q) under P for
// Q = (1−q)N(0,σ²) + qN(1,σ²) and P = N(0,σ²) (the remove and add
// directions), is discretized on a grid of mesh
// h = ε_err / sqrt(n/2 · log(12/δ_err)) for n steps (their Theorem 5.5):
// exact cell masses from the loss's distribution function (normal tails
// via erfc on the side where they are small), then a shift that restores
// the continuous mean (their cell-centred discretization; the mean, a KL
// divergence, by Gauss–Legendre quadrature). The grid spans the composed
// loss: RDP tail bounds (Markov's inequality on e^(±λ·loss), as in their
// Remark 5.6 but for each tail separately) put at most δ_err/8 of the
// composition and δ_err/(8n) of one step outside it, plus one unit of
// margin; single-step tails below δ_err/(1000n) are not evaluated. Events
// are composed by FFT (the package's own radix-2² transform): the transform
// of each event's masses is raised to its step count and the events'
// transforms multiplied. Both directions travel in one complex transform.
// When few frequency bins survive (after many steps the spectrum is
// concentrated), δ(ε) = Σ p_k(1 − e^(ε−t_k))⁺ is evaluated from those bins
// in closed form instead of inverting the transform.
//
// With ε̂(·) the discretized composition's ε at a given δ, the result is
// Epsilon = ε̂(δ), EpsilonHigh = ε̂(δ − δ_err) + ε_err and EpsilonLow =
// ε̂(δ + δ_err) − ε_err, each the larger of the two directions. Defaults
// are Opacus's: ε_err = 0.01, δ_err = δ/1000 (PRVOptions). On the
// benchmark of issue 7 (q = 256/60000, σ = 1.1, 14,062 steps, δ = 1e-5)
// the grid has 2^19 points and the call takes about 20 ms of CPU; RDP
// about 0.5 ms.
//
// # Moments
//
// The moments accountant of Abadi et al. 2016 ("Deep learning with
// differential privacy", Theorem 2), for comparison with figures made
// with it: the log moments α(λ) = λ·R(λ+1) of the same mechanism, for
// λ = 1, …, 32 as in its implementation, exact here (their code
// integrated numerically), and the classical conversion
// ε = min_λ (α(λ) + log(1/δ))/λ. It is RDP restricted to integer orders
// with the older conversion, so never below RDP. Order reports λ.
//
// # The inverse
//
// NoiseMultiplier brackets σ by stepping from a start (1, or for PRV the
// RDP answer, by 1.25) and bisects on log σ until the bracket is within
// NoiseRelTolerance (1e-6; PRV 1e-3): the σ returned meets the target
// with EpsilonHigh, and σ/(1+tol) does not. σ is searched in
// [MinNoiseMultiplier, MaxNoiseMultiplier].
package dpaccount
