package dpaccount

import "math"

// maxMomentOrder is the largest moment order λ the moments accountant
// uses: Abadi et al.'s implementation computed the log moments for
// λ = 1, …, 32 ("moment_orders=32"), and figures made with it depend on
// that range.
const maxMomentOrder = 32

// momentsEpsilon is the moments accountant of Abadi et al. 2016 (Deep
// learning with differential privacy, Theorem 2): with the log moment
// α(λ) of one step composed additively over steps,
//
//	ε = min_λ (α_total(λ) + log(1/δ)) / λ,   λ = 1, …, 32.
//
// One step's log moment is α(λ) = log E[(μ/μ0)^(λ)] under μ, the larger of
// the two directions, which is log A_(λ+1) = λ·RDP(λ+1) (Mironov et al.
// 2019 show that direction dominates), computed exactly by the integer
// binomial expansion rather than the numerical integration of the
// original implementation. So the moments accountant is the RDP
// accountant restricted to integer orders 2…33 with the classical
// conversion ε = RDP(α) + log(1/δ)/(α−1): it never reports a smaller ε
// than RDP. It returns ε and the optimal λ.
func momentsEpsilon(events []Event, delta float64) (eps, lambda float64) {
	orders := make([]float64, maxMomentOrder)
	for l := range orders {
		orders[l] = float64(l + 2) // Rényi order λ+1
	}
	rdp := rdpCurve(events, orders)
	eps, lambda = math.Inf(1), 0
	logInvDelta := -math.Log(delta)
	for k, a := range orders {
		l := a - 1
		logMoment := l * rdp[k]
		if math.IsInf(logMoment, 1) || math.IsNaN(logMoment) {
			continue
		}
		if e := (logMoment + logInvDelta) / l; e < eps {
			eps, lambda = e, l
		}
	}
	return max(eps, 0), lambda
}
